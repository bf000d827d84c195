"""Fitting an ensemble on validation predictions: temperatures, voting weights, factor weights
and the disagreement threshold.

Research use only — not a medical device.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammo_core.bundle import (
    BundleInfo,
)
from mammo_core.ensemble.calibration import EPS, _nll, apply_temperature, fit_temperature, fit_weights
from mammo_core.ensemble.conformal import DEFAULT_LEVEL, fit_conformal
from mammo_core.ensemble.hierarchy import calibrated, combine, disagreement
from mammo_core.ensemble.spec import EnsembleSpec, MemberSpec
from mammo_core.labels import (
    FACTOR_LABELS,
    SUBSET_LABELS,
    get_task,
)
from mammo_core.metrics import expected_calibration_error


def simplex_grid(k: int, steps: int) -> np.ndarray:
    """Every weight vector of ``k`` non-negative multiples of ``1/steps`` summing to 1 (the
    pure members, weight 1 on one, included)."""
    from itertools import product

    return np.array([c for c in product(range(steps + 1), repeat=k) if sum(c) == steps],
                    dtype=np.float64) / steps


def fit_factor_weights(factor_lists: Mapping[str, Mapping[str, np.ndarray]], labels: np.ndarray
                       ) -> dict[str, dict[str, float]]:
    """Per factor estimated by several task groups, the simplex weights (a grid of steps 0.05
    for two groups, 0.1 for more, pure groups included) whose mixed factor has the best AUC of
    that factor's question on the fitting rows (the measure every comparison reports), ties
    broken by the mixed factor's NLL. A weak group therefore never drags the factor below its
    best group on the fitting data: the ensemble ties or beats its best member there."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=np.int64)
    out: dict[str, dict[str, float]] = {}
    for f, by_group in factor_lists.items():
        keys = list(by_group)
        if len(keys) < 2:
            continue
        rows_of, positive = FACTOR_LABELS[f]
        rows = np.ones(len(labels), bool) if rows_of is None else np.isin(labels, rows_of)
        y = np.isin(labels[rows], positive).astype(np.int64)
        if len(np.unique(y)) < 2:  # no AUC: the NLL fit
            ps = [np.stack([1.0 - by_group[k][rows], by_group[k][rows]], axis=1) for k in keys]
            w = fit_weights(ps, y)
        else:
            stack = np.stack([np.asarray(by_group[k], np.float64)[rows] for k in keys])  # (k, n)
            best_key, w = None, None
            for cand in simplex_grid(len(keys), 20 if len(keys) == 2 else 10):
                mixed = np.clip(cand @ stack, EPS, 1 - EPS)
                key = (round(float(roc_auc_score(y, mixed)), 6),
                       -_nll(np.stack([1 - mixed, mixed], 1), y))
                if best_key is None or key > best_key:
                    best_key, w = key, cand
        out[f] = {k: float(wi) for k, wi in zip(keys, w)}
    return out


@dataclass(frozen=True)
class MemberInfo:
    """What fitting needs to know about a member (usually from its card)."""

    name: str
    sha256: str
    task: str
    classes: tuple[str, ...]
    subset: str | None = None

    @classmethod
    def from_bundle(cls, info: BundleInfo) -> MemberInfo:
        return cls(info.name, info.sha256, info.task, info.classes, info.card.training.subset)


def _rows(task: str, subset: str | None, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep, y = get_task(task).map_labels(labels)
    if subset is not None:
        sub = np.isin(labels, SUBSET_LABELS[subset])
        y = y[sub[keep]]
        keep = keep & sub
    return keep, y


def fit_ensemble(
    members: Sequence[MemberInfo],
    val_probs: Mapping[str, np.ndarray],
    val_labels: np.ndarray,
    percentile: float = 90.0,
    validation: Mapping[str, Any] | None = None,
    level: float | None = DEFAULT_LEVEL,
) -> EnsembleSpec:
    """Fit temperatures, voting weights, the disagreement threshold and (``level`` not None)
    the class-conditional conformal sets of the call on validation data.

    ``val_probs[name]`` are the member's raw probabilities on every validation patch (N, C);
    ``val_labels`` are the patches' 0-4 labels; each member is fitted on the rows of its task.
    """
    labels = np.asarray(val_labels, dtype=np.int64)
    fitted: dict[str, Any] = {"members": {}, "validation": dict(validation or {}),
                              "n_validation": len(labels)}
    temps: dict[str, float] = {}
    for m in members:
        keep, y = _rows(m.task, m.subset, labels)
        p = np.asarray(val_probs[m.name], dtype=np.float64)[keep]
        t = fit_temperature(p, y)
        temps[m.name] = t
        pt = apply_temperature(p, t)
        fitted["members"][m.name] = {
            "n": len(y), "temperature": t,
            "nll_before": _nll(p, y) if len(y) else None, "nll_after": _nll(pt, y) if len(y) else None,
            "ece_before": expected_calibration_error(y, p) if len(y) else None,
            "ece_after": expected_calibration_error(y, pt) if len(y) else None,
        }
    weights: dict[str, float] = {}
    groups: dict[tuple[str, str | None], list[MemberInfo]] = {}
    for m in members:
        groups.setdefault((m.task, m.subset), []).append(m)
    for (task, subset), ms in groups.items():
        keep, y = _rows(task, subset, labels)
        ps = [apply_temperature(np.asarray(val_probs[m.name])[keep], temps[m.name]) for m in ms]
        w = fit_weights(ps, y)
        for m, wi in zip(ms, w):
            weights[m.name] = float(wi)
    spec = EnsembleSpec(tuple(
        MemberSpec(m.name, m.sha256, m.task, tuple(m.classes), temps[m.name], weights[m.name], m.subset)
        for m in members
    ), fitted=fitted)
    fitted["factor_weights"] = fit_factor_weights(
        combine(spec, val_probs).factor_groups, labels) if len(labels) else {}
    spec = EnsembleSpec(spec.members, fitted=fitted)
    dis = disagreement(spec, calibrated(spec, val_probs))
    threshold = None if dis is None or len(dis) == 0 else float(np.percentile(dis, percentile))
    fitted["disagreement_percentile"] = float(percentile)
    spec = EnsembleSpec(spec.members, threshold=threshold, fitted=fitted)
    if level is None or not len(labels):
        return spec
    how = str((validation or {}).get("how", "validation predictions"))
    conf = fit_conformal(combine(spec, val_probs).probabilities, labels, level, calibration=how)
    return EnsembleSpec(spec.members, threshold=threshold, fitted=fitted, conformal=conf)
