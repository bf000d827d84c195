"""The acquisition-shift evaluation: the bundled pooled members and their ensemble scored OUT OF
FOLD on the training patches under each shift of :mod:`mammo_core.shifts`, with the OOD warning
rate of :mod:`mammo_core.ood` per shift, and per shift the ensemble's change from the unshifted
row with its paired 95 % interval over women. Used by ``benchmarks/shift_bench.py``; any other bench
(e.g. one comparing old and new bundles) calls :func:`evaluate_shifts` the same way.

Out of fold, grouped by woman: for each fold of the members' own ``oof.npz`` fold assignment, each
member's head (standardisation + logistic regression, the card's chosen pooling and ``C``, its
training views of the UNSHIFTED cached features, with its training augmentation and feature
squash if its card records them, exactly as :mod:`mammo_core.training.pooled` fits it) is refitted on the other
folds' women and predicts the held-back fold's SHIFTED patches.
Every row, the unshifted one included, uses the identity view only (no test-time augmentation:
8 views under 10 shifts would cost 80 backbone passes), so rows compare like with like; the
unshifted row is therefore not the members' published OOF figure. The OOD feature distance of a
held-back fold is measured to a reference fitted on the other folds' unshifted features, against
the ensemble's stored threshold; the acquisition check's limits of a held-back fold come from the
other folds' unshifted patches at the stored score threshold. Each shifted row's change from the
unshifted one (``delta_ci95``) is a cluster bootstrap over the scored patches' women (1000
resamples), the shifted and unshifted predictions of the same resampled patches compared.

Research use only — not a medical device.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core import io, ood
from mammo_core.bundle import read_card
from mammo_core.datasets.splits import groups_for_arrays
from mammo_core.ensemble import combine, read_ensemble
from mammo_core.ensemble.store import read_reference
from mammo_core.ensemble_fit import TASK_AUCS, task_aucs, task_scores
from mammo_core.errors import MammoError
from mammo_core.labels import get_task
from mammo_core.metrics import bootstrap_ci
from mammo_core.shifts import SHIFT_NAMES, apply_shift
from mammo_core.training.features import cached_features, feature_model
from mammo_core.training.pooled import (
    Candidate,
    _design,
    _fit_lr,
    _rows,
    augmented_features,
    load_oof,
    training_views,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Member:
    name: str
    task: str
    subset: str | None
    cand: Candidate
    c: float
    train_views: int
    seed: int
    augment: str = "none"
    augment_views: int = 0
    squash: float = 0.0


def _member(bundle_dir: Path, spec_member) -> _Member:
    proto: Any = read_card(bundle_dir).card.training.protocol  # the typed card's hyper-parameter record
    chosen: Any = proto["chosen"]
    aug: Any = proto.get("train_augment", "none")
    sq: Any = proto.get("feature_squash", "none")
    return _Member(spec_member.name, spec_member.task, spec_member.subset,
                   Candidate.parse(str(chosen["pool"])), float(chosen["C"]),
                   int(proto.get("train_views", 8)), int(proto.get("seed", 0)),
                   "none" if aug in (None, "none") else str(aug["kind"]),
                   0 if aug in (None, "none") else int(aug["views"]),
                   0.0 if sq in (None, "none") else float(sq["k"]))


def shifted_view0(model, keys, x: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """``{key: (1, N, d)}`` pooled features of the identity view of ``x``."""
    parts: list[list[np.ndarray]] = [[] for _ in keys]
    for i in range(0, len(x), batch_size):
        for j, r in enumerate(model(x[i:i + batch_size], training=False)):
            parts[j].append(np.asarray(r, np.float32))
    return {k: np.concatenate(p)[None] for k, p in zip(keys, parts)}


def evaluate_shifts(data: Path, models_dir: Path, oof_root: Path, weights: Path,
                    shifts: Sequence[str] = SHIFT_NAMES, cache: Path | None = None, seed: int = 0,
                    progress: Callable[[str], None] | None = None, every: int = 1) -> dict[str, Any]:
    """Per shift: the ensemble's three task AUCs out of fold, each member's AUC on its own
    question, and the OOD warning rates (background, feature distance, either). ``every`` > 1
    scores the patches of every ``every``-th pair only (the heads are still fitted on all the
    other folds' patches), to save backbone passes."""
    say = progress or (lambda m: log.info("%s", m))
    t0 = time.perf_counter()
    arrays = io.load_patch_arrays(data)
    train = arrays.splits["train"]
    labels = np.asarray(train.labels, dtype=np.int64)
    x = io.to_model_input(np.asarray(train.images))
    info, spec = read_ensemble(models_dir / "ensemble")
    members = [_member(models_dir / m.name, m) for m in spec.members]
    fold = None
    for m in members:
        z = load_oof(oof_root / m.name)
        if not np.array_equal(z["labels"], labels):
            raise MammoError(f"{m.name}: out-of-fold predictions were made on other data", oof_root / m.name)
        if fold is None:
            fold = np.asarray(z["fold"])
        elif not np.array_equal(fold, z["fold"]):
            raise MammoError(f"{m.name}: other folds than the first member", oof_root / m.name)
    k = int(fold.max()) + 1
    say(f"unshifted features of {len(x)} training patches (cache)")
    feats = cached_features(x, data / "train_tensor.npy", "train", weights, views=8, cache=cache)
    # each member's fold heads on the UNSHIFTED training views of the other folds
    heads: dict[str, list] = {}
    for m in members:
        keep, y_task = get_task(m.task).map_labels(labels)
        y_full = np.full(len(labels), -1, np.int64)
        y_full[keep] = y_task
        F = _design(feats, m.cand)
        tv = training_views(len(labels), F.shape[0], m.train_views, m.seed)
        aug = augmented_features(m.augment, m.augment_views, x, data / "train_tensor.npy", "train", weights, tv,
                                 m.seed, cache)
        Fa = None if aug is None else _design(aug, m.cand)
        heads[m.name] = []
        for f in range(k):
            tr = np.flatnonzero(keep & (fold != f))
            heads[m.name].append(_fit_lr(_rows(F, tr, tv, Fa), np.repeat(y_full[tr], tv.shape[1]), m.c, m.seed,
                                         squash=m.squash))
    # OOD: each fold's reference from the other folds' unshifted identity-view features
    ospec = spec.ood
    fm = None if ospec is None or ospec.feature_member is None else \
        next(m for m in members if m.name == ospec.feature_member)
    refs = None
    if fm is not None:
        F0 = _design(feats, fm.cand)[0]
        refs = [ood.fit_reference(F0[fold != f], ospec.components) for f in range(k)]  # all patches
    limit = ood.BACKGROUND_LIMIT if ospec is None else ospec.background_limit
    # the acquisition check (c): each fold's limits from the other folds' unshifted patches, at
    # the threshold stored in the ensemble's reference (None: a reference without check (c))
    acq_limits = None
    if ospec is not None and ospec.acquisition:
        stored = read_reference(info, spec)
        if stored is not None and stored.acquisition is not None:
            s0 = ood.acquisition_stats(x)
            acq_limits = [ood.fit_acquisition(s0[fold != f], stored.acquisition.threshold) for f in range(k)]
    model, keys = feature_model(weights)
    # every ``every``-th PAIR (a baseline sits at the even index before its lesion): both kinds kept
    pick = np.flatnonzero((np.arange(len(labels)) // 2) % max(1, int(every)) == 0)
    y_all, fold_all = labels, fold
    labels, fold = labels[pick], fold[pick]
    women = groups_for_arrays(data, split="train")[pick]
    unshifted: np.ndarray | None = None
    rows = []
    for name in shifts:
        t1 = time.perf_counter()
        xs = x[pick] if name == "none" else apply_shift(name, x[pick], seed)
        fs = (shifted_view0(model, keys, xs) if name != "none"
              else {kk: v[:1, pick] for kk, v in feats.items()})
        probs = {}
        row: dict[str, Any] = {"shift": name}
        for m in members:
            F = _design(fs, m.cand)[0]
            p = np.zeros((len(labels), get_task(m.task).n_classes))
            for f in range(k):
                te = fold == f
                scaler, lr = heads[m.name][f]
                p[te] = lr.predict_proba(scaler.transform(F[te]))
            probs[m.name] = p
            own = task_aucs(labels, task_scores(m.task, p, m.subset))
            row[m.name] = {q: v for q, v in own.items() if np.isfinite(v)}
        res = combine(spec, probs)
        row.update(task_aucs(labels, task_scores("five_class", res.probabilities)))
        if name == "none":
            unshifted = res.probabilities
        elif unshifted is not None:
            row["delta_ci95"] = shift_delta_ci(labels, unshifted, res.probabilities, women, seed=seed)
        bg = ood.background_share(xs)
        row["ood_background"] = float((bg > limit).mean())
        warned = bg > limit
        if refs is not None:
            F = _design(fs, fm.cand)[0]
            d = np.empty(len(labels))
            for f in range(k):
                te = fold == f
                d[te] = refs[f].distance(F[te])
            row["ood_feature"] = float((d > ospec.threshold).mean())
            warned = warned | (d > ospec.threshold)
        if acq_limits is not None:
            st = ood.acquisition_stats(xs)
            a = np.zeros(len(labels), bool)
            for f in range(k):
                te = fold == f
                a[te] = acq_limits[f].warned(st[te])
            row["ood_acquisition"] = float(a.mean())
            warned = warned | a
        row["ood_any"] = float(warned.mean())
        row["seconds"] = round(time.perf_counter() - t1, 1)
        rows.append(row)
        say(f"{name}: " + ", ".join(f"{q} {row[q]:.3f}" for q in TASK_AUCS) + f", OOD {row['ood_any']:.3f}")
    false = _false_warnings(arrays, x, y_all, fold_all, feats, fm, refs, acq_limits, ospec, limit, info, spec,
                            model, keys)
    say("false warnings: " + ", ".join(f"{w} {v['any']:.3f}" for w, v in false.items()))
    return {"data": str(data), "models": str(models_dir), "ensemble_sha256": info.sha256,
            "n": len(labels), "n_train": len(y_all), "every": int(every), "folds": k, "rows": rows,
            "false_warnings": false,
            "seconds": round(time.perf_counter() - t0, 1),
            "method": __doc__.split("\n\n")[1].replace("\n", " ")}


def paired_delta_ci(labels: np.ndarray, task: str, question: str, p_a: np.ndarray, p_b: np.ndarray,
                    groups: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of AUC(``p_b``) - AUC(``p_a``) for ``question`` (a :data:`TASK_AUCS` key) of a
    ``task`` model's probabilities on the same patches: whole women (``groups``) resampled with
    replacement, both scored on each resample (:func:`mammo_core.metrics.bootstrap_ci`)."""
    k = p_a.shape[1]

    def delta(y: np.ndarray, pp: np.ndarray) -> float:
        return (task_aucs(y, task_scores(task, pp[:, k:]))[question]
                - task_aucs(y, task_scores(task, pp[:, :k]))[question])

    return bootstrap_ci(labels, np.hstack([p_a, p_b]), delta, n_boot, seed=seed, groups=groups)


def shift_delta_ci(labels: np.ndarray, p_none: np.ndarray, p_shift: np.ndarray, groups: np.ndarray,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per question (:data:`TASK_AUCS`): :func:`paired_delta_ci` of the ensemble's five-class
    probabilities, shifted minus unshifted."""
    return {q: paired_delta_ci(labels, "five_class", q, p_none, p_shift, groups, n_boot, seed) for q in TASK_AUCS}


def _false_warnings(arrays, x, y_all, fold_all, feats, fm, refs, acq_limits, ospec, limit, info, spec,
                    model, keys) -> dict[str, dict[str, Any]]:
    """The warning rates of UNSHIFTED patches: every training patch out of fold (references and
    limits fitted on the other folds' women) and public_test (the shipped reference, its
    threshold and limits), per check and either."""
    out: dict[str, dict[str, Any]] = {}
    bg = ood.background_share(x) > limit
    oof: dict[str, Any] = {"n": len(x), "background": float(bg.mean())}
    warned = bg.copy()
    if refs is not None:
        F0 = _design(feats, fm.cand)[0]
        d = np.empty(len(x))
        for f, ref in enumerate(refs):
            d[fold_all == f] = ref.distance(F0[fold_all == f])
        oof["feature_distance"] = float((d > ospec.threshold).mean())
        warned |= d > ospec.threshold
    if acq_limits is not None:
        st = ood.acquisition_stats(x)
        a = np.zeros(len(x), bool)
        for f, lim in enumerate(acq_limits):
            a[fold_all == f] = lim.warned(st[fold_all == f])
        oof["acquisition"] = float(a.mean())
        warned |= a
    oof["any"] = float(warned.mean())
    out["out_of_fold"] = oof
    if "public_test" in arrays.splits:
        xt = io.to_model_input(np.asarray(arrays.splits["public_test"].images))
        bg = ood.background_share(xt) > limit
        pt: dict[str, Any] = {"n": len(xt), "background": float(bg.mean())}
        warned = bg.copy()
        stored = read_reference(info, spec)
        if stored is not None and fm is not None:
            d = stored.distance(_design(shifted_view0(model, keys, xt), fm.cand)[0])
            pt["feature_distance"] = float((d > ospec.threshold).mean())
            warned |= d > ospec.threshold
        if stored is not None and stored.acquisition is not None:
            a = stored.acquisition.warned(ood.acquisition_stats(xt))
            pt["acquisition"] = float(a.mean())
            warned |= a
        pt["any"] = float(warned.mean())
        out["public_test"] = pt
    return out


def false_warning_markdown(result: dict[str, Any]) -> str:
    """The unshifted patches' warning rates (false warnings: every one is a mini-MIAS patch)."""
    head = ("patches", "n", "background", "feature distance", "acquisition", "any warning")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = {"out_of_fold": "training, out of fold (grouped by woman)", "public_test": "public_test"}
    for key, r in result["false_warnings"].items():
        lines.append("| " + " | ".join([names[key], str(r["n"]), *(
            "—" if c not in r else f"{100 * r[c]:.1f} %" for c in ("background", "feature_distance",
                                                                   "acquisition", "any"))]) + " |")
    return "\n".join(lines)


def table_markdown(result: dict[str, Any]) -> str:
    """The shift table: ensemble AUC per question per shift, the abnormal-vs-baseline change from
    the unshifted row with its 95 % interval over women (when the result has it), the OOD warning
    rates."""
    gap = any("delta_ci95" in r for r in result["rows"])
    head = ("shift", "abnormal vs baseline", *(("abnormal: shifted minus unshifted (95 % interval over women)",)
                                               if gap else ()),
            "mass vs calcification", "benign vs malignant",
            "OOD warned (any)", "background", "feature distance", "acquisition")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    none = next((r for r in result["rows"] if r["shift"] == "none"), None)

    def num(v):
        return "—" if v is None or not np.isfinite(v) else f"{v:.3f}"

    def change(r) -> str:
        cis = r.get("delta_ci95") or {}
        ci = cis.get(TASK_AUCS[0])
        if none is None or ci is None or not np.isfinite(r[TASK_AUCS[0]]):
            return "—"
        return f"{r[TASK_AUCS[0]] - none[TASK_AUCS[0]]:+.3f} ({ci[0]:+.3f} to {ci[1]:+.3f})"

    for r in result["rows"]:
        lines.append("| " + " | ".join([r["shift"], num(r[TASK_AUCS[0]]), *((change(r),) if gap else ()),
                                         *(num(r[q]) for q in TASK_AUCS[1:]), num(r["ood_any"]),
                                         num(r["ood_background"]), num(r.get("ood_feature")),
                                         num(r.get("ood_acquisition"))]) + " |")
    return "\n".join(lines)
