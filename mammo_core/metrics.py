"""Classification metrics shared by training, the ensemble and the model cards (scikit-learn).

All functions take integer true labels ``y`` (task class indices) and probabilities ``p`` of
shape (N, n_classes) (rows sum to 1).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mammo_core.errors import MammoError


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64).ravel()
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probabilities must be (N, C) with N={len(y)}, got {p.shape}")
    return y, p


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC: binary (positive = class 1) or one-vs-rest macro for more classes.

    NaN when only one class is present in ``y`` (AUC undefined).
    """
    from sklearn.metrics import roc_auc_score

    y, p = _check(y, p)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))
    if len(present) < p.shape[1]:  # macro over the classes that are present
        scores = [roc_auc_score(y == c, p[:, c]) for c in present]
        return float(np.mean(scores))
    return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(p.shape[1]))))


def hard_label_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of the hard predictions (one-hot argmax) instead of the probabilities: the AUC the
    study's tables report (it tracks their accuracy). For two classes it equals the balanced
    accuracy. Not comparable with :func:`auc`."""
    y, p = _check(y, p)
    hard = np.eye(p.shape[1])[p.argmax(axis=1)] if len(p) else p
    return auc(y, hard)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-class confidence with equal-width bins (Guo et al. 2017)."""
    y, p = _check(y, p)
    if len(y) == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def nll(y: np.ndarray, p: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class."""
    y, p = _check(y, p)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))))


def classification_metrics(y: np.ndarray, p: np.ndarray, classes: tuple[str, ...] | list[str],
                           predicted: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy, AUC, macro F-score, ECE, NLL and the confusion matrix (rows = truth).

    Accuracy, F-score and the confusion matrix score ``predicted`` (class indices) when given,
    else the argmax of ``p`` (the ensemble passes its hierarchical call)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y, p = _check(y, p)
    pred = p.argmax(axis=1) if predicted is None else np.asarray(predicted, dtype=np.int64).ravel()
    labels = list(range(len(classes)))
    return {
        "n": len(y),
        "accuracy": float(accuracy_score(y, pred)) if len(y) else float("nan"),
        "auc": auc(y, p),
        "f1_macro": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "ece": expected_calibration_error(y, p),
        "nll": nll(y, p),
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
        "classes": list(classes),
    }


def bootstrap_ci(y: np.ndarray, p: np.ndarray, metric=auc, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0, groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(y, p)``.

    With ``groups`` (one id per row, e.g. the woman) it is a cluster bootstrap: whole groups are
    resampled with replacement, so several patches of one woman move together; without it rows
    (patches) are resampled. Resamples that miss a class (metric NaN) are dropped. Returns
    (low, high); NaN when fewer than 100 resamples were valid.
    """
    y, p = _check(y, p)
    rng = np.random.default_rng(seed)
    members = None
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape[0] != len(y):
            raise ValueError(f"groups must have one entry per row ({len(y)}), got {groups.shape[0]}")
        _, inv = np.unique(groups, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        members = np.split(order, np.cumsum(np.bincount(inv))[:-1])
    stats = []
    for _ in range(n_boot):
        if members is None:
            i = rng.integers(0, len(y), len(y))
        else:
            i = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        v = metric(y[i], p[i])
        if np.isfinite(v):
            stats.append(v)
    if len(stats) < 100:
        return float("nan"), float("nan")
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def ci_method(n_boot: int, groups: np.ndarray | None, unit: str = "women") -> str:
    """How :func:`bootstrap_ci` resampled, for cards and tables."""
    if groups is None:
        return f"percentile bootstrap over patches, {n_boot} resamples"
    return f"percentile cluster bootstrap over {unit} ({len(np.unique(groups))}), {n_boot} resamples"


MIN_SPREAD = 0.01  # a model whose class probabilities all vary less than this is "constant"


def spread(p: np.ndarray) -> dict:
    """How much a model's outputs vary over patches: per-class std, min, max; distinct rows."""
    p = np.asarray(p, np.float64)
    return {"n": len(p), "std": [float(v) for v in p.std(axis=0)],
            "min": [float(v) for v in p.min(axis=0)], "max": [float(v) for v in p.max(axis=0)],
            "distinct_outputs": len(np.unique(np.round(p, 4), axis=0)),
            "predicted_classes": len(np.unique(p.argmax(axis=1)))}


def check_not_collapsed(p: np.ndarray, where: str, min_spread: float = MIN_SPREAD) -> dict:
    """Raise MammoError when predictions are (near) constant (every class probability varies by
    less than ``min_spread`` std) or every patch gets the same class; else return the spread."""
    s = spread(p)
    if len(p) >= 2 and max(s["std"]) < min_spread:
        raise MammoError(f"{where}: predictions are (near) constant (largest class-probability std "
                         f"{max(s['std']):.4g} < {min_spread}); refusing to write a collapsed model")
    if len(p) >= 2 and s["predicted_classes"] < 2:
        raise MammoError(f"{where}: every patch is predicted as the same class; refusing to write a "
                         "collapsed model")
    return s
