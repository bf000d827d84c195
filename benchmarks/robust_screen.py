"""Screen of head-level means against acquisition shifts for the abnormal-vs-baseline member
(``vgg16b4_baseline_mass_calc``), out of fold over the training women (issue 24, item 3).

Research use only — not a medical device.

Every variant is a pooled-feature design (which VGG16 blocks, avg / avgmax pooling) and a fixed,
weight-free per-patch transform of the pooled features (``raw``; ``sqrt``: element-wise square
root, features are post-ReLU; ``l2``: each pooled block divided by its own L2 norm, so a global
change of a block's activation strength cancels; ``softsign``: ``f / (f + m)`` per feature, ``m``
its median over the fold's training rows (``softsign4`` / ``softsign16``: 4 / 16 x the median,
less saturation; ``--feature-squash K`` of the pooled head, :class:`mammo_core.training.pooled.SquashScaler`),
a compression like ``sqrt`` that a bundle graph can
hold as a Rescaling and a built-in softsign activation), followed by the member's own head
(standardisation + L2 logistic regression, 3 classes, balanced, 2 training views per patch, seed
0) and its own out-of-fold choice of ``C`` and TTA (mean of the abnormal-vs-baseline and
mass-vs-calcification AUCs, the members' 5 folds grouped by woman, seed 0).

Input-level variants (``--front``): a fixed, weight-free change of the patch BEFORE the backbone
that could be one built-in layer in the bundle graph: ``std`` (per-patch standardisation
``0.5 + 0.18 (x - mean) / std``, a LayerNormalization without centre/scale then a Rescaling:
contrast changes cancel exactly), ``lowpass`` (Gaussian blur sigma 1.5 px, a fixed depthwise
convolution: blur and noise move the input less), ``std_lowpass`` (both, blur first). Front
variants are fitted on view 0 and each patch's one other training view only and use no TTA (to
save backbone passes); compare them with the ``--front none`` rows' ``tta none`` figures
(``oof_abnormal_tta_none``). ``--all-views`` runs all 8 dihedral views through the front instead
(cached as ``view<k>``): the same fitting rows and TTA choice as the current design.

``--scale-copies N`` adds N fitting rows per training patch: the patch under a random rescale
(``mammo_core.shifts.random_acquisition(kind="scale")``, log-uniform 0.8-1.25 x, reflect-padded,
seed ``augment_seed(0, j)`` for copy ``j``), in a dihedral view of ``training_views(n, 8, 2 + N)``,
through the front; out-of-fold predictions stay of unchanged patches.

``--pool-crop F`` pools each VGG16 block's feature map over its centre only: ``round(F x side)``
cells cut from every edge (a built-in Cropping2D before the global pooling in a bundle graph),
so a padded or mirrored rim, a film edge or the patch border moves the pooled features less.
Its features (view 0 and one training view, no TTA, like the fronts) are kept under
``runs/front_features/<data key>/<front>-crop<F>/``.

The bench: the identity view of every ``--every``-th pair under each shift of
:mod:`mammo_core.shifts`, predicted by the fold head that did not see its woman (as
``benchmarks/shift_bench.py``). The shifted patches' features are computed once and kept under
``runs/shift_features/<data key>/every<k>/<shift>/`` (float32 .npy, never pickled).

The rule (written before the screen was run): a variant is a candidate to replace the current
design if (1) its out-of-fold abnormal-vs-baseline AUC of the chosen TTA over all training patches
is no more than 0.005 below the current design's, and (2) its worst-shift abnormal-vs-baseline
AUC on the bench is higher than the current design's. Among candidates the one with the highest
worst-shift AUC is taken to the nested out-of-fold check (``benchmarks/nested_oof.py``) before
anything ships. public_test is never read.

    nice -n 10 python benchmarks/robust_screen.py --data data/mias \\
        --weights ../shared/weights/vgg16_imagenet_notop.weights.h5 --every 2 --json runs/robust_screen.json
    python benchmarks/robust_screen.py --markdown runs/robust_screen*.json   # the table of those runs
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mammo_core import io
from mammo_core.datasets.splits import groups_for_arrays
from mammo_core.labels import get_task
from mammo_core.shifts import SHIFT_NAMES, apply_shift, random_acquisition
from mammo_core.training.features import _cached_stack, augment_seed, cached_features, data_key, feature_model
from mammo_core.training.pooled import _fit_lr, task_score, training_views, woman_folds
from mammo_core.tta import dihedral

DESIGNS = {
    "b234_avgmax": ("block2_pool", "block3_pool", "block4_pool"), "b34_avgmax": ("block3_pool", "block4_pool"),
    "b4_avgmax": ("block4_pool",), "b234_avg": ("block2_pool", "block3_pool", "block4_pool"),
    "b34_avg": ("block3_pool", "block4_pool"),
}
TRANSFORMS = ("raw", "sqrt", "l2", "softsign", "softsign4", "softsign16")
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
TASK = "baseline_mass_calc"
FRONTS = ("none", "std", "lowpass", "std_lowpass")
FRONT_BLUR_SIGMA = 1.5


def front(x: np.ndarray, name: str) -> np.ndarray:
    """The input-level variant ``name`` of model inputs ``x`` (N, 150, 150[, 1]) in [0, 1]."""
    from mammo_core.shifts import _blur

    if name == "none":
        return x
    chan = x.ndim == 4
    y = np.asarray(x[..., 0] if chan else x, np.float64)
    if "lowpass" in name:
        y = _blur(y, 0, FRONT_BLUR_SIGMA)
    if name.startswith("std"):
        m = y.mean(axis=(1, 2), keepdims=True)
        sd = y.std(axis=(1, 2), keepdims=True)
        y = 0.5 + 0.18 * (y - m) / np.sqrt(sd ** 2 + 1e-4)
    y = y.astype(np.float32)
    return y[..., None] if chan else y


def crop_feature_model(crop: float):
    """A ``make_model`` for :func:`_cached_stack`: the feature model's VGG16 with every block's
    map cropped by ``round(crop x side)`` cells on each edge before its global avg / max pooling."""
    def make(weights):
        import keras

        base, keys = feature_model(weights)
        outs = []
        for k in keys:
            fmap = base.get_layer(k[4:]).output
            c = round(crop * int(fmap.shape[1]))
            cropped = keras.layers.Cropping2D(c)(fmap) if c else fmap
            pool = keras.layers.GlobalAveragePooling2D if k.startswith("gap_") else keras.layers.GlobalMaxPooling2D
            outs.append(pool()(cropped))
        return keras.Model(base.inputs, outs), keys
    return make


def design(feats: dict[str, np.ndarray], name: str, transform: str) -> np.ndarray:
    blocks = []
    for layer in DESIGNS[name]:
        for kind in (("gap",) if name.endswith("_avg") else ("gap", "gmp")):
            b = np.asarray(feats[f"{kind}_{layer}"], np.float64)
            if transform == "sqrt":
                b = np.sqrt(np.clip(b, 0.0, None))
            elif transform == "l2":
                b = b / np.clip(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12, None)
            blocks.append(b)
    return np.concatenate(blocks, axis=-1)


def abnormal_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y != 0, 1.0 - p[:, 0]))


def mass_calc_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ab = y != 0
    return float(roc_auc_score(y[ab] == 1, p[ab, 1] / np.clip(p[ab, 1] + p[ab, 2], 1e-12, None)))


def markdown(files: list[Path]) -> str:
    """One table of every screened variant in ``files`` (this script's --json outputs)."""
    head = ("front", "design", "transform", "C / TTA", "OOF abnormal", "OOF abnormal, no TTA", "OOF mass vs calc",
            "bench unshifted", "worst shift", "worst-shift AUC")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in files:
        for r in json.loads(Path(f).read_text())["rows"]:
            nt = r.get("oof_abnormal_tta_none")
            lines.append("| " + " | ".join([
                r.get("front", "none"), r["design"],
                r["transform"] + (f" + {r['scale_copies']} scaled" if r.get("scale_copies") else ""),
                f"{r['C']:g} / {r['tta']}",
                f"{r['oof_abnormal']:.4f}", "—" if nt is None else f"{nt:.4f}", f"{r['oof_mass_calc']:.4f}",
                f"{r['bench']['none']['abnormal']:.3f}", r["worst_shift"], f"{r['worst_abnormal']:.3f}"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--markdown":  # the table of earlier runs' JSON files
        print(markdown([Path(f) for f in argv[1:]]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS))
    ap.add_argument("--transforms", nargs="+", default=list(TRANSFORMS))
    ap.add_argument("--front", choices=FRONTS, default="none")
    ap.add_argument("--pool-crop", type=float, default=0.0,
                    help="pool each block's map over its centre: cut round(F x side) cells from every edge")
    ap.add_argument("--all-views", action="store_true",
                    help="--front / --pool-crop: all 8 dihedral views through it (the fitting rows and TTA of "
                         "the current design; 4x the backbone passes)")
    ap.add_argument("--scale-copies", type=int, default=0, choices=range(0, 5),
                    help="extra fitting rows per patch: randomly rescaled copies (0.8-1.25 x)")
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    arrays = io.load_patch_arrays(a.data)
    train = arrays.splits["train"]
    labels = np.asarray(train.labels, np.int64)
    groups = groups_for_arrays(a.data, split="train")
    fold = woman_folds(labels, groups, 5, 0)
    x = io.to_model_input(np.asarray(train.images))
    tensor = a.data / "train_tensor.npy"
    tv = training_views(len(labels), 8, 2, 0)
    key = data_key(tensor, a.weights)
    tag = a.front + (f"-crop{a.pool_crop:g}" if a.pool_crop else "")
    mk = crop_feature_model(a.pool_crop) if a.pool_crop else None
    if a.front == "none" and not a.pool_crop:
        feats = cached_features(x, tensor, "train", a.weights, views=8, log=print)
        ttas: tuple[str, ...] = ("none", "dihedral8")
    elif a.all_views:  # all 8 dihedral views through the front: the same fitting rows and TTA as "none"
        froot = Path("runs") / "front_features" / key / tag
        feats = _cached_stack([(froot / f"view{v}", f"view {v}", lambda v=v: front(dihedral(x, v), a.front))
                               for v in range(8)], len(x), a.weights, 32, print, mk)
        ttas = ("none", "dihedral8")
    else:  # view 0 and each patch's other training view, through the front
        froot = Path("runs") / "front_features" / key / tag
        second = np.stack([dihedral(x[i:i + 1], int(tv[i, 1]))[0] for i in range(len(x))])
        feats = _cached_stack([(froot / "view0", "view 0", lambda: front(x, a.front)),
                               (froot / "train_view", "training view", lambda: front(second, a.front))],
                              len(x), a.weights, 32, print, mk)
        tv = np.tile(np.arange(2), (len(labels), 1))
        ttas = ("none",)
    aug = None
    if a.scale_copies:
        dv = training_views(len(labels), 8, 2 + a.scale_copies, 0)[:, 2:]

        def scaled(j: int) -> np.ndarray:
            xa, _ = random_acquisition(x, augment_seed(0, j), "scale")
            return front(np.stack([dihedral(xa[i:i + 1], int(dv[i, j]))[0] for i in range(len(xa))]), a.front)

        aroot = Path("runs") / "front_features" / key / tag
        aug = _cached_stack([(aroot / f"scale_c{j}", f"scale copy {j}", lambda j=j: scaled(j))
                             for j in range(a.scale_copies)], len(x), a.weights, 32, print, mk)
    pick = np.flatnonzero((np.arange(len(labels)) // 2) % max(1, a.every) == 0)
    root = Path("runs") / "shift_features" / key / f"every{a.every}" / tag
    shifted = {"none": {k: v[:1, pick] for k, v in feats.items()}}
    for s in SHIFT_NAMES[1:]:
        shifted[s] = _cached_stack([(root / s, s, lambda s=s: front(apply_shift(s, x[pick], 0), a.front))],
                                   len(pick), a.weights, 32, print, mk)
    _, y3 = get_task(TASK).map_labels(labels)  # every label kept (baseline / mass / calc)
    k = int(fold.max()) + 1
    out = []
    for dn in a.designs:
        for tr_name in a.transforms:
            t1 = time.perf_counter()
            soft = tr_name.startswith("softsign")
            kmul = float(tr_name[len("softsign"):] or 1) if soft else 1.0
            F = design(feats, dn, "raw" if soft else tr_name)
            Fa = None if aug is None else design(aug, dn, "raw" if soft else tr_name)
            best = None
            heads = {}
            for c in C_GRID:
                p = {t: np.zeros((len(labels), 3)) for t in ttas}
                heads[c] = []
                for f in range(k):
                    trn = np.flatnonzero(fold != f)
                    te = fold == f
                    X = F[tv[trn].ravel(), np.repeat(trn, tv.shape[1])]
                    Y = np.repeat(y3[trn], tv.shape[1])
                    if Fa is not None:  # the rescaled copies' rows
                        X = np.concatenate([X, *Fa[:, trn]])
                        Y = np.concatenate([Y, np.tile(y3[trn], len(Fa))])
                    # softsign: the library's feature squash (SquashScaler: fitted on the fold's rows)
                    sc, lr = _fit_lr(X, Y, c, 0, squash=kmul if soft else 0.0)
                    heads[c].append((sc, lr))
                    pv = np.stack([lr.predict_proba(sc.transform(F[v, te])) for v in range(len(F))])
                    p["none"][te] = pv[0]
                    if "dihedral8" in p:
                        p["dihedral8"][te] = pv.mean(0)
                none_ab = abnormal_auc(y3, p["none"])
                for t, pp in p.items():
                    s = task_score(TASK, y3, pp)
                    if best is None or s > best[0]:
                        best = (s, c, t, abnormal_auc(y3, pp), mass_calc_auc(y3, pp), none_ab)
            score, c, t, ab_oof, mc_oof, ab_none = best
            rows = {}
            for s, fs in shifted.items():
                Fs = design(fs, dn, "raw" if soft else tr_name)[0]
                p = np.zeros((len(pick), 3))
                for f in range(k):
                    te = fold[pick] == f
                    sc, lr = heads[c][f]
                    p[te] = lr.predict_proba(sc.transform(Fs[te]))
                rows[s] = {"abnormal": abnormal_auc(y3[pick], p), "mass_calc": mass_calc_auc(y3[pick], p)}
            worst = min((v["abnormal"], s) for s, v in rows.items() if s != "none")
            r = {"front": tag, "design": dn, "transform": tr_name, "scale_copies": a.scale_copies,
                 "views": 8 if (a.all_views or (a.front == "none" and not a.pool_crop)) else 2,
                 "oof_abnormal_tta_none": ab_none,
                 "C": c, "tta": t, "oof_score": score,
                 "oof_abnormal": ab_oof, "oof_mass_calc": mc_oof, "bench": rows,
                 "worst_shift": worst[1], "worst_abnormal": worst[0], "seconds": round(time.perf_counter() - t1, 1)}
            out.append(r)
            print(f"{tag} {dn} {tr_name}: C={c:g} tta={t} OOF abnormal {ab_oof:.3f} (no TTA {ab_none:.3f}) "
                  f"mass/calc {mc_oof:.3f}; bench none "
                  f"{rows['none']['abnormal']:.3f}, worst {worst[1]} {worst[0]:.3f} | "
                  + " ".join(f"{s}={v['abnormal']:.3f}" for s, v in rows.items()), flush=True)
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps({"n_train": len(labels), "n_bench": len(pick), "every": a.every,
                                          "rows": out, "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
