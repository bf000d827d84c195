"""Deciding the training augmentation on the acquisition-shift bench (issue 24 item 3): one
pooled member searched twice over the SAME folds and features, once as it ships (no training
augmentation) and once with ``--train-augment acquisition``, and both scored under every shift of
:mod:`mammo_core.shifts`, in one run.

For each configuration: :func:`mammo_core.training.pooled.select` (the very search the member's
training runs: same candidates, ``C`` grid, TTA options, training views, seed, the members' own
folds of the training women, :func:`~mammo_core.training.pooled.woman_folds`) chooses pooling,
``C`` and TTA out of fold; then, as :mod:`mammo_core.training.shift_eval` does for the bundles,
the chosen head is refitted per fold on the other folds' women (their training views, augmented
or not) and predicts the held-back fold's patches under each shift, identity view only (no
TTA, so every row, the unshifted one included, compares like with like). The backbone features
of the shifted patches are computed once and shared by both configurations (the backbone does
not change; only the head's training rows do); they are cached beside the other features under
``shift-<name>-<hash of the shifted patches>``.

Each row also carries, for the rule's question, the paired 95 % interval of the augmented minus
the current AUC (:func:`mammo_core.training.shift_eval.paired_delta_ci`: a cluster bootstrap
over the bench's women, both configurations scored on the same resampled patches); the decision
carries the same interval for each configuration's worst-shift minus unshifted gap: how far a
difference is from the bench's noise.
The rule itself reads the point estimates. Research use only - not a medical device.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core import io
from mammo_core.datasets.splits import groups_for_arrays
from mammo_core.ensemble_fit import TASK_AUCS, task_aucs, task_scores
from mammo_core.labels import get_task
from mammo_core.shifts import SHIFT_NAMES, apply_shift
from mammo_core.training.features import _save, cache_root, cached_features, data_key, feature_model
from mammo_core.training.nested import MemberSearch
from mammo_core.training.pooled import (
    Candidate,
    _design,
    _fit_lr,
    _rows,
    augmented_features,
    check_augment,
    select,
    training_views,
    woman_folds,
)
from mammo_core.training.shift_eval import paired_delta_ci, shifted_view0

log = logging.getLogger(__name__)

VIEWS = 8


def rule_question(task: str) -> str:
    """The AUC the keep-or-drop rule reads for a member of ``task``."""
    return {"baseline_mass_calc": "auc_abnormal_vs_baseline", "mass_calc": "auc_mass_vs_calcification",
            "benign_malignant": "auc_benign_vs_malignant"}[task]


def decide(rows: Sequence[dict[str, Any]], question: str, tolerance: float = 0.005) -> dict[str, Any]:
    """The rule written before the bench was run: keep the augmentation when the worst-shift AUC
    of ``question`` rises and the unshifted one drops by no more than ``tolerance``.
    ``rows``: ``{"shift", "current": {question: auc}, "augmented": {...}}``."""
    none = next(r for r in rows if r["shift"] == "none")
    shifted = [r for r in rows if r["shift"] != "none"]
    worst = {c: min(shifted, key=lambda r: r[c][question]) for c in ("current", "augmented")}
    out: dict[str, Any] = {"question": question, "tolerance": tolerance,
           "unshifted": {c: none[c][question] for c in ("current", "augmented")},
           "worst": {c: {"shift": worst[c]["shift"], "auc": worst[c][c][question]} for c in ("current", "augmented")}}
    rises = out["worst"]["augmented"]["auc"] > out["worst"]["current"]["auc"]
    holds = out["unshifted"]["augmented"] >= out["unshifted"]["current"] - tolerance
    out.update(worst_rises=bool(rises), unshifted_holds=bool(holds), keep=bool(rises and holds))
    return out


def compare_member(search: MemberSearch, data: Path, weights: Path, augment_views: int = 1,
                   shifts: Sequence[str] = SHIFT_NAMES, folds: int = 5, seed: int = 0, every: int = 1,
                   cache: Path | None = None, progress: Callable[[str], None] | None = None,
                   shifted: dict[str, dict[str, np.ndarray]] | None = None,
                   augment_train_views: int | None = None, augment: str = "acquisition",
                   augmented_squash: float | None = None) -> dict[str, Any]:
    """The bench of one member, current vs augmented (module docstring). ``shifted``: a dict the
    caller may pass to share the shifted features between members (filled here).
    ``augment_train_views``: training views per patch of the augmented configuration (default the
    member's own; more views than the member's keep more of them unchanged). ``augment``: the
    augmentation kind (:data:`mammo_core.shifts.AUGMENT_FAMILIES`); ``augmented_squash``: the
    augmented configuration's ``--feature-squash`` (default the member's own)."""
    say = progress or (lambda m: log.info("%s", m))
    t0 = time.perf_counter()
    aug_tv = int(augment_train_views or search.train_views)
    check_augment(augment, augment_views, aug_tv)
    aug_sq = search.feature_squash if augmented_squash is None else float(augmented_squash)
    arrays = io.load_patch_arrays(data)
    train = arrays.splits["train"]
    labels = np.asarray(train.labels, np.int64)
    groups = groups_for_arrays(data, split="train")
    x = io.to_model_input(np.asarray(train.images))
    fold = woman_folds(labels, groups, folds, seed)
    k = int(fold.max()) + 1
    feats = cached_features(x, train.image_file, "train", weights, views=VIEWS, cache=cache)
    task = get_task(search.task)
    keep, y_task = task.map_labels(labels)
    y_full = np.full(len(labels), -1, np.int64)
    y_full[keep] = y_task
    cands = [Candidate.parse(c) for c in search.candidates]
    configs: dict[str, Any] = {}
    heads: dict[str, list] = {}
    for name, kind, n_aug, n_tv, sq in (("current", "none", 0, search.train_views, search.feature_squash),
                                        ("augmented", augment, int(augment_views), aug_tv, aug_sq)):
        t1 = time.perf_counter()
        tv = training_views(len(labels), VIEWS, n_tv, seed)
        aug = augmented_features(kind, n_aug, x, train.image_file, "train", weights, tv, seed, cache)
        _, (cand, c, t), oof, _ = select(search.task, feats, labels, fold, cands, search.c_grid,
                                         search.tta_options, seed, tv, aug_feats=aug, squash=sq)
        F = _design(feats, cand)
        Fa = None if aug is None else _design(aug, cand)
        heads[name] = [cand]
        for f in range(k):
            tr = np.flatnonzero(keep & (fold != f))
            heads[name].append(_fit_lr(_rows(F, tr, tv, Fa), np.repeat(y_full[tr], tv.shape[1]), c, seed,
                                       squash=sq))
        configs[name] = {"train_augment": kind, "augment_views": n_aug, "train_views": n_tv, "feature_squash": sq,
                         "chosen": {"pool": cand.label, "C": float(c), "tta": t},
                         "oof_chosen_tta": task_aucs(labels, task_scores(search.task, oof)),
                         "seconds": round(time.perf_counter() - t1, 1)}
        say(f"[augment] {search.name} {name}: chose {cand.label}, C={c:g}, tta={t}; OOF "
            + ", ".join(f"{q} {v:.3f}" for q, v in configs[name]["oof_chosen_tta"].items() if np.isfinite(v)))
    pick = np.flatnonzero((np.arange(len(labels)) // 2) % max(1, int(every)) == 0)
    lab, fp, gp = labels[pick], fold[pick], groups[pick]
    question = rule_question(search.task)
    preds: dict[str, dict[str, np.ndarray]] = {}
    shifted = {} if shifted is None else shifted
    model = keys = None
    rows = []
    for sname in shifts:
        if sname not in shifted:
            t1 = time.perf_counter()
            if sname == "none":
                shifted[sname] = {kk: v[:1, pick] for kk, v in feats.items()}
            else:
                xs = apply_shift(sname, x[pick], seed)
                sdir = (cache_root(cache) / data_key(train.image_file, weights) / "train"
                        / f"shift-{sname}-{hashlib.sha256(xs.tobytes()).hexdigest()[:16]}")
                files = {kk: sdir / f"{kk}.npy" for kk in feats}
                if all(fp.is_file() for fp in files.values()):
                    shifted[sname] = {kk: np.load(fp, allow_pickle=False) for kk, fp in files.items()}
                else:
                    if model is None:
                        model, keys = feature_model(weights)
                    shifted[sname] = shifted_view0(model, keys, xs)
                    for kk, fpath in files.items():
                        _save(fpath, shifted[sname][kk])
            say(f"[augment] {sname}: features of {len(pick)} patches in {time.perf_counter() - t1:.0f} s")
        row: dict[str, Any] = {"shift": sname}
        for name in ("current", "augmented"):
            cand = heads[name][0]
            F = _design(shifted[sname], cand)[0]
            p = np.zeros((len(pick), task.n_classes))
            for f in range(k):
                te = fp == f
                scaler, lr = heads[name][1 + f]
                p[te] = lr.predict_proba(scaler.transform(F[te]))
            row[name] = {q: v for q, v in task_aucs(lab, task_scores(search.task, p)).items() if np.isfinite(v)}
            preds.setdefault(sname, {})[name] = p
        row["delta_ci95"] = {question: paired_delta_ci(lab, search.task, question, preds[sname]["current"],
                                                       preds[sname]["augmented"], gp, seed=seed)}
        rows.append(row)
        say(f"[augment] {search.name} {sname}: " + "; ".join(
            f"{n} " + ", ".join(f"{q[4:]} {v:.3f}" for q, v in row[n].items()) for n in ("current", "augmented")))
    decision = decide(rows, question)
    if "none" in preds:
        decision["gap_ci95"] = {c: paired_delta_ci(lab, search.task, question, preds["none"][c],
                                                   preds[decision["worst"][c]["shift"]][c], gp, seed=seed)
                                for c in ("current", "augmented")}  # worst shift minus unshifted
    return {"member": search.name, "task": search.task, "search": vars(search), "data": str(data),
            "n": len(pick), "n_train": len(labels), "every": int(every), "folds": k, "seed": seed,
            "configs": configs, "rows": rows, "decision": decision,
            "seconds": round(time.perf_counter() - t0, 1)}


def table_markdown(result: dict[str, Any]) -> str:
    """One member's bench: per shift, each question's AUC, current vs augmented."""
    qs = [q for q in TASK_AUCS if q in result["rows"][0]["current"]]
    names = {"auc_abnormal_vs_baseline": "abnormal vs baseline", "auc_mass_vs_calcification": "mass vs calc",
             "auc_benign_vs_malignant": "benign vs malignant"}
    head = ["shift", *(f"{names[q]} {c}" for q in qs for c in ("current", "augmented"))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lines.append("| " + " | ".join([r["shift"], *(f"{r[c][q]:.3f}" for q in qs
                                                       for c in ("current", "augmented"))]) + " |")
    return "\n".join(lines)
