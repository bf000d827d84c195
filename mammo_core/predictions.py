"""What a prediction is, and how patches and heatmaps are named: the types the session, the
reports, the CLI and the viewer share (no TensorFlow, no Qt).

Research use only — not a medical device.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

ENSEMBLE = "ensemble"  # the alias under which the loaded ensemble is asked for


def patch_key(source: str, index: int | None) -> str:
    """How reports, heatmap mappings and the viewer name a patch: ``source`` or
    ``source#index``."""
    return str(source) if index is None else f"{source}#{index}"


@dataclass(frozen=True)
class ModelOutput:
    """One model's output for one patch: probabilities keyed by its task's class names."""

    model: str
    task: str
    probabilities: dict[str, float]
    predicted: str


@dataclass(frozen=True)
class OodCheck:
    """One patch's OOD check: the measured values and the warnings they raise (words); made by
    :func:`mammo_core.ood.checks`."""

    background: float
    distance: float | None = None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"background_share": round(float(self.background), 4),
                "feature_distance": None if self.distance is None else round(float(self.distance), 4),
                "warnings": list(self.warnings)}


#: Shown with any map of the normal-tissue class: it has no lesion to point at.
NORMAL_MAP_NOTE = ("normal-tissue map: where the models see normal tissue; it locates nothing "
                   "(the default map explains the most likely abnormal class)")


def asks_if_lesion(task: str, classes: Iterable[str]) -> bool:
    """A member that only knows lesion classes (mass_calc, benign_malignant) answers "if this is
    a lesion, which kind?": it has no normal-tissue class."""
    return "baseline" not in tuple(classes)


def member_words(out: ModelOutput) -> str:
    """A member's answer with its question: ``"if a lesion: mass 100 % / calcification 0 %"``
    for a member without a normal-tissue class, ``"baseline 10 % / mass 70 % / ..."`` otherwise."""
    parts = " / ".join(f"{c.replace('_', ' ')} {100 * p:.0f} %" for c, p in out.probabilities.items())
    return f"if a lesion: {parts}" if asks_if_lesion(out.task, out.probabilities) else parts


def default_target(out: ModelOutput) -> str:
    """The class a heatmap explains by default: for a model that estimates normal tissue
    (``baseline`` among its classes), the most likely ABNORMAL class, so the map points at what
    would be a finding even when the call is normal tissue (a normal-tissue map locates
    nothing); otherwise the model's own predicted class."""
    probs = out.probabilities
    if "baseline" not in probs:
        return out.predicted
    others = [(p, c) for c, p in probs.items() if c != "baseline"]
    return max(others)[1] if others else out.predicted


@dataclass(frozen=True)
class PatchPrediction:
    """Every loaded model's output for one patch, and the ensemble's (five classes) if loaded.

    ``uncertainty`` is the ensemble members' disagreement (None without an ensemble of at least
    two members per factor); ``flagged`` is True when it exceeds the threshold fitted on
    validation data; ``entropy`` is the normalised entropy of the ensemble's distribution;
    ``bits`` the bit depth the patch's pixels were scaled by (``Patch.bits``); ``source_ref``
    the source image's identifiers in JSON form (``SourceRef.to_json()``: DICOM UIDs, frame,
    the window it was cut from), None when the patch has none; ``conformal`` the
    ensemble's conformal set at ``level`` (None without a fitted one); ``ood`` the patch's
    out-of-distribution check (background share, feature distance, warnings).
    """

    source: str
    index: int | None
    sha256: str
    per_model: dict[str, ModelOutput]
    ensemble: ModelOutput | None
    uncertainty: float | None
    flagged: bool
    entropy: float | None = None
    bits: int | None = None
    source_ref: Mapping[str, object] | None = None
    conformal: tuple[str, ...] | None = None  # the ensemble's conformal set (class names)
    level: float | None = None  # its level
    ood: OodCheck | None = None  # out-of-distribution check of the patch (mammo_core.ood)

    @property
    def uncertain(self) -> bool:
        """The conformal set holds more than one class (or none)."""
        return self.conformal is not None and len(self.conformal) != 1

    @property
    def warnings(self) -> tuple[str, ...]:
        """The OOD warnings of the patch (words), empty when it looks like the training data."""
        return () if self.ood is None else self.ood.warnings

    @property
    def key(self) -> str:
        return patch_key(self.source, self.index)

    def non_finite(self) -> str | None:
        """Why this prediction must not be reported (a model whose probabilities are not all
        finite numbers in [0, 1]), or None when every answer is a number."""
        outs = [*self.per_model.values(), *([self.ensemble] if self.ensemble is not None else [])]
        for out in outs:
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0
                       for v in out.probabilities.values()):
                return f"model {out.model} gave a non-finite or out-of-range probability; no answer reported"
        return None

    def output(self, model: str) -> ModelOutput | None:
        """The output of ``model``: a member's name, the ensemble's bundle name or
        :data:`ENSEMBLE`."""
        if self.ensemble is not None and model in (ENSEMBLE, self.ensemble.model):
            return self.ensemble
        return self.per_model.get(model)


class HeatKey(NamedTuple):
    """One Grad-CAM map: of the patch with these pixels, by this model (a member's name or
    :data:`ENSEMBLE`), with this method, for this target class."""

    sha256: str
    model: str
    method: str
    target: str


@dataclass(frozen=True)
class MemberRecord:
    """One ensemble member as a report states it."""

    name: str
    sha256: str
    task: str
    temperature: float
    weight: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "task": self.task,
                "temperature": self.temperature, "weight": self.weight}


@dataclass(frozen=True)
class EnsembleRecord:
    """How the ensemble of a report combines its members (from its ``ensemble.json``)."""

    name: str
    threshold: float | None
    threshold_rule: str
    weighting: str
    calibration: str
    coverage: Any
    members: tuple[MemberRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold,
                "threshold_rule": self.threshold_rule, "weighting": self.weighting,
                "calibration": self.calibration, "coverage": self.coverage,
                "members": [m.to_json() for m in self.members]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EnsembleRecord:
        return cls(d["name"], d.get("threshold"), d.get("threshold_rule", ""),
                   d.get("weighting", ""), d.get("calibration", ""), d.get("coverage"),
                   tuple(MemberRecord(m["name"], m["sha256"], m["task"], m["temperature"],
                                      m["weight"]) for m in d.get("members", ())))


def _opt_float(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class HeldOut:
    """A model's (or one ensemble question's) measured held-out quality as a report states it
    (:meth:`mammo_core.confidence.ModelQuality.to_dict`): AUC, its 95 % interval, n, split,
    status and whether the split was blind."""

    auc: float | None = None
    auc_ci95: tuple[float, float] | None = None
    n: int | None = None
    split: str | None = None
    status: str | None = None
    blind: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"auc": self.auc, "auc_ci95": None if self.auc_ci95 is None else list(self.auc_ci95),
                "n": self.n, "split": self.split, "status": self.status, "blind": self.blind}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HeldOut:
        ci = d.get("auc_ci95")
        n = d.get("n")
        return cls(_opt_float(d.get("auc")),
                   None if not isinstance(ci, list | tuple) or len(ci) != 2 else (float(ci[0]), float(ci[1])),
                   n if isinstance(n, int) and not isinstance(n, bool) else None,
                   d.get("split"), d.get("status"), d.get("blind") is not False)


@dataclass(frozen=True)
class ModelRecord:
    """One loaded bundle as a report states it: name, version, the sha256 computed from its
    file, task, classes, kind and its measured held-out quality (``heldout``; an ensemble also
    ``heldout_questions``, one per question)."""

    name: str
    version: str
    sha256: str
    task: str
    classes: tuple[str, ...]
    kind: str = "model"
    heldout: HeldOut | None = None
    heldout_questions: Mapping[str, HeldOut] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "sha256": self.sha256,
                               "task": self.task, "classes": list(self.classes), "kind": self.kind}
        if self.heldout is not None:
            out["heldout"] = self.heldout.to_json()
        if self.heldout_questions:
            out["heldout_questions"] = {q: h.to_json() for q, h in self.heldout_questions.items()}
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelRecord:
        held = d.get("heldout")
        questions = d.get("heldout_questions") or {}
        return cls(str(d["name"]), str(d["version"]), str(d["sha256"]), str(d["task"]),
                   tuple(d.get("classes", ())), str(d.get("kind", "model")),
                   None if not held else HeldOut.from_json(held),
                   {str(q): HeldOut.from_json(h) for q, h in questions.items()})


@dataclass(frozen=True)
class Provenance:
    """What every report states about how it was made (the report's provenance fields):
    software and version, the disclaimer, the time, each loaded bundle's summary (name,
    version, sha256 computed from the file, task, classes, kind, measured held-out quality) and
    the ensemble's combination, and the engine that computed the predictions (name, version,
    precision, measured deviation from Keras f32). :meth:`to_json` / :meth:`from_json` use the report schema's
    names (``software``, ``disclaimer``, ``created``, ``models``, ``ensemble``, ``engine``)."""

    software_version: str
    disclaimer: str
    created: str
    models: tuple[ModelRecord, ...] = ()
    ensemble: EnsembleRecord | None = None
    software_name: str = "mammo-patches"
    extra: Mapping[str, Any] = field(default_factory=dict)
    # what computed the predictions (mammo_core.engine.EngineInfo.to_json: name, version,
    # precision, requested, note, deviation); None in reports written before engines existed
    engine: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "software": {"name": self.software_name, "version": self.software_version},
            "disclaimer": self.disclaimer,
            "created": self.created,
            "models": [m.to_json() for m in self.models],
            "ensemble": None if self.ensemble is None else self.ensemble.to_json(),
            "engine": None if self.engine is None else dict(self.engine),
            **self.extra,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Provenance:
        sw = d.get("software") or {}
        known = ("software", "disclaimer", "created", "models", "ensemble", "engine")
        return cls(str(sw.get("version", "")), str(d.get("disclaimer", "")),
                   str(d.get("created", "")), tuple(ModelRecord.from_json(m) for m in d.get("models", ())),
                   None if not d.get("ensemble") else EnsembleRecord.from_json(d["ensemble"]),
                   str(sw.get("name", "mammo-patches")),
                   {k: v for k, v in d.items() if k not in known},
                   None if not d.get("engine") else dict(d["engine"]))


__all__ = ["ENSEMBLE", "EnsembleRecord", "HeatKey", "HeldOut", "MemberRecord", "ModelOutput", "ModelRecord",
           "PatchPrediction", "Provenance", "patch_key"]
