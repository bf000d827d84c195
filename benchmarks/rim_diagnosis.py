"""What the ``scale_0.8`` row measures: the abnormal-vs-baseline member's current design scored on
the screen's bench patches shrunk 0.8 x (a 15-pixel reflect-padded rim), on the SAME rim without
any rescale (the central 120 x 120 kept, the rim mirrored), shrunk 0.9 x (an 8-pixel rim) and
magnified 1.25 x (no rim). Diagnosis only (issue 24; docs/robust_inputs.md), no decision.

The design: ``b234_avgmax`` raw pooled features, C = 10 (the member's out-of-fold choice), 2
training views per patch, 3-class balanced L2 logistic regression per fold of the members' 5 folds
of the training women (seed 0), as ``benchmarks/robust_screen.py``; the bench is that script's
(identity view of every 2nd pair: 583 patches), its features cached under
``runs/shift_features/<data key>/every2/none/``. public_test is never read.

    python benchmarks/rim_diagnosis.py --data data/mias --weights ../shared/weights/vgg16_imagenet_notop.weights.h5

Research use only — not a medical device.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mammo_core import io
from mammo_core.atomic import atomic_write_text
from mammo_core.datasets.splits import groups_for_arrays
from mammo_core.labels import get_task
from mammo_core.shifts import _rescale, apply_shift
from mammo_core.training.features import _cached_stack, cached_features, data_key
from mammo_core.training.pooled import _fit_lr, training_views, woman_folds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robust_screen import abnormal_auc, design

RIM = 15  # the rim scale_0.8 pads on a 150 x 150 patch: (150 - 120) / 2


def mirrored_rim(x: np.ndarray, rim: int = RIM) -> np.ndarray:
    """``x`` (N, H, W[, 1]) with its outer ``rim`` pixels replaced by the reflection of the centre
    (numpy ``reflect``), as ``scale_0.8`` pads a shrunk patch, but without rescaling."""
    chan = x.ndim == 4
    y = x[..., 0] if chan else x
    out = np.stack([np.pad(p[rim:-rim, rim:-rim], rim, mode="reflect") for p in y]).astype(np.float32)
    return out[..., None] if chan else out


INPUTS = {
    "unchanged": None,
    "scale_0.8": lambda x: apply_shift("scale_0.8", x, 0),
    "rim_only": mirrored_rim,
    "scale_0.9": lambda x: _rescale(0.9)(x[..., 0], 0)[..., None],
    "scale_1.25": lambda x: apply_shift("scale_1.25", x, 0),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    arrays = io.load_patch_arrays(a.data)
    train = arrays.splits["train"]
    labels = np.asarray(train.labels, np.int64)
    fold = woman_folds(labels, groups_for_arrays(a.data, split="train"), 5, 0)
    x = io.to_model_input(np.asarray(train.images))
    tensor = a.data / "train_tensor.npy"
    feats = cached_features(x, tensor, "train", a.weights, views=8, log=print)
    tv = training_views(len(labels), 8, 2, 0)
    pick = np.flatnonzero((np.arange(len(labels)) // 2) % 2 == 0)
    root = Path("runs") / "shift_features" / data_key(tensor, a.weights) / "every2" / "none"
    _, y3 = get_task("baseline_mass_calc").map_labels(labels)
    F = design(feats, "b234_avgmax", "raw")
    heads = []
    for f in range(int(fold.max()) + 1):
        trn = np.flatnonzero(fold != f)
        heads.append(_fit_lr(F[tv[trn].ravel(), np.repeat(trn, 2)], np.repeat(y3[trn], 2), 10.0, 0))
    out = {}
    for name, fn in INPUTS.items():
        if fn is None:
            fs = {k: v[:1, pick] for k, v in feats.items()}
        else:
            # scale_0.8 / scale_1.25: robust_screen's folders (the same inputs); the others their own
            folder = root / (name if name in ("scale_0.8", "scale_1.25") else f"diag_{name}")
            fs = _cached_stack([(folder, name, lambda fn=fn: fn(x[pick]))], len(pick), a.weights, 32, print)
        Fs = design(fs, "b234_avgmax", "raw")[0]
        p = np.zeros((len(pick), 3))
        for f, (sc, lr) in enumerate(heads):
            te = fold[pick] == f
            p[te] = lr.predict_proba(sc.transform(Fs[te]))
        out[name] = abnormal_auc(y3[pick], p)
        print(f"{name}: abnormal vs baseline AUC {out[name]:.3f}", flush=True)
    if a.json is not None:
        atomic_write_text(a.json, json.dumps({"n_bench": len(pick), "auc_abnormal_vs_baseline": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
