"""The hierarchy to five classes: which factors each task estimates, how the voted members
combine into one five-class distribution, the call, and the uncertainty (steps 3 and 4).

Research use only — not a medical device.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mammo_core.ensemble.calibration import EPS, apply_temperature
from mammo_core.ensemble.spec import EnsembleSpec, MemberSpec
from mammo_core.errors import BundleError, MammoError
from mammo_core.labels import (
    BASELINE,
    CALC_MALIGNANT,
    CLASS_NAMES,
    FACTOR_LABELS,
    FACTORS,
    MASS_MALIGNANT,
    get_task,
    task_factors,
)
from mammo_core.protocol import call_index


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, 0.5)
    ok = den > EPS
    out[ok] = num[ok] / den[ok]
    return np.clip(out, 0.0, 1.0)


def _class_labels(task: str) -> list[frozenset[int]]:
    """The 0-4 labels each class of ``task`` stands for (from ``Task.remap``)."""
    t = get_task(task)
    out: list[set[int]] = [set() for _ in t.classes]
    for label, cls in t.remap.items():
        out[cls].add(label)
    return [frozenset(x) for x in out]


def _factor_from(p: np.ndarray, task: str, factor: str) -> np.ndarray:
    """The estimate of ``factor`` (``FACTOR_LABELS``: the labels it is defined on, those for
    which it is 1) from distributions ``p`` of ``task``: P(its classes that are 1) / P(its
    classes it is defined on); the column itself when every class of the task counts."""
    domain, positive = FACTOR_LABELS[factor]
    pos, neg = [], []
    for i, labels in enumerate(_class_labels(task)):
        inside = labels if domain is None else labels & frozenset(domain)
        if not inside:
            continue
        if inside <= frozenset(positive):
            pos.append(i)
        elif not inside & frozenset(positive):
            neg.append(i)
        else:
            raise BundleError(f"task {task!r} cannot estimate {factor}: a class mixes both answers")
    if not pos:
        raise BundleError(f"task {task!r} cannot estimate {factor}")
    num = p[:, pos].sum(axis=1) if len(pos) > 1 else p[:, pos[0]]
    if len(pos) + len(neg) == p.shape[1]:
        return num
    return _ratio(num, num + p[:, neg].sum(axis=1))


def factor_estimates(task: str, p: np.ndarray, subset: str | None = None) -> dict[str, np.ndarray]:
    """The hierarchy factors that a distribution ``p`` of ``task`` estimates: which ones from
    ``labels.task_factors``, each computed from the task's classes and ``FACTOR_LABELS``."""
    p = np.asarray(p, dtype=np.float64)
    try:
        names = task_factors(task, subset)
    except MammoError as err:
        raise BundleError(err.problem) from None
    return {f: _factor_from(p, task, f) for f in names}


def malignancy(p5: np.ndarray) -> np.ndarray:
    """P(malignant | abnormal) of five-class distributions: (P(mass_malignant) +
    P(calcification_malignant)) / (1 - P(baseline)), the score every benign-vs-malignant AUC
    of a five-class model or the ensemble is measured with."""
    p5 = np.asarray(p5, dtype=np.float64)
    return (p5[:, MASS_MALIGNANT] + p5[:, CALC_MALIGNANT]) / np.clip(1.0 - p5[:, BASELINE], EPS, None)


#: What each factor is assumed to be when no member estimates it.
_MISSING_FACTOR = {"baseline": 0.0}


def five_class_from_factors(factors: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """The (N, 5) distribution from the factors (``FACTOR_LABELS``): P(label) is the product,
    over the factors defined on the label, of the factor where the label makes it 1 and of
    1 - the factor elsewhere. P(baseline) = 0 when it is missing, other missing factors 0.5."""
    out = np.ones((n, len(CLASS_NAMES)))
    for f, (domain, positive) in FACTOR_LABELS.items():
        v = np.asarray(factors[f], dtype=np.float64) if f in factors else np.full(n, _MISSING_FACTOR.get(f, 0.5))
        for label in range(len(CLASS_NAMES)):
            if domain is None or label in domain:
                out[:, label] *= v if label in positive else 1.0 - v
    out = np.clip(out, 0.0, 1.0)
    return out / out.sum(axis=1, keepdims=True)


def task_view(p5: np.ndarray, task: str) -> np.ndarray:
    """A five-class distribution marginalised onto ``task``: each class the sum of its labels
    (``Task.remap``); for a task without baseline (mass_calc, benign_malignant) conditional on
    the patch being abnormal (0.5 each where P(abnormal) is 0)."""
    p5 = np.asarray(p5, dtype=np.float64)
    t = get_task(task)
    cols = [p5[:, sorted(labels)].sum(axis=1) for labels in _class_labels(task)]
    if t.uses_baseline:
        return np.stack(cols, axis=1)
    ab = 1.0 - p5[:, BASELINE]
    return np.stack([_ratio(c, ab) for c in cols], axis=1)


def call_five_class(p5: np.ndarray) -> np.ndarray:
    """The ensemble's call, down the hierarchy: ``baseline`` when P(baseline) reaches
    :data:`mammo_core.protocol.CALL_BASELINE_AT` (0.5), otherwise the most likely of the four
    abnormal classes (:func:`mammo_core.protocol.call_index`).

    The plain argmax would call a patch "baseline" at P(baseline) = 0.34 when the other 0.66 is
    split over four abnormal classes; the first question a reader asks is "abnormal or not", so
    the call answers it at 0.5 first (:data:`mammo_core.protocol.CALL_RULE`, the words every report and the viewer
    show). Returns class indices into ``CLASS_NAMES``.
    """
    p5 = np.asarray(p5, dtype=np.float64)
    if p5.ndim != 2 or p5.shape[1] != len(CLASS_NAMES):
        raise ValueError(f"five-class probabilities must be (N, 5), got {p5.shape}")
    return call_index(p5)


@dataclass
class EnsembleResult:
    probabilities: np.ndarray  # (N, 5), rows sum to 1, columns = CLASS_NAMES
    task_probabilities: dict[str, np.ndarray]  # voted distribution per task group "task[:subset]"
    factors: dict[str, np.ndarray]
    disagreement: np.ndarray | None  # (N,) or None with < 2 members per factor
    entropy: np.ndarray  # (N,) normalised to [0, 1]
    flagged: np.ndarray  # (N,) bool
    factor_groups: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # per factor, per group

    @property
    def predicted(self) -> list[str]:
        """The ensemble's call per patch (:func:`call_five_class`), not the plain argmax."""
        return [CLASS_NAMES[i] for i in call_five_class(self.probabilities)]


def _group_key(group: tuple[str, str | None]) -> str:
    return group[0] if group[1] is None else f"{group[0]}:{group[1]}"


def calibrated(spec: EnsembleSpec, member_probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [m.name for m in spec.members if m.name not in member_probs]
    if missing:
        raise BundleError(f"ensemble members without predictions: {', '.join(missing)}")
    return {m.name: apply_temperature(member_probs[m.name], m.temperature) for m in spec.members}


def disagreement(spec: EnsembleSpec, cal: Mapping[str, np.ndarray]) -> np.ndarray | None:
    per_factor: dict[str, list[np.ndarray]] = {f: [] for f in FACTORS}
    for m in spec.members:
        for f, v in factor_estimates(m.task, cal[m.name], m.subset).items():
            per_factor[f].append(v)
    stds = [np.std(np.stack(v), axis=0) for v in per_factor.values() if len(v) >= 2]
    if not stds:
        return None
    return np.mean(np.stack(stds), axis=0)


def _combine_factors(spec: EnsembleSpec, factor_lists: Mapping[str, Mapping[str, np.ndarray]]
                     ) -> dict[str, np.ndarray]:
    """Mix the task groups' estimates of each factor with the weights fitted on validation
    (``fitted["factor_weights"]``); equal weights where none were fitted."""
    fw = spec.fitted.get("factor_weights", {}) if isinstance(spec.fitted, Mapping) else {}
    out = {}
    for f, by_group in factor_lists.items():
        keys = list(by_group)
        w = np.array([float((fw.get(f) or {}).get(k, 1.0)) for k in keys], dtype=np.float64)
        w = w / w.sum() if w.sum() > 0 else np.full(len(keys), 1.0 / len(keys))
        out[f] = sum(wi * by_group[k] for wi, k in zip(w, keys))
    return out


def combine(spec: EnsembleSpec, member_probs: Mapping[str, np.ndarray]) -> EnsembleResult:
    """Combine raw member probabilities (keyed by member name) into the five-class result."""
    cal = calibrated(spec, member_probs)
    n = len(next(iter(cal.values())))
    groups: dict[tuple[str, str | None], list[MemberSpec]] = {}
    for m in spec.members:
        groups.setdefault(m.group, []).append(m)
    voted: dict[str, np.ndarray] = {}
    factor_lists: dict[str, dict[str, np.ndarray]] = {}
    for group, ms in groups.items():
        w = np.array([m.weight for m in ms], dtype=np.float64)
        w = w / w.sum() if w.sum() > 0 else np.full(len(ms), 1.0 / len(ms))
        p = sum(wi * cal[m.name] for wi, m in zip(w, ms))
        voted[_group_key(group)] = p
        for f, v in factor_estimates(group[0], p, group[1]).items():
            factor_lists.setdefault(f, {})[_group_key(group)] = v
    factors = _combine_factors(spec, factor_lists)
    probs = five_class_from_factors(factors, n)
    ent = -np.sum(probs * np.log(np.clip(probs, EPS, 1.0)), axis=1) / np.log(len(CLASS_NAMES))
    dis = disagreement(spec, cal)
    if dis is None or spec.threshold is None:
        flagged = np.zeros(n, dtype=bool)
    else:
        flagged = dis > spec.threshold
    ent = np.where(ent > 0.0, np.minimum(ent, 1.0), 0.0)  # no -0.0
    return EnsembleResult(probs, voted, factors, dis, ent, flagged,
                          {f: dict(v) for f, v in factor_lists.items()})


def member_class_for(task: str, five_class_name: str) -> str | None:
    """The class of ``task`` that contains the five-class ``five_class_name`` (None if none:
    e.g. ``baseline`` in mass_calc)."""
    if five_class_name not in CLASS_NAMES:
        raise BundleError(f"unknown class {five_class_name!r}; choose one of {', '.join(CLASS_NAMES)}")
    label = CLASS_NAMES.index(five_class_name)
    t = get_task(task)
    if label not in t.remap:
        return None
    return t.classes[t.remap[label]]
