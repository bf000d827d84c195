"""What an ensemble is on disk: the members (by name, with their sha256) and what was fitted
(:class:`EnsembleSpec`, ``ensemble.json``), and the rules it states in words.

Research use only — not a medical device.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core.ensemble.conformal import ConformalSpec
from mammo_core.errors import BundleError, MammoError
from mammo_core.labels import FACTORS, SUBSET_LABELS, get_task, task_factors
from mammo_core.ood import OodSpec

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_SCHEMA = "mammo.ensemble/1"
WEIGHTING = ("soft voting per task; weights on the simplex minimising validation NLL (L-BFGS-B); "
             "a factor estimated by several tasks mixes them with simplex weights fitted the same way")
CALIBRATION = "temperature scaling per member on logits = log p, T minimising validation NLL"
THRESHOLD_RULE = "90th percentile of the validation disagreement"
SUBSETS = (None, *SUBSET_LABELS)


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


def _factors_of(m: MemberSpec) -> tuple[str, ...]:
    try:
        return task_factors(m.task, m.subset)
    except MammoError as err:
        raise BundleError(f"member {m.name!r}: {err.problem}") from None


#: Temperatures accepted in a spec: fitting searches [0.05, 20]; far outside, softmax(log p / T)
#: overflows (NaN probabilities) or flattens every answer to uniform.
TEMPERATURE_RANGE = (1e-3, 1e3)


def _weight_ok(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def _total(xs: Iterable[float]) -> float:
    """The sum of finite weights, ``inf`` when it overflows (``math.fsum`` raises then)."""
    try:
        return math.fsum(float(x) for x in xs)
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class EnsembleSpec:
    members: tuple[MemberSpec, ...]
    threshold: float | None = None
    weighting: str = WEIGHTING
    calibration: str = CALIBRATION
    threshold_rule: str = THRESHOLD_RULE
    fitted: Mapping[str, Any] = field(default_factory=dict)
    conformal: ConformalSpec | None = None  # the call's conformal sets (None: fitted before them)
    ood: OodSpec | None = None  # out-of-distribution checks (None: fitted before them)

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
            if not (TEMPERATURE_RANGE[0] <= m.temperature <= TEMPERATURE_RANGE[1]):
                raise BundleError(f"member {m.name!r}: temperature {m.temperature!r} is outside "
                                  f"{TEMPERATURE_RANGE[0]:g}..{TEMPERATURE_RANGE[1]:g}")
            if not (np.isfinite(m.weight) and m.weight >= 0):
                raise BundleError(f"member {m.name!r}: weight {m.weight!r} must be a finite number >= 0")
        for group in {m.group for m in self.members}:
            total = _total(m.weight for m in self.members if m.group == group)
            if not (math.isfinite(total) and total > 0):  # 1e308 + 1e308 = inf would zero them all
                raise BundleError(f"members of task {group[0]!r}: weights sum to {total!r}; they "
                                  "must sum to a finite number > 0")
        if self.threshold is not None and not (0.0 <= self.threshold <= 1.0):
            raise BundleError(f"threshold {self.threshold!r} must be in [0, 1] (or null)")
        if self.ood is not None and self.ood.feature_member is not None and \
                self.ood.feature_member not in names:
            raise BundleError(f"OOD feature member {self.ood.feature_member!r} is not a member")
        if not isinstance(self.fitted, Mapping):
            raise BundleError("'fitted' must be an object")
        fw = self.fitted.get("factor_weights", {})
        if not isinstance(fw, Mapping) or not all(
                isinstance(v, Mapping) and all(_weight_ok(x) for x in v.values()) for v in fw.values()):
            raise BundleError("'fitted.factor_weights' must map factors to {group: finite weight >= 0}")
        for factor, ws in fw.items():
            total = _total(ws.values())
            if ws and not (math.isfinite(total) and total > 0):
                raise BundleError(f"'fitted.factor_weights' of {factor!r} sum to {total!r}; they "
                                  "must sum to a finite number > 0")

    @property
    def coverage(self) -> dict[str, bool]:
        have: set[str] = set()
        for m in self.members:
            have.update(_factors_of(m))
        return {f: f in have for f in FACTORS}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["members"] = [{**asdict(m), "classes": list(m.classes)} for m in self.members]
        d["fitted"] = dict(self.fitted)
        d["conformal"] = None if self.conformal is None else self.conformal.to_dict()
        d["ood"] = None if self.ood is None else self.ood.to_dict()
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
                fitted=d.get("fitted") or {},
                conformal=None if d.get("conformal") is None else ConformalSpec.from_dict(d["conformal"]),
                ood=None if d.get("ood") is None else OodSpec.from_dict(d["ood"]),
            )
        except BundleError as err:  # a value __post_init__ refused: name the file
            if err.path is None and path is not None:
                raise BundleError(err.problem, path) from None
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed ensemble spec: {type(exc).__name__}: {exc}", path) from None
