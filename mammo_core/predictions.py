"""What a prediction is, and how patches and heatmaps are named: the types the session, the
reports, the CLI and the viewer share (no TensorFlow, no Qt).

Research use only — not a medical device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

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
class PatchPrediction:
    """Every loaded model's output for one patch, and the ensemble's (five classes) if loaded.

    ``uncertainty`` is the ensemble members' disagreement (None without an ensemble of at least
    two members per factor); ``flagged`` is True when it exceeds the threshold fitted on
    validation data; ``entropy`` is the normalised entropy of the ensemble's distribution;
    ``bits`` the bit depth the patch's pixels were scaled by (``Patch.bits``).
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

    @property
    def key(self) -> str:
        return patch_key(self.source, self.index)

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


__all__ = ["ENSEMBLE", "HeatKey", "ModelOutput", "PatchPrediction", "patch_key"]
