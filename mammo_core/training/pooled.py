"""Training the small-data member: the registry's ``transfer`` model with ``head="pooled"``.

A frozen ImageNet backbone; chosen layers globally pooled and concatenated; a standardisation +
L2 logistic regression (scikit-learn, ``class_weight="balanced"``) fitted on cached features of
the 8 dihedral views of every training patch, then folded into the model's Dense softmax
(:func:`mammo_core.models.transfer.fold_linear_head`); the bundle is checked to reproduce
scikit-learn's ``predict_proba``.

Every choice is made on OUT-OF-FOLD predictions over the training women: the k folds are one
fixed assignment of the training women (:func:`woman_folds`, the same for every member), and for
each candidate pooling (``--pool-candidates``), each ``C`` (``--c-grid``) and test-time
augmentation on/off (mean over the 8 dihedral views, :mod:`mammo_core.tta`), a model fitted on
the other folds predicts every patch of the held-back fold. The candidate with the best
out-of-fold score (AUC of the task; for ``baseline_mass_calc`` the mean of the abnormal-vs-
baseline and mass-vs-calcification AUCs; ties by log loss) is refitted on all training patches.
Its out-of-fold predictions over ALL train_* patches (every label, for the ensemble) are written
to ``oof.npz`` in the run folder (not part of the bundle). Training refuses to write a bundle
whose out-of-fold predictions are (near) constant or one class (:func:`check_not_collapsed`).
With ``--train-augment acquisition`` the fitting rows of training views 1..``augment_views`` of
every patch (never view 0, the patch as cut) are the features of a RANDOM acquisition change of
the patch in that view (:func:`mammo_core.shifts.random_acquisition`: gamma, contrast, noise,
blur, rescale drawn per patch with the run's seed; ``--train-augment scale``: the rescale only,
0.8-1.25 x log-uniform about the centre, reflect-padded; cached like the other features,
:func:`mammo_core.training.features.cached_augmented_features`); out-of-fold predictions and the
bundle's own predictions are of the unchanged patches (the bundle graph does not change).
The held-out split is predicted once, after every choice. The out-of-fold numbers of the chosen
candidate are slightly optimistic (the choice was made on them); the card says so.
Research use only - not a medical device.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_core import DISCLAIMER, io
from mammo_core.atomic import atomic_write_text
from mammo_core.bundle import sha256_file, write_bundle
from mammo_core.confidence import blind_fields
from mammo_core.datasets.splits import check_split, grouped_kfold, groups_for_arrays
from mammo_core.errors import MammoError
from mammo_core.jsonutil import json_safe, write_json
from mammo_core.labels import get_task
from mammo_core.metrics import (
    auc,
    bootstrap_ci,
    check_not_collapsed,
    ci_method,
    classification_metrics,
    hard_label_auc,
    nll,
    spread,
)
from mammo_core.models import build_model, gradcam_layer
from mammo_core.models.transfer import BACKBONES, POOLINGS, fold_linear_head, parse_pool_layers, pooled_keys
from mammo_core.plots import plot_confusion, plot_roc
from mammo_core.shifts import ACQUISITION_ORDER, ACQUISITION_RANGES, AUGMENT_FAMILIES, AUGMENTS
from mammo_core.training.config import parse_class_weights
from mammo_core.training.data import check_classes
from mammo_core.training.features import augment_seed, cached_augmented_features, cached_features
from mammo_core.training.outdir import REFUSED_MARK, RefusedRun
from mammo_core.training.results import FOLD_COLUMNS, TrainResult, summarize_folds, write_csv
from mammo_core.tta import check_tta, predict_tta

GRID_CSV_COLUMNS = ["candidate", "C", "tta", "score", "auc_hard_labels", "nll"]
DEFAULT_C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)
OOF_FILE = "oof.npz"
SQUASH_FLOOR = 1e-6  # smallest divisor of the feature squash (a feature whose median is 0)
LR_MAX_ITER = 2000


log = logging.getLogger(__name__)


def _log(msg: str) -> None:
    log.info("%s", msg)


@dataclass(frozen=True)
class Candidate:
    pool_layers: str
    pooling: str

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """``"block3_pool,block4_pool:avg"`` -> Candidate."""

        layers, _, pooling = str(text).partition(":")
        pooling = pooling or "avg"
        if pooling not in POOLINGS:
            raise MammoError(f"pool candidate {text!r}: pooling must be one of {', '.join(POOLINGS)}")
        return cls(",".join(parse_pool_layers(layers)), pooling)

    @property
    def label(self) -> str:
        return f"{self.pool_layers}:{self.pooling}"


def woman_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) of every train_* patch: grouped by woman, stratified by 0-4 label, one
    assignment for every member (it depends on the data, k and seed only)."""

    fold = np.full(len(labels), -1, np.int64)
    for i, (tr, te) in enumerate(grouped_kfold(labels, groups, k, seed=seed)):
        check_split(tr, te, groups)
        fold[te] = i
    if (fold < 0).any():
        raise MammoError("internal: a patch fell in no fold")
    return fold


def task_score(task: str, y: np.ndarray, p: np.ndarray) -> float:
    """The out-of-fold selection score: AUC of the task (binary); for baseline_mass_calc the
    mean of abnormal-vs-baseline and mass-vs-calcification (abnormal rows) AUCs."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if task == "baseline_mass_calc":
        a = roc_auc_score(y != 0, 1.0 - p[:, 0])
        ab = y != 0
        m = roc_auc_score(y[ab] == 1, p[ab, 1] / np.clip(p[ab, 1] + p[ab, 2], 1e-12, None))
        return float((a + m) / 2)
    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))

    return auc(y, p)


def _counts(y: np.ndarray, classes) -> dict[str, int]:
    return {c: int(n) for c, n in zip(classes, np.bincount(np.asarray(y, np.int64), minlength=len(classes)))}


def _design(feats: Mapping[str, np.ndarray], cand: Candidate) -> np.ndarray:

    return np.concatenate([feats[k] for k in pooled_keys(cand.pool_layers, cand.pooling)], axis=-1)


def sklearn_class_weight(mode: str, n_classes: int):
    """The run's ``class_weights`` setting as scikit-learn's ``class_weight``: ``balanced`` (its
    formula is the study's total / (n_classes x n_c)), ``none`` -> None, or one weight per class."""
    parsed = parse_class_weights(mode)
    if parsed == "none":
        return None
    if isinstance(parsed, str):  # "balanced"
        return "balanced"
    if len(parsed) != n_classes:
        raise MammoError(f"{len(parsed)} class weights given for {n_classes} classes")
    return {c: float(w) for c, w in enumerate(parsed)}


class SquashScaler:
    """The feature squash, then the standardisation: each pooled feature ``f`` (post-ReLU, >= 0)
    becomes ``softsign(f / d) = f / (f + d)`` with ``d`` = ``k`` x its median over the fitting rows
    (fitted here, like the standardisation that follows it), a compression of large activations
    (``--feature-squash k``). In a bundle: a Rescaling by ``1 / d`` and a built-in softsign
    Activation after ``pooled_features`` (:func:`mammo_core.models.transfer.build_transfer`,
    ``squash_divisor``); ``mean_`` / ``scale_`` are the standardisation's, folded into the Dense."""

    def __init__(self, k: float):
        if not float(k) > 0:
            raise MammoError(f"feature squash must be > 0 (0 = none), got {k}")
        self.k = float(k)

    def fit(self, X: np.ndarray) -> SquashScaler:
        from sklearn.preprocessing import StandardScaler

        self.divisor_ = self.k * np.clip(np.median(np.asarray(X, np.float64), axis=0), SQUASH_FLOOR, None)
        self.std_ = StandardScaler().fit(self.squash(X))
        return self

    def squash(self, X: np.ndarray) -> np.ndarray:
        z = np.asarray(X, np.float64) / self.divisor_
        return z / (1.0 + np.abs(z))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.std_.transform(self.squash(X))

    @property
    def mean_(self) -> np.ndarray:
        return self.std_.mean_

    @property
    def scale_(self) -> np.ndarray:
        return self.std_.scale_


def _fit_lr(X: np.ndarray, y: np.ndarray, c: float, seed: int, scaler=None, class_weight="balanced",
            squash: float = 0.0):
    """(scaler, logistic regression) fitted on rows X (views stacked), from scratch; ``squash``
    > 0: the scaler is a :class:`SquashScaler` (feature squash, then standardisation).

    Every C of the out-of-fold grid and the final refit go through this one function, so the
    model whose out-of-fold predictions chose C is the model that ships (fitted on more rows).
    No warm start: on these near-separable features a fit warm-started from a smaller C stops at
    once (scikit-learn's lbfgs sees a gradient below ``tol``), so larger C values were scored with
    the previous C's weights while the shipped refit was a different, fully fitted model."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if scaler is None:
        scaler = SquashScaler(squash).fit(X) if squash else StandardScaler().fit(X)
    Z = scaler.transform(X)
    lr = LogisticRegression(C=float(c), class_weight=class_weight, max_iter=LR_MAX_ITER, tol=1e-4,
                            random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        lr.fit(Z, y)
    if int(np.max(lr.n_iter_)) >= LR_MAX_ITER:
        _log(f"[pooled] WARNING: logistic regression at C={c:g} stopped at {LR_MAX_ITER} iterations "
             "before converging")
    return scaler, lr


def _predict_views(scaler, lr, F: np.ndarray) -> np.ndarray:
    """(views, n, d) features -> (views, n, K) probabilities."""
    v, n, d = F.shape
    return lr.predict_proba(scaler.transform(F.reshape(v * n, d))).reshape(v, n, -1)


def training_views(n: int, views: int, train_views: int, seed: int) -> np.ndarray:
    """(n, train_views) view indices per patch used for fitting: view 0 (the patch as cut) and
    ``train_views - 1`` other dihedral views drawn per patch with ``seed`` (all 8 when 8)."""
    train_views = max(1, min(int(train_views), int(views)))
    if train_views == views:
        return np.tile(np.arange(views), (n, 1))
    rng = np.random.default_rng([int(seed), 8191])
    others = np.stack([rng.permutation(np.arange(1, views))[:train_views - 1] for _ in range(n)]) \
        if train_views > 1 else np.zeros((n, 0), np.int64)
    return np.concatenate([np.zeros((n, 1), np.int64), others], axis=1)


def _rows(F: np.ndarray, idx: np.ndarray, tv: np.ndarray, Fa: np.ndarray | None = None) -> np.ndarray:
    """Stack the fitting rows of patches ``idx``: feature of view tv[i, j] of patch idx[i]; with
    ``Fa`` ((copies, N, d) augmented features), training views 1..copies of each patch are
    replaced by its augmented copies 0..copies-1 (seen in those same dihedral views)."""
    X = F[tv[idx].ravel(), np.repeat(idx, tv.shape[1])]
    if Fa is None or len(Fa) == 0:
        return X
    if Fa.shape[0] > tv.shape[1] - 1:
        raise MammoError(f"internal: {Fa.shape[0]} augmented views for {tv.shape[1]} training views")
    X = X.reshape(len(idx), tv.shape[1], -1)
    X[:, 1:1 + Fa.shape[0]] = np.swapaxes(Fa[:, idx], 0, 1)
    return X.reshape(len(idx) * tv.shape[1], -1)


def check_augment(augment: str, augment_views: int, train_views: int) -> None:
    """Bad --train-augment / --augment-views combinations -> one-line MammoError."""

    if augment not in AUGMENTS:
        raise MammoError(f"train augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if augment != "none" and not 1 <= int(augment_views) <= int(train_views) - 1:
        raise MammoError(f"--train-augment {augment}: --augment-views must be 1..train_views - 1 "
                         f"({int(train_views) - 1}; view 0, the patch as cut, stays unchanged), got {augment_views}")


def augmented_features(augment: str, augment_views: int, x: np.ndarray, tensor_file, split: str, weights,
                       tv: np.ndarray, seed: int, cache=None) -> dict[str, np.ndarray] | None:
    """``{key: (augment_views, N, d)}`` features of the acquisition-changed training views
    1..augment_views of ``tv`` (None without augmentation)."""
    if augment == "none":
        return None
    check_augment(augment, augment_views, tv.shape[1])
    return cached_augmented_features(x, tensor_file, split, weights, augment, seed,
                                     tv[:, 1:1 + int(augment_views)], cache=cache)


def augment_record(augment: str, augment_views: int, seed: int) -> dict | str:
    """The card's record of the training augmentation ("none", or what and how)."""

    if augment == "none":
        return "none"
    return {"kind": augment, "views": int(augment_views), "seed": int(seed),
            "copy_seeds": [augment_seed(seed, j) for j in range(int(augment_views))],
            "ranges": {k: list(ACQUISITION_RANGES[k]) for k in ACQUISITION_ORDER if k in AUGMENT_FAMILIES[augment]},
            "order": [k for k in ACQUISITION_ORDER if k in AUGMENT_FAMILIES[augment]],
            "note": "training views 1..views of every patch replaced by a random acquisition change "
                    f"(mammo_core.shifts.random_acquisition, kind {augment}) of the patch in that view; view 0 "
                    "and all predictions unchanged"}


def squash_record(k: float) -> dict | str:
    """The card's record of the feature squash ("none", or what and how)."""
    if not k:
        return "none"
    return {"kind": "softsign", "k": float(k),
            "note": f"each pooled feature f -> f / (f + d) (a Rescaling by 1/d and a softsign Activation after "
                    f"pooled_features), d = {float(k):g} x the feature's median over the fitting rows, before the "
                    "standardisation"}


def select(task: str, feats: Mapping[str, np.ndarray], labels: np.ndarray, fold: np.ndarray,
           candidates: list[Candidate], c_grid, tta_options: tuple[str, ...], seed: int,
           tv: np.ndarray | None = None, class_weight="balanced",
           aug_feats: Mapping[str, np.ndarray] | None = None, squash: float = 0.0):
    """Out-of-fold search. Returns (table rows, best (candidate, C, tta), its OOF probabilities
    over all patches (N, K), per-fold rows)."""

    keep, y_task = get_task(task).map_labels(labels)
    y_full = np.full(len(labels), -1, np.int64)
    y_full[keep] = y_task
    k = int(fold.max()) + 1
    rows, best, best_key, best_oof = [], None, None, None
    for cand in candidates:
        F = _design(feats, cand)  # (V, N, d)
        Fa = None if aug_feats is None else _design(aug_feats, cand)  # (copies, N, d)
        V = F.shape[0]
        oof = {(c, t): np.zeros((len(labels), get_task(task).n_classes)) for c in c_grid for t in tta_options}
        t0 = time.perf_counter()
        for f in range(k):
            tr = np.flatnonzero(keep & (fold != f))
            te = np.flatnonzero(fold == f)
            tvs = tv if tv is not None else np.tile(np.arange(V), (len(labels), 1))
            X = _rows(F, tr, tvs, Fa)
            yy = np.repeat(y_full[tr], tvs.shape[1])
            scaler = None  # one standardisation per fold, shared by every C
            for c in sorted(c_grid):
                scaler, lr = _fit_lr(X, yy, c, seed, scaler, class_weight, squash)
                pv = _predict_views(scaler, lr, F[:, te])
                for t in tta_options:
                    oof[(c, t)][te] = pv.mean(axis=0) if t == "dihedral8" else pv[0]
        for (c, t), p in oof.items():
            score = task_score(task, y_task, p[keep])
            loss = nll(y_task, p[keep])
            rows.append({"candidate": cand.label, "C": c, "tta": t, "score": score, "nll": loss,
                         "auc_hard_labels": hard_label_auc(y_task, p[keep])})
            key = (round(score, 6), -loss)
            if best_key is None or key > best_key:
                best, best_key, best_oof = (cand, c, t), key, p
        _log(f"[pooled] {cand.label}: {k} folds x {len(c_grid)} C in {time.perf_counter() - t0:.0f} s; "
             f"best OOF score so far {best_key[0]:.4f} ({best[0].label}, C={best[1]:g}, tta={best[2]})")
    fold_rows = []

    for f in range(k):
        m = (fold == f) & keep
        yy = y_full[m]
        met = classification_metrics(yy, best_oof[m], tuple(get_task(task).classes))
        fold_rows.append({"fold": f + 1, "n": int(m.sum()), "accuracy": met["accuracy"], "loss": met["nll"],
                          "auc": met["auc"], "auc_hard_labels": hard_label_auc(yy, best_oof[m]),
                          "f1_macro": met["f1_macro"], "epochs": 0})
    return rows, best, best_oof, fold_rows


def train_pooled(cfg):
    """``train(config)`` for ``model_options["head"] == "pooled"`` (see module docstring)."""

    t0 = time.perf_counter()
    if cfg.smoke:
        cfg = cfg.with_(n_boot=min(cfg.n_boot, 200))
    opts = dict(cfg.model_options)
    weights = opts.get("weights")
    if not weights or not Path(str(weights)).is_file():
        raise MammoError("the pooled member needs a local backbone .weights.h5 file (--weights)")
    if cfg.folds < 2:
        raise MammoError("the pooled member chooses on out-of-fold predictions: give --folds >= 2")
    check_augment(cfg.train_augment, cfg.augment_views, max(1, min(int(cfg.train_views), 8)))
    task = get_task(cfg.task)
    out = cfg.out_dir
    arrays = io.load_patch_arrays(cfg.data_dir)
    for need in ("train", "public_test"):
        if need not in arrays.splits or arrays.splits[need].labels is None:
            raise MammoError(f"needs labelled {need}_tensor.npy / {need}_labels.npy", cfg.data_dir)
    train, test = arrays.splits["train"], arrays.splits["public_test"]
    labels = np.asarray(train.labels, np.int64)
    groups = groups_for_arrays(cfg.data_dir, split="train")
    check_classes(task.map_labels(labels)[1], task.classes, task.name, train.label_file or cfg.data_dir)
    class_weight = sklearn_class_weight(cfg.class_weights, task.n_classes)
    out.mkdir(parents=True, exist_ok=True)  # only once the data are read and usable
    grouping = "patient" if (Path(cfg.data_dir) / "metadata.csv").is_file() else "pair"
    x_train = io.to_model_input(np.asarray(train.images))
    views = 8
    feats = cached_features(x_train, train.image_file, "train", weights, views=views, cache=cfg.feature_cache or None)
    keep, y_task = task.map_labels(labels)
    if cfg.smoke:
        rng = np.random.default_rng(cfg.seed)
        sel = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:12] for c in range(5)]))
        labels, groups = labels[sel], groups[sel]
        feats = {k: v[:, sel] for k, v in feats.items()}
        x_train = x_train[sel]
        keep, y_task = task.map_labels(labels)
    fold = woman_folds(labels, groups, cfg.folds, cfg.seed)
    candidates = [Candidate.parse(c) for c in (cfg.pool_candidates or
                                               (f"{opts.get('pool_layers')}:{opts.get('pooling', 'avg')}",))]

    bb_last = BACKBONES[opts.get("backbone", "vgg16")].last_layer
    for cand in candidates:  # every candidate must fit the backbone (vgg16_block4 has no block 5)
        if "block5" in cand.pool_layers and bb_last == "block4_pool":
            raise MammoError(f"pool candidate {cand.label} needs block 5; backbone "
                             f"{opts.get('backbone')} stops at block 4")
    tta = cfg.tta if cfg.tta in ("none", "dihedral8") else "auto"
    tta_options = ("none", "dihedral8") if tta == "auto" else (check_tta(tta),)
    c_grid = tuple(cfg.c_grid or DEFAULT_C_GRID)
    _log(f"[pooled] {cfg.bundle_name} ({task.name}): {int(keep.sum())} task patches of {len(labels)} train_* "
         f"patches, {cfg.folds} folds over {len(np.unique(groups))} women, {len(candidates)} candidates x "
         f"{len(c_grid)} C x tta {tta_options}")
    tv = training_views(len(labels), views, cfg.train_views, cfg.seed)
    aug = augmented_features(cfg.train_augment, cfg.augment_views, x_train, train.image_file, "train", weights, tv,
                             cfg.seed, cfg.feature_cache or None)
    table, (cand, c_best, tta_best), oof, fold_rows = select(task.name, feats, labels, fold, candidates, c_grid,
                                                             tta_options, cfg.seed, tv, class_weight, aug,
                                                             cfg.feature_squash)
    try:
        oof_spread = check_not_collapsed(oof[keep], f"{cfg.bundle_name} out-of-fold predictions")
    except MammoError as err:
        reason = str(err).split("; refusing to write")[0]
        if not (cfg.smoke or cfg.allow_collapsed):
            write_csv(out / "grid.csv", table, GRID_CSV_COLUMNS)
            write_json(out / "metrics.json", json_safe({
                "task": task.name, "classes": list(task.classes), "refused": reason, "model_written": False,
                "out_of_fold": classification_metrics(y_task, oof[keep], tuple(task.classes)),
                "folds": summarize_folds(fold_rows), "grid": table, "public_test": None,
                "note": "the held-out split was not scored (no model was kept)", "disclaimer": DISCLAIMER}))
            atomic_write_text(out / REFUSED_MARK, reason + "\n")
            raise RefusedRun(f"{reason}; no model written (--allow-collapsed writes it anyway). "
                             f"metrics.json (marked refused) and grid.csv are in {out}") from None
        why = "smoke run" if cfg.smoke else "--allow-collapsed"
        _log(f"WARNING: {reason}; bundle written anyway ({why}; the card records it)")
        oof_spread = {**spread(oof[keep]), "collapsed": str(err)}
    _log(f"[pooled] chosen out of fold: {cand.label}, C={c_best:g}, tta={tta_best}")

    # final fit on every training patch of the task, all views
    F = _design(feats, cand)
    tr = np.flatnonzero(keep)
    Fa = None if aug is None else _design(aug, cand)
    scaler, lr = _fit_lr(_rows(F, tr, tv, Fa), np.repeat(y_task, tv.shape[1]), c_best, cfg.seed,
                         class_weight=class_weight, squash=cfg.feature_squash)
    final_opts = {**opts, "head": "pooled", "pool_layers": cand.pool_layers, "pooling": cand.pooling, "mode": "fe"}
    model = build_model("transfer", task.n_classes, **final_opts,
                        squash_divisor=scaler.divisor_ if cfg.feature_squash else None)
    fold_linear_head(model, scaler.mean_, scaler.scale_, lr.coef_, lr.intercept_)
    check = np.arange(min(16, len(tr)))
    p_keras = np.asarray(model.predict(x_train[tr[check]], verbose=0), np.float64)
    p_sk = lr.predict_proba(scaler.transform(F[0, tr[check]]))
    diff = float(np.abs(p_keras - p_sk).max())
    if diff > 1e-3:
        raise MammoError(f"internal: the folded Keras head differs from scikit-learn by {diff:.2e}")
    _log(f"[pooled] folded head reproduces scikit-learn predict_proba (max |diff| {diff:.1e})")

    def predict(x):
        return predict_tta(lambda v: model.predict(v, verbose=0), x, tta_best)

    # out-of-fold metrics with intervals over women
    oof_metrics = classification_metrics(y_task, oof[keep], tuple(task.classes))
    oof_metrics["auc_hard_labels"] = hard_label_auc(y_task, oof[keep])
    lo, hi = bootstrap_ci(y_task, oof[keep], n_boot=cfg.n_boot, seed=cfg.seed, groups=groups[keep])
    oof_metrics["auc_ci95"] = [lo, hi]
    oof_metrics["auc_ci_method"] = ci_method(cfg.n_boot, groups[keep])
    # held-out split: predicted once, after every choice above
    x_test = io.to_model_input(np.asarray(test.images))
    test_labels = np.asarray(test.labels, np.int64)
    tkeep, y_test = task.map_labels(test_labels)
    if cfg.smoke:
        tkeep &= np.arange(len(test_labels)) < 24
        y_test = task.map_labels(test_labels[tkeep])[1]
    test_groups = groups_for_arrays(cfg.data_dir, split="public_test")[tkeep]
    p_test = predict(x_test[tkeep])
    test_metrics = classification_metrics(y_test, p_test, tuple(task.classes))
    test_metrics["auc_hard_labels"] = hard_label_auc(y_test, p_test)
    lo, hi = bootstrap_ci(y_test, p_test, n_boot=cfg.n_boot, seed=cfg.seed, groups=test_groups)
    test_metrics.update(auc_ci95=[lo, hi], auc_ci_method=ci_method(cfg.n_boot, test_groups), loss=test_metrics["nll"])
    test_spread = spread(p_test)

    np.savez(out / OOF_FILE, probabilities=oof, fold=fold, labels=labels, groups=groups,
             train_labels_sha256=np.array(sha256_file(train.label_file)), smoke=np.array(bool(cfg.smoke)))
    write_csv(out / "grid.csv", table, GRID_CSV_COLUMNS)

    fold_table = summarize_folds(fold_rows)
    write_csv(out / "folds.csv", fold_table, ["fold", *FOLD_COLUMNS, "n", "epochs"])

    arch = {"model": "transfer", "options": final_opts, "params": int(model.count_params()),
            "trainable_params": 0, "initial_weights_sha256": sha256_file(weights),
            "head": ("global pooling of " + cand.label
                 + (f" -> feature squash softsign(f / ({cfg.feature_squash:g} x median))" if cfg.feature_squash else "")
                 + " -> standardisation + L2 logistic regression "
                     f"(scikit-learn, class_weight {cfg.class_weights}) folded into the Dense softmax; backbone frozen "
                     "at the ImageNet weights")}
    card = {
        "name": cfg.bundle_name, "task": task.name, "classes": list(task.classes), "architecture": arch,
        "inference": {"tta": tta_best, "tta_note": "mean of the softmax over the 8 dihedral views"
                      if tta_best == "dihedral8" else "single view"},
        "training": {
            "data": {"path": str(Path(cfg.data_dir).resolve()),
                     "sha256": {Path(f).name: sha256_file(f) for s in (train, test)
                                for f in (s.image_file, s.label_file) if f is not None},
                     "counts": {"train": _counts(y_task, task.classes), "public_test": _counts(y_test, task.classes)}},
            "split": {"folds": cfg.folds, "grouped_by": grouping, "fold_seed": cfg.seed, "held_out": "public_test",
                      "how": "out-of-fold predictions over all training women (no separate validation split)"},
            "protocol": {"fitting": f"scikit-learn LogisticRegression (lbfgs, L2, class_weight {cfg.class_weights}) on "
                                    "standardised cached features of dihedral views of every training patch (view 0 "
                                    "and train_views - 1 others drawn per patch)",
                         "selection": "pool candidate, C and TTA by out-of-fold task score (AUC; baseline_mass_calc: "
                                      "mean of abnormal-vs-baseline and mass-vs-calcification AUC), ties by log loss",
                         "candidates": [c.label for c in candidates], "c_grid": list(c_grid),
                         "train_views": int(tv.shape[1]),
                         "train_augment": augment_record(cfg.train_augment, cfg.augment_views, cfg.seed),
                         "feature_squash": squash_record(cfg.feature_squash),
                         "chosen": {"pool": cand.label, "C": c_best, "tta": tta_best},
                         "seed": cfg.seed, "smoke": bool(cfg.smoke), "reproducible": True,
                         "seconds": round(time.perf_counter() - t0, 1)},
            "oof": {**{k: oof_metrics[k] for k in ("n", "accuracy", "auc", "auc_ci95", "auc_ci_method",
                                                    "f1_macro", "ece", "nll")},
                    "score": float(task_score(task.name, y_task, oof[keep])), "spread": oof_spread,
                    "note": "out-of-fold over the training women; the configuration was chosen on these "
                            "predictions, so they are slightly optimistic"},
            "folds": fold_table, "grid": None,
            "command": cfg.command,
        },
        "metrics": {"split": "public_test", "measured": "once, after every choice (made out of fold)",
                    **{k: test_metrics[k] for k in ("n", "accuracy", "auc", "auc_ci95", "auc_ci_method",
                                                    "f1_macro", "ece", "nll", "confusion_matrix")},
                    "spread": test_spread, **blind_fields(cfg.held_out_seen)},
        "gradcam_layer": gradcam_layer("transfer", **final_opts),
        "disclaimer": DISCLAIMER,
    }
    info = write_bundle(model, out, json_safe(card))
    metrics_doc = {"task": task.name, "classes": list(task.classes), "public_test": test_metrics,
                   "out_of_fold": oof_metrics, "folds": fold_table, "grid": table,
                   "seconds_total": round(time.perf_counter() - t0, 1), "disclaimer": DISCLAIMER}
    write_json(out / "metrics.json", json_safe(metrics_doc))
    title = f"{cfg.bundle_name} ({task.name})"
    files = [out / "model.keras", out / "card.json", out / "metrics.json", out / OOF_FILE, out / "grid.csv",
             out / "folds.csv",
             plot_confusion(np.array(test_metrics["confusion_matrix"]), task.classes, out / "confusion_matrix.png",
                            title + " - public_test"),
             plot_roc(y_test, p_test, task.classes, out / "roc.png", title + " - public_test")]
    (out / REFUSED_MARK).unlink(missing_ok=True)  # an earlier refused run into this folder
    _log(f"[pooled] wrote {out} in {time.perf_counter() - t0:.0f} s (held-out scored once; see card)")
    return TrainResult(out, info, test_metrics, [], fold_table, table, files)


def load_oof(run_dir: str | Path) -> dict:
    """A member's ``oof.npz`` (plain arrays, ``allow_pickle=False``)."""
    path = Path(run_dir) / OOF_FILE
    if not path.is_file():
        raise MammoError("no out-of-fold predictions (oof.npz) in the member's run folder", path)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


