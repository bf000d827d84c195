"""Task 5 of the study: fit the five-class ensemble of trained member bundles and compare it
with its members on the held-out split.

``fit_and_evaluate(config)`` loads the members, fits (with :func:`mammo_core.ensemble.fit_ensemble`)
a temperature per member, soft-voting weights per task and the disagreement threshold on
VALIDATION predictions, writes the ensemble bundle (card.json + ensemble.json via
:func:`mammo_core.ensemble.write_ensemble`, no pickle) and compares every member with the
ensemble on public_test_*: AUC abnormal-vs-baseline (from 1 - P(baseline)),
mass-vs-calcification and benign-vs-malignant (on abnormal patches), accuracy, ECE, NLL, as a
table in metrics.json and comparison.png.

Out-of-fold fitting (``oof``: one run folder per member holding its ``oof.npz``, see
:mod:`mammo_core.training.pooled`): the temperatures, weights and threshold are fitted on the
members' out-of-fold predictions over EVERY train_* patch (k folds grouped by woman, the same
folds for every member), the preferred way. Otherwise:

Validation patches: the train_* patches that *no member trained on*. Each member's card records
its grouped validation split (training.split: validation_fraction, seed, grouped_by) and the
sha256 of the arrays it used; the split is recomputed with
:func:`mammo_core.datasets.splits.grouped_split` exactly as training did, and patches in any
member's training part are excluded. When a card does not allow that (no split recorded, other
data, smoke members) the fit falls back to a grouped split of train_* and the card says that
disjointness from the members' training data is NOT guaranteed.

TensorFlow and matplotlib are imported lazily, inside the functions that need them.
Research use only - not a medical device.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core import DISCLAIMER, io, ood
from mammo_core.bundle import CARD_FILE, sha256_file
from mammo_core.card import Metrics
from mammo_core.confidence import blind_fields
from mammo_core.datasets.splits import grouped_split, groups_for_arrays
from mammo_core.ensemble import (
    DEFAULT_LEVEL,
    ENSEMBLE_FILE,
    MemberInfo,
    apply_temperature,
    call_five_class,
    combine,
    coverage_table,
    cross_conformal_sets,
    factor_estimates,
    fit_ensemble,
    malignancy,
    write_ensemble,
)
from mammo_core.errors import MammoError
from mammo_core.inference import load_bundle, predict_arrays
from mammo_core.jsonutil import json_safe, write_json
from mammo_core.labels import BASELINE_LABEL, MALIGNANT_LABELS, MASS_LABELS, NAME_TO_LABEL, get_task
from mammo_core.metrics import auc, bootstrap_ci, ci_method, classification_metrics, expected_calibration_error
from mammo_core.plots import ensemble_comparison
from mammo_core.training.pooled import load_oof, woman_folds

log = logging.getLogger(__name__)

SMOKE_MAX = 64  # patches per split with ``smoke``
MIN_VALIDATION = 20  # fewer disjoint validation patches than this -> fallback split
TABLE_COLUMNS = ("model", "task", "n", "auc_abnormal_vs_baseline", "auc_mass_vs_calcification",
                 "auc_benign_vs_malignant", "accuracy", "ece", "nll")
METHOD = "mammo_core.ensemble (temperature scaling, soft voting, hierarchy)"


@dataclass(frozen=True)
class EnsembleFitConfig:
    """Settings of one ensemble fit (the flags of training_scripts/task_5_ensemble.py).

    members: member bundle folders; data: CBIS-DDSM-layout folder (train_*, public_test_*);
    out: ensemble bundle folder to write; val_fraction / seed: the fallback grouped validation
    split of train_*; percentile: disagreement threshold percentile of validation disagreement;
    smoke: at most ``SMOKE_MAX`` patches per split; command: the command line recorded in the card.
    """

    members: tuple[Path, ...]
    data: Path
    out: Path
    name: str = "ensemble"
    val_fraction: float = 0.2
    percentile: float = 90.0
    seed: int = 0
    batch_size: int = 64
    smoke: bool = False
    command: str = ""
    oof: tuple[Path, ...] = ()  # run folders with oof.npz, aligned with ``members``
    n_boot: int = 2000
    held_out_seen: str = ""  # how public_test was seen before a change (card: metrics.blind false)
    level: float = DEFAULT_LEVEL  # conformal sets of the call

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(Path(m) for m in self.members))
        object.__setattr__(self, "oof", tuple(Path(m) for m in self.oof))
        if self.oof and len(self.oof) != len(self.members):
            raise MammoError(f"give one out-of-fold run folder per member ({len(self.members)}), "
                             f"got {len(self.oof)}")
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))


@dataclass(frozen=True)
class EnsembleFitResult:
    out_dir: Path
    bundle: Any  # mammo_core.bundle.BundleInfo of the written ensemble
    spec: Any  # mammo_core.ensemble.EnsembleSpec
    rows: list[dict]  # comparison rows (members then ensemble); NaN = not estimable
    metrics: dict  # metrics.json as written
    table_markdown: str
    files: tuple[Path, ...] = field(default_factory=tuple)


def _stderr_log(msg: str) -> None:
    log.info("%s", msg)


def member_training_indices(info, folder: Path, labels: np.ndarray, groups: np.ndarray):
    """The train_* indices the member trained on, or (None, reason) when they cannot be
    reconstructed from its card."""
    tr = info.card.training
    split = tr.split
    if split is None or split.validation_fraction is None or split.seed is None:
        return None, "card records no reproducible validation split"
    if tr.smoke:
        return None, "member was trained with --smoke (subset not reconstructed)"
    want = None if tr.data is None else tr.data.sha256.get("train_labels.npy")
    if want is None or want != sha256_file(folder / "train_labels.npy"):
        return None, "member was trained on other data (train_labels.npy sha256 differs)"
    keep, y = get_task(info.task).map_labels(labels)
    idx = np.flatnonzero(keep)
    t_idx, v_idx = grouped_split(y, groups[keep], split.validation_fraction, seed=split.seed)
    if (split.train is not None and len(t_idx) != split.train) or \
            (split.validation is not None and len(v_idx) != split.validation):
        return None, "recomputed split sizes differ from the card"
    return idx[t_idx], None


def task_scores(task: str, p: np.ndarray, subset=None) -> dict[str, np.ndarray]:
    """Scores for the comparison AUCs from a model's own distribution."""
    f = factor_estimates(task, p, subset)
    out = {}
    if "baseline" in f:
        out["abnormal"] = 1.0 - f["baseline"]
    if "mass_given_abnormal" in f:
        out["mass"] = f["mass_given_abnormal"]
    if task == "benign_malignant":
        out["malignant"] = p[:, 1]
    elif task == "five_class":
        out["malignant"] = malignancy(p)
    return out


TASK_AUCS = ("auc_abnormal_vs_baseline", "auc_mass_vs_calcification", "auc_benign_vs_malignant")


def task_aucs(labels: np.ndarray, scores: dict[str, np.ndarray], groups: np.ndarray | None = None,
              n_boot: int = 0, seed: int = 0) -> dict:
    """The three task AUCs of one model's :func:`task_scores`: abnormal vs baseline on every
    patch, mass vs calcification and benign vs malignant on the abnormal ones; NaN where the
    scores cannot give one or the patches hold one class. With ``n_boot``, also each one's 95 %
    bootstrap interval resampling ``groups`` (women; patches when None), its ``_n`` and
    ``auc_ci_method``."""
    labels = np.asarray(labels)
    ab = labels != BASELINE_LABEL
    sets = {
        "auc_abnormal_vs_baseline": ("abnormal", ab.astype(int), None),
        "auc_mass_vs_calcification": ("mass", np.isin(labels[ab], MASS_LABELS).astype(int), ab),
        "auc_benign_vs_malignant": ("malignant", np.isin(labels[ab], MALIGNANT_LABELS).astype(int), ab),
    }
    out: dict[str, Any] = {}
    for key, (score, y, rows) in sets.items():
        if score not in scores:
            out[key] = math.nan
            continue
        s = np.asarray(scores[score]) if rows is None else np.asarray(scores[score])[rows]
        two = np.stack([1.0 - s, s], axis=1)
        out[key] = auc(y, two)
        if n_boot:
            g = None if groups is None else (groups if rows is None else groups[rows])
            out[key + "_ci95"] = list(bootstrap_ci(y, two, n_boot=n_boot, seed=seed, groups=g))
            out[key + "_n"] = len(y)
    if n_boot:
        out["auc_ci_method"] = ci_method(n_boot, groups)
    return out


def ensemble_row(name: str, spec, res, labels: np.ndarray, groups: np.ndarray, n_boot: int,
                 seed: int) -> dict:
    """The ensemble's comparison row (:func:`compare` of its five-class result ``res``) with its
    flag rate, the accuracy of flagged / unflagged patches and the AUC intervals over ``groups``."""
    five = task_scores("five_class", res.probabilities)
    scores = {"malignant": five["malignant"], "mass": five["mass"]}
    if spec.coverage["baseline"]:
        scores["abnormal"] = 1.0 - res.probabilities[:, 0]
    row = compare(name, "five_class", res.probabilities, labels, scores)
    row["flagged_fraction"] = float(res.flagged.mean())
    if res.disagreement is not None:
        ok = np.array([NAME_TO_LABEL[c] for c in res.predicted]) == labels
        row["accuracy_unflagged"] = float(ok[~res.flagged].mean()) if (~res.flagged).any() else None
        row["accuracy_flagged"] = float(ok[res.flagged].mean()) if res.flagged.any() else None
    row.update(task_auc_cis(labels, res.probabilities, groups, n_boot, seed))
    return row


def compare(name: str, task: str, p: np.ndarray, labels: np.ndarray, scores: dict[str, np.ndarray]) -> dict:
    """One comparison row: the three AUCs (NaN where the model cannot estimate one, or the
    patches hold one class only) and n / accuracy / ECE / NLL on the patches of ``task``."""
    row = {"model": name, "task": task, **task_aucs(labels, scores)}
    keep, y = get_task(task).map_labels(labels)
    if task == "five_class":  # score the ensemble's hierarchical call, as shown to users

        m = classification_metrics(y, p[keep], get_task(task).classes, call_five_class(p[keep]))
    else:
        m = classification_metrics(y, p[keep], get_task(task).classes)
    row.update({"n": m["n"], "accuracy": m["accuracy"], "ece": m["ece"], "nll": m["nll"]})
    return row


def table_markdown(rows: Sequence[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """The comparison rows as a Markdown table (4 decimals; a non-finite number is a dash)."""
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        table.append("| " + " | ".join(
            (f"{r[c]:.4f}" if isinstance(r[c], float) and math.isfinite(r[c]) else
             ("—" if isinstance(r[c], float) else str(r[c]))) for c in columns) + " |")
    return "\n".join(table)


def _validation_indices(models, config: EnsembleFitConfig, labels: np.ndarray, groups: np.ndarray,
                        log: Callable[[str], None]) -> tuple[np.ndarray, bool, str]:
    """(train_* indices to fit on, whether they are disjoint from every member's training part,
    how they were chosen)."""
    used = np.zeros(len(labels), dtype=bool)
    reasons = []
    for m in models:
        idx, why = member_training_indices(m.info, config.data, labels, groups)
        if idx is None:
            reasons.append(f"{m.name}: {why}")
        else:
            used[idx] = True
    val_idx = np.flatnonzero(~used) if not reasons else None
    guaranteed = (val_idx is not None and len(val_idx) >= MIN_VALIDATION
                  and len(np.unique(labels[val_idx])) == 5)
    if guaranteed:
        how = ("train_* patches outside every member's training part (members' grouped splits "
               "recomputed from their cards)")
    else:
        if val_idx is not None:
            reasons.append(f"only {len(val_idx)} patches / {len(np.unique(labels[val_idx]))} labels "
                           "outside every member's training part")
        _, val_idx = grouped_split(labels, groups, config.val_fraction, seed=config.seed)
        how = (f"grouped split ({config.val_fraction:.0%}, seed {config.seed}) of train_*; disjointness from "
               f"the members' training data NOT guaranteed: " + "; ".join(reasons))
        log("WARNING: " + how)
    return val_idx, bool(guaranteed), how


def task_auc_cis(labels: np.ndarray, p5: np.ndarray, groups: np.ndarray | None, n_boot: int,
                 seed: int = 0) -> dict:
    """95 % bootstrap intervals of the three task AUCs of a five-class distribution, resampling
    women (``groups``; patches when None): :func:`task_aucs` without the point estimates."""
    out = task_aucs(labels, task_scores("five_class", np.asarray(p5)), groups, n_boot, seed)
    return {k: v for k, v in out.items() if k not in TASK_AUCS}


def _load_oof(models, run_dirs, folder: Path, labels: np.ndarray
              ) -> tuple[dict[str, np.ndarray], str, np.ndarray]:
    """Each member's out-of-fold probabilities over every train_* patch, checked against the data
    (same labels file, same patches) and against each other (the same folds)."""

    want = sha256_file(folder / "train_labels.npy")
    probs, folds = {}, None
    for m, d in zip(models, run_dirs):
        z = load_oof(d)
        if str(z["train_labels_sha256"]) != want or len(z["labels"]) != len(labels) or \
                not np.array_equal(z["labels"], labels):
            raise MammoError(f"{m.name}: out-of-fold predictions were made on other data", d)
        if bool(z.get("smoke", False)):
            raise MammoError(f"{m.name}: out-of-fold predictions come from a --smoke run", d)
        p = np.asarray(z["probabilities"], np.float64)
        if p.shape != (len(labels), len(m.classes)):
            raise MammoError(f"{m.name}: out-of-fold probabilities have shape {p.shape}", d)
        if folds is None:
            folds = z["fold"]
        elif not np.array_equal(folds, z["fold"]):
            raise MammoError(f"{m.name}: out-of-fold predictions use other folds than the first member", d)
        probs[m.name] = p
    k = int(folds.max()) + 1
    return probs, (f"out-of-fold predictions of every member over all {len(labels)} train_* patches "
                   f"({k} folds grouped by woman, the same for every member)"), np.asarray(folds)


def feature_member(models):
    """The member whose pooled features the OOD check summarises: the first with a
    ``pooled_features`` layer that estimates P(baseline) (it sees normal tissue and lesions
    alike), else the first with that layer, else None."""
    have = []
    for m in models:
        try:
            m.model.get_layer(ood.FEATURE_LAYER)
        except ValueError:
            continue
        have.append(m)
    for m in have:
        if m.task in ("baseline_mass_calc", "five_class"):
            return m
    return have[0] if have else None


def fit_ood(models, x_val: np.ndarray, folds: np.ndarray, x_test: np.ndarray, batch_size: int,
            log: Callable[[str], None]):
    """The OOD checks (:mod:`mammo_core.ood`): the feature reference of the training patches,
    its threshold at the 99th percentile of the out-of-fold distances (folds grouped by woman),
    and the warning rates on the fitting rows and the test split. Returns (spec, reference or
    None, report)."""
    bg_val, bg_te = ood.background_share(x_val), ood.background_share(x_test)
    report: dict[str, Any] = {
        "background_limit": ood.BACKGROUND_LIMIT,
        "background_warned_fitting_rows": float((bg_val > ood.BACKGROUND_LIMIT).mean()),
        "background_warned_public_test": float((bg_te > ood.BACKGROUND_LIMIT).mean()),
    }
    # (c) acquisition statistics: threshold at the 99th percentile of the out-of-fold scores
    s_val, s_te = ood.acquisition_stats(x_val), ood.acquisition_stats(x_test)
    a_oof = ood.out_of_fold_acquisition_scores(s_val, folds)
    a_thr = float(np.percentile(a_oof, ood.ACQ_PERCENTILE))
    limits = ood.fit_acquisition(s_val, a_thr)
    acq_val, acq_te = a_oof > a_thr, limits.warned(s_te)
    report.update({"acquisition_threshold": a_thr, "acquisition_rule": ood.ACQ_RULE,
                   "acquisition_warned_out_of_fold": float(acq_val.mean()),
                   "acquisition_warned_public_test": float(acq_te.mean()),
                   "acquisition_limits": {n: [float(lo), float(hi)] for (n, _), lo, hi in
                                          zip(ood.ACQ_STATS, limits.low, limits.high)}})
    m = feature_member(models)
    if m is None:
        log("OOD: no member has a pooled_features layer; background check only")
        return ood.OodSpec(ood.BACKGROUND_LIMIT, how="no member with pooled features"), None, report
    log(f"OOD: pooled features of {m.name} on {len(x_val)} fitting and {len(x_test)} test patches")
    f_val = m.features(x_val, ood.FEATURE_LAYER, batch_size)
    f_te = m.features(x_test, ood.FEATURE_LAYER, batch_size)
    d_oof = ood.out_of_fold_distances(f_val, folds)
    thr = float(np.percentile(d_oof, ood.FEATURE_PERCENTILE))
    ref = dataclasses.replace(ood.fit_reference(f_val), acquisition=limits)
    d_te = ref.distance(f_te)
    k = int(np.max(folds)) + 1
    how = (f"{m.name} {ood.FEATURE_LAYER} (identity view) of {len(x_val)} training patches; threshold = "
           f"{ood.FEATURE_PERCENTILE:g}th percentile of out-of-fold distances ({k} folds grouped by woman)")
    spec = ood.OodSpec(ood.BACKGROUND_LIMIT, feature_member=m.name, reference_file=ood.REFERENCE_FILE,
                       threshold=thr, components=int(ref.components.shape[0]), how=how,
                       acquisition=True, acquisition_rule=ood.ACQ_RULE)
    either = lambda bg, d, a: float(((bg > ood.BACKGROUND_LIMIT) | (d > thr) | a).mean())  # noqa: E731
    report.update({"feature_member": m.name, "feature_threshold": thr, "how": how,
                   "feature_warned_out_of_fold": float((d_oof > thr).mean()),
                   "feature_warned_public_test": float((d_te > thr).mean()),
                   "any_warned_out_of_fold": either(bg_val, d_oof, acq_val),
                   "any_warned_public_test": either(bg_te, d_te, acq_te)})
    return spec, ref, report


def conformal_report(spec, p_val, y_val, g_val, folds, res_test, y_test, g_test, config) -> dict | None:
    """Coverage and mean set size of the conformal sets per true class: on the fitting rows
    (in-sample: the level by construction), by fold (thresholds from the other folds' women: an
    out-of-fold estimate for unseen women) and on the test split (scored once, with a 95 %
    interval over women), with the wrong calls that get a set of more than one class."""
    if spec.conformal is None:
        return None
    level = spec.conformal.level
    res_val = combine(spec, p_val)
    calls_val = call_five_class(res_val.probabilities)
    out = {"level": level, "method": spec.conformal.method,
           "fitting_rows": coverage_table(res_val.sets, y_val, calls_val, g_val, config.n_boot, config.seed)}
    if folds is not None:
        cross = cross_conformal_sets(res_val.probabilities, y_val, folds, level)
        out["by_fold"] = coverage_table(cross, y_val, calls_val, g_val, config.n_boot, config.seed)
    out["public_test"] = coverage_table(res_test.sets, y_test, call_five_class(res_test.probabilities),
                                        g_test, config.n_boot, config.seed)
    return out


def fit_and_evaluate(config: EnsembleFitConfig, log: Callable[[str], None] | None = None) -> EnsembleFitResult:
    """Fit the ensemble on validation predictions, write it to ``config.out`` (card.json,
    ensemble.json, metrics.json, comparison.png) and compare it with its members on public_test.

    Raises :class:`mammo_core.errors.MammoError` (or a subclass) for bad input: data without
    labelled train_* / public_test_*, unreadable bundles, duplicate member names.
    """
    log = log or _stderr_log
    t0 = time.perf_counter()
    folder = config.data
    arrays = io.load_patch_arrays(folder)
    for need in ("train", "public_test"):
        if need not in arrays.splits or arrays.splits[need].labels is None:
            raise MammoError(f"needs labelled {need}_tensor.npy / {need}_labels.npy", folder)
    train, test = arrays.splits["train"], arrays.splits["public_test"]
    labels = np.asarray(train.labels, dtype=np.int64)
    groups = groups_for_arrays(folder, split="train")

    models = [load_bundle(d) for d in config.members]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise MammoError(f"member names must be unique: {names}")
    log(f"members: {', '.join(f'{m.name} ({m.task})' for m in models)}")

    oof_probs, oof_folds = None, None
    if config.oof:  # out-of-fold predictions over every train_* patch
        oof_probs, how, oof_folds = _load_oof(models, config.oof, folder, labels)
        val_idx, guaranteed = np.arange(len(labels)), True
    else:  # validation patches: train_* patches no member trained on
        val_idx, guaranteed, how = _validation_indices(models, config, labels, groups, log)
    test_idx = np.arange(len(test.labels))
    if config.smoke:
        rng = np.random.default_rng(config.seed)
        val_idx = np.sort(rng.permutation(val_idx)[:SMOKE_MAX])
        test_idx = np.sort(rng.permutation(test_idx)[:SMOKE_MAX])
    log(f"validation: {len(val_idx)} patches ({how[:60]}...); public_test: {len(test_idx)}")

    y_val = labels[val_idx]
    if oof_probs is not None:
        p_val = {k: v[val_idx] for k, v in oof_probs.items()}
    else:
        x_val = io.to_model_input(np.asarray(train.images[val_idx]))
        p_val = predict_arrays(models, x_val, batch_size=config.batch_size)
    validation = {
        "split": "train_*", "how": how, "disjoint_from_member_training": bool(guaranteed),
        "n": len(val_idx), "data": str(folder.resolve()),
        "train_labels_sha256": sha256_file(folder / "train_labels.npy"), "smoke": bool(config.smoke),
    }
    spec = fit_ensemble([MemberInfo.from_bundle(m.info) for m in models], p_val, y_val,
                        percentile=config.percentile, validation=validation, level=config.level)

    x_te = io.to_model_input(np.asarray(test.images[test_idx]))
    y_te = np.asarray(test.labels, dtype=np.int64)[test_idx]
    g_val = groups[val_idx]
    if oof_folds is not None:
        ood_folds = oof_folds[val_idx]
    elif len(np.unique(g_val)) < 10:  # too few women for stratified folds: leave one woman out
        ood_folds = np.unique(g_val, return_inverse=True)[1].astype(np.int64)
    else:
        ood_folds = woman_folds(y_val, g_val, 5 if not config.smoke else 2, config.seed)
    ood_spec, reference, ood_report = fit_ood(
        models, io.to_model_input(np.asarray(train.images[val_idx])), ood_folds, x_te, config.batch_size, log)
    spec = dataclasses.replace(spec, ood=ood_spec)
    p_te = predict_arrays(models, x_te, batch_size=config.batch_size)
    res = combine(spec, p_te)
    rows = []
    for m, ms in zip(models, spec.members):
        row = compare(m.name, m.task, p_te[m.name], y_te, task_scores(m.task, p_te[m.name], ms.subset))
        keep, y = get_task(m.task).map_labels(y_te)
        row["ece_after_temperature"] = expected_calibration_error(
            y, apply_temperature(p_te[m.name][keep], ms.temperature))
        row["temperature"] = ms.temperature
        row["weight"] = ms.weight
        rows.append(row)
    erow = ensemble_row(config.name, spec, res, y_te,
                        groups_for_arrays(folder, split="public_test")[test_idx], config.n_boot, config.seed)
    rows.append(erow)
    markdown = table_markdown(rows)
    log("public_test comparison written (held-out scored once, after fitting)")
    oof_rows = None
    if oof_probs is not None:  # the same table out of fold (members, then the ensemble)
        oof_rows = []
        for m, ms in zip(models, spec.members):
            oof_rows.append(compare(m.name, m.task, p_val[m.name], y_val,
                                    task_scores(m.task, p_val[m.name], ms.subset)))
        orow = ensemble_row(config.name, spec, combine(spec, p_val), y_val, groups[val_idx],
                            config.n_boot, config.seed)
        oof_rows.append(orow)
        log("out-of-fold comparison (members, ensemble):\n" + table_markdown(oof_rows))
    conformal = conformal_report(spec, p_val, y_val, groups[val_idx],
                                 None if oof_folds is None else oof_folds[val_idx], res, y_te,
                                 groups_for_arrays(folder, split="public_test")[test_idx], config)

    out = config.out
    card = {
        "name": config.name,
        "training": {"method": METHOD, "validation": validation, "held_out": "public_test",
                     "command": config.command or "mammo_core.ensemble_fit.fit_and_evaluate (no command line)"},
        "metrics": Metrics.from_row(json_safe({
            "split": "public_test", "measured": "once, after fitting", **blind_fields(config.held_out_seen),
            "smoke": bool(config.smoke), **{k: erow[k] for k in TABLE_COLUMNS[2:]},
            **{k: v for k, v in erow.items() if k.endswith(("_ci95", "_ci_method"))},
            "flagged_fraction": erow.get("flagged_fraction")}), out / CARD_FILE).to_dict(),
        "out_of_fold": Metrics.from_row(json_safe({k: v for k, v in oof_rows[-1].items() if k != "model"}),
                                        out / CARD_FILE).to_dict() if oof_rows else None,
        "disclaimer": DISCLAIMER,
    }
    info = write_ensemble(out, spec, card, reference=reference)
    doc = json_safe({"disclaimer": DISCLAIMER, "held_out": "public_test", "n_test": len(test_idx),
                     "validation": validation, "table": rows, "table_markdown": markdown,
                     "oof_table": oof_rows, "oof_table_markdown": table_markdown(oof_rows) if oof_rows else None,
                     "fitted": spec.fitted, "threshold": spec.threshold, "coverage": spec.coverage,
                     "conformal": conformal, "ood": ood_report,
                     "seconds": round(time.perf_counter() - t0, 1)})
    write_json(out / "metrics.json", doc)
    ensemble_comparison(rows, out / "comparison.png",
                        f"Members vs {config.name} on public_test (n={len(test_idx)})"
                        + (" [smoke]" if config.smoke else ""))
    files = tuple(out / f for f in (CARD_FILE, ENSEMBLE_FILE, "metrics.json", "comparison.png"))
    return EnsembleFitResult(out_dir=Path(info.path), bundle=info, spec=spec, rows=rows, metrics=doc,
                             table_markdown=markdown, files=files)
