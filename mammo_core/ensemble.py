"""The ensemble of the study's Task 5: member bundles combined into one five-class distribution.

An ensemble is itself a bundle: a folder with ``card.json`` (``kind: "ensemble"``,
``task: "five_class"``, ``classes`` = the five canonical names) and ``ensemble.json`` (this
module's :class:`EnsembleSpec` as JSON: members by name with their sha256, and what was fitted),
hashed in ``card["files"]``. No pickle anywhere.

How the members are combined (everything fitted on *validation* predictions):

1. **Temperature scaling per member.** Logits are ``log p``; ``p_T = softmax(log p / T)`` with
   ``T`` minimising the member's validation negative log-likelihood (bounded search over
   ``T`` in [0.05, 20]). ``T > 1`` softens an over-confident member.
2. **Soft voting per task.** Members that share a task (and subset) are averaged with weights
   on the simplex that minimise the validation NLL of the weighted mean (softmax
   parametrisation, L-BFGS-B); one member gets weight 1.
3. **Hierarchy to five classes.** Each task's voted distribution estimates some of four factors:

   ======================================  ===========================================
   factor                                  estimated from
   ======================================  ===========================================
   ``baseline`` = P(baseline)              baseline_mass_calc p0; five_class p0
   ``mass_given_abnormal``                 mass_calc p(mass); baseline_mass_calc
                                           p1/(p1+p2); five_class (p1+p2)/(1-p0)
   ``malignant_given_mass``                benign_malignant p(malignant) (mass-specific
                                           members when they exist); five_class p2/(p1+p2)
   ``malignant_given_calcification``       benign_malignant p(malignant) (calcification-
                                           specific members when they exist); five_class
                                           p4/(p3+p4)
   ======================================  ===========================================

   Tasks that estimate the same factor are mixed with simplex weights fitted on the validation
   NLL of that factor (``fitted["factor_weights"]``; equal weights in specs without them). The five classes are
   the products ``P(baseline)``, ``(1-b)·m·(1-mm)``, ``(1-b)·m·mm``, ``(1-b)·(1-m)·(1-mc)``,
   ``(1-b)·(1-m)·mc``, which sum to 1 by construction.

   **Missing members degrade as follows**: with no member that estimates P(baseline) (no
   baseline_mass_calc or five_class member) P(baseline) is *unknown*: the distribution is
   then conditional on the patch being abnormal (P(baseline) = 0) and
   ``EnsembleSpec.coverage["baseline"]`` is False (the card says so). A missing
   ``mass_given_abnormal`` or malignancy factor is 0.5 (uninformative) and its coverage is False.
   An ensemble of one member reproduces that member (temperature-scaled) exactly in its own
   task (for a five_class member: the five probabilities themselves).
4. **Uncertainty.** *Disagreement*: for each factor estimated by at least two members, the
   standard deviation (ddof 0) of the members' own (temperature-scaled) estimates; the mean
   over those factors. ``None`` with fewer than two members per factor. *Entropy*: of the
   combined five-class distribution, divided by log 5 (so in [0, 1]). A patch is **flagged**
   when its disagreement exceeds the threshold chosen on validation data: the 90th percentile
   of the validation disagreement (so ~10 % of validation patches are flagged).
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core import __version__
from mammo_core.atomic import atomic_write_text
from mammo_core.bundle import (
    CARD_SCHEMA,
    BundleInfo,
    iter_bundles,
    read_card,
    sha256_file,
    verify_bundle,
    write_card,
)
from mammo_core.errors import BundleError, MammoError
from mammo_core.jsonutil import read_json_object
from mammo_core.labels import (
    BASELINE,
    CALC_MALIGNANT,
    CLASS_NAMES,
    FACTOR_LABELS,
    FACTORS,
    MASS_MALIGNANT,
    SUBSET_LABELS,
    get_task,
    task_factors,
)
from mammo_core.metrics import expected_calibration_error

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_SCHEMA = "mammo.ensemble/1"
T_BOUNDS = (0.05, 20.0)
EPS = 1e-12
WEIGHTING = ("soft voting per task; weights on the simplex minimising validation NLL (L-BFGS-B); "
             "a factor estimated by several tasks mixes them with simplex weights fitted the same way")
CALIBRATION = "temperature scaling per member on logits = log p, T minimising validation NLL"
THRESHOLD_RULE = "90th percentile of the validation disagreement"
CALL_RULE = ("call = normal tissue (baseline) when P(baseline) >= 50 %, otherwise the most likely of "
             "the four abnormal classes (so the call can differ from the longest bar)")
SUBSETS = (None, *SUBSET_LABELS)


# --------------------------------------------------------------------------- calibration

def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` row-wise (T = 1 returns ``p`` renormalised)."""
    p = np.asarray(p, dtype=np.float64)
    z = np.log(np.clip(p, EPS, 1.0)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))))


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising the NLL of ``softmax(log p / T)`` on (p, y)."""
    from scipy.optimize import minimize_scalar

    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(
        lambda logt: _nll(apply_temperature(p, np.exp(logt)), y),
        bounds=(np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(np.exp(res.x))
    # never worse than no scaling
    return t if _nll(apply_temperature(p, t), y) <= _nll(apply_temperature(p, 1.0), y) else 1.0


def fit_weights(ps: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Simplex weights minimising the NLL of ``sum_i w_i p_i`` (soft voting) on (ps, y)."""
    from scipy.optimize import minimize

    k = len(ps)
    if k <= 1 or len(y) == 0:
        return np.full(k, 1.0 / max(k, 1))
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in ps])  # (k, N, C)
    y = np.asarray(y, dtype=np.int64)
    picked = stack[:, np.arange(len(y)), y]  # (k, N)

    def loss(z):
        w = np.exp(z - z.max())
        w /= w.sum()
        return float(-np.mean(np.log(np.clip(w @ picked, EPS, None))))

    res = minimize(loss, np.zeros(k), method="L-BFGS-B", bounds=[(-20, 20)] * k)
    w = np.exp(res.x - res.x.max())
    return w / w.sum()


# --------------------------------------------------------------------------- the spec

@dataclass(frozen=True)
class MemberSpec:
    """A member bundle of an ensemble and what was fitted for it."""

    name: str
    sha256: str
    task: str
    classes: tuple[str, ...]
    temperature: float = 1.0
    weight: float = 1.0
    subset: str | None = None  # benign_malignant members trained on one abnormality type only

    @property
    def group(self) -> tuple[str, str | None]:
        return (self.task, self.subset)


@dataclass(frozen=True)
class EnsembleSpec:
    members: tuple[MemberSpec, ...]
    threshold: float | None = None
    weighting: str = WEIGHTING
    calibration: str = CALIBRATION
    threshold_rule: str = THRESHOLD_RULE
    fitted: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.members:
            raise BundleError("an ensemble needs at least one member")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise BundleError(f"duplicate member names in ensemble: {names}")
        for m in self.members:
            task = get_task(m.task)
            if tuple(m.classes) != task.classes:
                raise BundleError(f"member {m.name!r}: classes {list(m.classes)} do not match "
                                  f"task {m.task!r} {list(task.classes)}")
            if m.subset not in SUBSETS:
                raise BundleError(f"member {m.name!r}: unknown subset {m.subset!r}")
            if not (m.temperature > 0 and np.isfinite(m.temperature)):
                raise BundleError(f"member {m.name!r}: temperature must be > 0")

    @property
    def coverage(self) -> dict[str, bool]:
        have = set()
        for m in self.members:
            have.update(_factors_of(m))
        return {f: f in have for f in FACTORS}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["members"] = [{**asdict(m), "classes": list(m.classes)} for m in self.members]
        d["fitted"] = dict(self.fitted)
        return {"schema": ENSEMBLE_SCHEMA, **d, "coverage": self.coverage, "factors": list(FACTORS)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str | Path | None = None) -> EnsembleSpec:
        if d.get("schema") != ENSEMBLE_SCHEMA:
            raise BundleError(f"not an ensemble spec (schema {d.get('schema')!r})", path)
        try:
            members = tuple(
                MemberSpec(
                    name=str(m["name"]), sha256=str(m["sha256"]), task=str(m["task"]),
                    classes=tuple(m["classes"]), temperature=float(m.get("temperature", 1.0)),
                    weight=float(m.get("weight", 1.0)), subset=m.get("subset"),
                )
                for m in d["members"]
            )
            thr = d.get("threshold")
            return cls(
                members=members,
                threshold=None if thr is None else float(thr),
                weighting=str(d.get("weighting", WEIGHTING)),
                calibration=str(d.get("calibration", CALIBRATION)),
                threshold_rule=str(d.get("threshold_rule", THRESHOLD_RULE)),
                fitted=dict(d.get("fitted", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed ensemble spec: {type(exc).__name__}: {exc}", path) from None


# --------------------------------------------------------------------------- the hierarchy

def _factors_of(m: MemberSpec) -> tuple[str, ...]:
    try:
        return task_factors(m.task, m.subset)
    except MammoError as err:
        raise BundleError(f"member {m.name!r}: {err.problem}") from None


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, 0.5)
    ok = den > EPS
    out[ok] = num[ok] / den[ok]
    return np.clip(out, 0.0, 1.0)


def factor_estimates(task: str, p: np.ndarray, subset: str | None = None) -> dict[str, np.ndarray]:
    """The hierarchy factors that a distribution ``p`` of ``task`` estimates."""
    p = np.asarray(p, dtype=np.float64)
    if task == "mass_calc":
        return {"mass_given_abnormal": p[:, 0]}
    if task == "benign_malignant":
        mal = p[:, 1]
        if subset == "mass":
            return {"malignant_given_mass": mal}
        if subset == "calcification":
            return {"malignant_given_calcification": mal}
        return {"malignant_given_mass": mal, "malignant_given_calcification": mal}
    if task == "baseline_mass_calc":
        return {"baseline": p[:, 0], "mass_given_abnormal": _ratio(p[:, 1], p[:, 1] + p[:, 2])}
    if task == "five_class":
        return {
            "baseline": p[:, 0],
            "mass_given_abnormal": _ratio(p[:, 1] + p[:, 2], 1.0 - p[:, 0]),
            "malignant_given_mass": _ratio(p[:, 2], p[:, 1] + p[:, 2]),
            "malignant_given_calcification": _ratio(p[:, 4], p[:, 3] + p[:, 4]),
        }
    raise BundleError(f"task {task!r} cannot join an ensemble")


def malignancy(p5: np.ndarray) -> np.ndarray:
    """P(malignant | abnormal) of five-class distributions: (P(mass_malignant) +
    P(calcification_malignant)) / (1 - P(baseline)), the score every benign-vs-malignant AUC
    of a five-class model or the ensemble is measured with."""
    p5 = np.asarray(p5, dtype=np.float64)
    return (p5[:, MASS_MALIGNANT] + p5[:, CALC_MALIGNANT]) / np.clip(1.0 - p5[:, BASELINE], EPS, None)


def five_class_from_factors(factors: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """The (N, 5) distribution from the four factors; P(baseline) = 0 when it is missing,
    other missing factors are 0.5."""
    b = factors.get("baseline", np.zeros(n))
    m = factors.get("mass_given_abnormal", np.full(n, 0.5))
    mm = factors.get("malignant_given_mass", np.full(n, 0.5))
    mc = factors.get("malignant_given_calcification", np.full(n, 0.5))
    ab = 1.0 - b
    out = np.stack([b, ab * m * (1 - mm), ab * m * mm, ab * (1 - m) * (1 - mc), ab * (1 - m) * mc], axis=1)
    out = np.clip(out, 0.0, 1.0)
    return out / out.sum(axis=1, keepdims=True)


def task_view(p5: np.ndarray, task: str) -> np.ndarray:
    """A five-class distribution marginalised onto ``task`` (for mass_calc / benign_malignant:
    conditional on the patch being abnormal)."""
    p5 = np.asarray(p5, dtype=np.float64)
    if task == "five_class":
        return p5
    if task == "baseline_mass_calc":
        return np.stack([p5[:, 0], p5[:, 1] + p5[:, 2], p5[:, 3] + p5[:, 4]], axis=1)
    ab = 1.0 - p5[:, 0]
    if task == "mass_calc":
        m = _ratio(p5[:, 1] + p5[:, 2], ab)
        return np.stack([m, 1 - m], axis=1)
    if task == "benign_malignant":
        mal = _ratio(p5[:, 2] + p5[:, 4], ab)
        return np.stack([1 - mal, mal], axis=1)
    raise BundleError(f"unknown task {task!r}")


def call_five_class(p5: np.ndarray) -> np.ndarray:
    """The ensemble's call, down the hierarchy: ``baseline`` when P(baseline) >= 0.5, otherwise
    the most likely of the four abnormal classes.

    The plain argmax would call a patch "baseline" at P(baseline) = 0.34 when the other 0.66 is
    split over four abnormal classes; the first question a reader asks is "abnormal or not", so
    the call answers it at 0.5 first (:data:`CALL_RULE`, the words every report and the viewer
    show). Returns class indices into ``CLASS_NAMES``.
    """
    p5 = np.asarray(p5, dtype=np.float64)
    if p5.ndim != 2 or p5.shape[1] != len(CLASS_NAMES):
        raise ValueError(f"five-class probabilities must be (N, 5), got {p5.shape}")
    abnormal = 1 + p5[:, 1:].argmax(axis=1)
    return np.where(p5[:, 0] >= 0.5, 0, abnormal).astype(np.int64)


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


def fit_factor_weights(factor_lists: Mapping[str, Mapping[str, np.ndarray]], labels: np.ndarray
                       ) -> dict[str, dict[str, float]]:
    """Per factor estimated by several task groups, simplex weights minimising the validation
    NLL of the mixed factor (a weak group does not drag a strong one down)."""
    labels = np.asarray(labels, dtype=np.int64)
    out: dict[str, dict[str, float]] = {}
    for f, by_group in factor_lists.items():
        keys = list(by_group)
        if len(keys) < 2:
            continue
        rows_of, positive = FACTOR_LABELS[f]
        rows = np.ones(len(labels), bool) if rows_of is None else np.isin(labels, rows_of)
        y = np.isin(labels[rows], positive).astype(np.int64)
        ps = [np.stack([1.0 - by_group[k][rows], by_group[k][rows]], axis=1) for k in keys]
        w = fit_weights(ps, y)
        out[f] = {k: float(wi) for k, wi in zip(keys, w)}
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


# --------------------------------------------------------------------------- fitting

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
        subset = (info.card.get("training") or {}).get("subset") if isinstance(
            info.card.get("training"), Mapping) else None
        return cls(info.name, info.sha256, info.task, info.classes, subset)


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
) -> EnsembleSpec:
    """Fit temperatures, voting weights and the disagreement threshold on validation data.

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
    return EnsembleSpec(spec.members, threshold=threshold, fitted=fitted)


# --------------------------------------------------------------------------- on disk

def write_ensemble(out_dir: str | Path, spec: EnsembleSpec, card: Mapping[str, Any] | None = None) -> BundleInfo:
    """Write the ensemble bundle: ``ensemble.json`` then ``card.json`` (both atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / ENSEMBLE_FILE, json.dumps(spec.to_dict(), indent=2) + "\n")
    digest = sha256_file(out_dir / ENSEMBLE_FILE)
    cov = spec.coverage
    full: dict[str, Any] = {
        "schema": CARD_SCHEMA,
        "name": "ensemble",
        "kind": "ensemble",
        "task": "five_class",
        "classes": list(CLASS_NAMES),
        "version": "1.0.0",
        "architecture": {"members": [m.name for m in spec.members], "combination": WEIGHTING,
                         "calibration": CALIBRATION, "hierarchy": list(FACTORS)},
        "gradcam_layer": None,
        "coverage": cov,
        "notes": [] if cov["baseline"] else [
            ("no member estimates P(baseline): five-class output is conditional on the patch "
             "being abnormal (P(baseline) = 0)")],
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "software": {"mammo": __version__},
    }
    full.update(card or {})
    full["kind"] = "ensemble"
    full["task"] = "five_class"
    full["classes"] = list(CLASS_NAMES)
    full["files"] = {ENSEMBLE_FILE: digest}
    full["sha256"] = digest
    write_card(out_dir, full)
    return read_card(out_dir)


def read_ensemble(bundle_dir: str | Path, manifest: Mapping[str, Any] | None = None) -> tuple[BundleInfo, EnsembleSpec]:
    """Verify an ensemble bundle's hashes and parse its spec."""
    info = verify_bundle(bundle_dir, manifest)
    if info.kind != "ensemble":
        raise BundleError(f"bundle {info.name!r} is not an ensemble (kind {info.kind!r})", info.path)
    path = info.path / ENSEMBLE_FILE
    if ENSEMBLE_FILE not in info.card["files"]:
        raise BundleError(f"card does not hash {ENSEMBLE_FILE}", info.path)
    d = read_json_object(path, "ensemble spec", BundleError)
    return info, EnsembleSpec.from_dict(d, path)


def member_dirs(spec: EnsembleSpec, search_dir: str | Path) -> dict[str, Path]:
    """Find each member's bundle folder by card name in ``search_dir`` and check its sha256
    against the spec. Raises BundleError naming the member on a miss or a mismatch."""
    search_dir = Path(search_dir)
    by_name: dict[str, BundleInfo] = {}
    broken: list[str] = []
    for _sub, info in iter_bundles(search_dir):
        if isinstance(info, BundleError):
            broken.append(str(info))
        else:
            by_name.setdefault(info.name, info)
    out = {}
    for m in spec.members:
        info = by_name.get(m.name)
        if info is None:
            if broken:  # most likely the member's own card: say why it could not be read
                raise BundleError(f"ensemble member {m.name!r}: no readable card has that name; "
                                  f"unreadable: {'; '.join(broken)[:300]}")
            raise BundleError(f"ensemble member {m.name!r} not found", search_dir)
        if info.sha256 != m.sha256:
            raise BundleError(
                f"ensemble member {m.name!r}: sha256 {info.sha256[:12]}... differs from "
                f"{ENSEMBLE_FILE} ({m.sha256[:12]}...); refusing", info.path)
        out[m.name] = info.path
    return out


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
