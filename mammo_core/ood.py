"""Out-of-distribution warnings that travel with every answer: is this patch like the patches the
models were trained on?

Two checks, each with its stated rule:

(a) **Background share**: the share of the patch's pixels at or below the tissue threshold (the
    builders' 8-bit level 20 on the model input's [0, 1] scale, i.e. ``20 / 255``). Above
    :data:`BACKGROUND_LIMIT` the answer carries ``"N % of this patch is outside the breast; the
    models were not trained on such patches"``.
(b) **Feature distance**: the distance of the patch's pooled features (the ``pooled_features``
    layer a pooled member already computes) to the training patches': the features are
    standardised, projected on their first ``k`` principal components (whitened), and the
    distance is ``sqrt(sum z_k^2 + |residual|^2 / mean training |residual|^2)`` (a Mahalanobis
    distance in the principal subspace plus the normalised distance off it). The threshold is the
    99th percentile of the OUT-OF-FOLD training distances (reference fitted on the other folds'
    women, distance of the held-back fold), so ~1 % of training patches are warned by design.
    Above it: ``"unlike the training patches (another scanner or preparation?)"``.

The reference (mean, scale, components) is an ``.npz`` of plain arrays in the ensemble bundle
(loaded with ``allow_pickle=False``, hashed by the card and the manifest); what it is and its
threshold live in the ensemble's typed spec (:class:`OodSpec`). No TensorFlow here: the
features come from the caller. Research use only — not a medical device.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core.atomic import atomic_path
from mammo_core.errors import BundleError
from mammo_core.predictions import OodCheck
from mammo_core.protocol import TISSUE_LEVEL, TISSUE_LEVEL_8BIT

#: Background share above which an answer is warned (the builders keep lesion windows with at
#: least 50 % tissue and baseline windows with at least 90 %; most training patches have none).
BACKGROUND_LIMIT = 0.10

FEATURE_PERCENTILE = 99.0
COMPONENTS = 32
REFERENCE_FILE = "ood_reference.npz"
FEATURE_LAYER = "pooled_features"
BACKGROUND_RULE = (f"share of the patch at or below the tissue threshold (8-bit level {TISSUE_LEVEL_8BIT}); "
                   f"warned above {100 * BACKGROUND_LIMIT:.0f} %")
FEATURE_RULE = ("distance of the patch's pooled features to the training patches' (standardised, "
                "whitened principal components plus the normalised residual); warned above the "
                "99th percentile of the out-of-fold training distances")
UNLIKE_TEXT = "unlike the training patches (another scanner or preparation?)"


def background_text(share: float) -> str:
    return (f"{100 * share:.0f} % of this patch is outside the breast; the models were not trained "
            "on such patches")


def background_share(x: np.ndarray) -> np.ndarray:
    """(N,) share of pixels at or below the tissue threshold of model inputs ``x`` (N, 150, 150[, 1])
    in [0, 1] (scaled by the true bit depth, :func:`mammo_core.io.to_model_input`)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    flat = x.reshape(len(x), -1)
    return (flat <= TISSUE_LEVEL).mean(axis=1).astype(np.float64)


@dataclass(frozen=True)
class FeatureReference:
    """The training patches' pooled features, summarised (plain arrays)."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), rows orthonormal
    sd: np.ndarray  # (k,) the training scores' standard deviations
    residual: float  # mean squared residual norm of the training patches

    def distance(self, feats: np.ndarray) -> np.ndarray:
        f = (np.asarray(feats, dtype=np.float64) - self.mean) / self.scale
        z = f @ self.components.T
        r = f - z @ self.components
        return np.sqrt(np.sum((z / self.sd) ** 2, axis=1) + np.sum(r * r, axis=1) / self.residual)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mean=self.mean, scale=self.scale, components=self.components, sd=self.sd,
                     residual=np.array(self.residual))

    @classmethod
    def load(cls, path: str | Path) -> FeatureReference:
        try:
            with np.load(path, allow_pickle=False) as z:
                ref = cls(z["mean"].astype(np.float64), z["scale"].astype(np.float64),
                          z["components"].astype(np.float64), z["sd"].astype(np.float64),
                          float(z["residual"]))
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"unreadable feature reference: {type(exc).__name__}: {exc}", path) from None
        d = ref.mean.shape
        if (ref.scale.shape != d or ref.components.ndim != 2 or ref.components.shape[1:] != d
                or ref.sd.shape != ref.components.shape[:1] or not ref.residual > 0
                or not np.all(ref.scale > 0) or not np.all(ref.sd > 0)):
            raise BundleError("feature reference arrays do not fit together", path)
        return ref


def fit_reference(feats: np.ndarray, k: int = COMPONENTS) -> FeatureReference:
    feats = np.asarray(feats, dtype=np.float64)
    mean = feats.mean(axis=0)
    scale = feats.std(axis=0)
    scale = np.where(scale > 1e-8 * max(float(scale.max()), 1e-30), scale, 1.0)
    f = (feats - mean) / scale
    k = max(1, min(k, len(f) - 1, f.shape[1]))
    vt = np.linalg.svd(f, full_matrices=False)[2]
    comps = vt[:k]
    z = f @ comps.T
    sd = np.maximum(z.std(axis=0), 1e-8)
    r = f - z @ comps
    res = float(np.mean(np.sum(r * r, axis=1)))
    return FeatureReference(mean, scale, comps, sd, res if res > 0 else 1.0)


def out_of_fold_distances(feats: np.ndarray, fold: np.ndarray, k: int = COMPONENTS) -> np.ndarray:
    """Each patch's distance to a reference fitted on the OTHER folds (women grouped by fold)."""
    feats = np.asarray(feats, dtype=np.float64)
    fold = np.asarray(fold)
    out = np.empty(len(feats))
    for f in np.unique(fold):
        held = fold == f
        out[held] = fit_reference(feats[~held], k).distance(feats[held])
    return out


@dataclass(frozen=True)
class OodSpec:
    """What the ensemble's OOD checks are (in ``ensemble.json``)."""

    background_limit: float
    feature_member: str | None = None  # the member whose ``feature_layer`` is summarised
    feature_layer: str = FEATURE_LAYER
    reference_file: str | None = None  # in the ensemble bundle, hashed by its card
    threshold: float | None = None  # feature distance above which a patch is warned
    percentile: float = FEATURE_PERCENTILE
    components: int = COMPONENTS
    how: str = ""
    background_rule: str = BACKGROUND_RULE
    feature_rule: str = FEATURE_RULE

    def __post_init__(self) -> None:
        if not (isinstance(self.background_limit, (int, float)) and 0.0 <= self.background_limit <= 1.0):
            raise BundleError(f"OOD background limit {self.background_limit!r} must be in [0, 1]")
        if self.threshold is not None and not (np.isfinite(self.threshold) and self.threshold > 0):
            raise BundleError(f"OOD feature threshold {self.threshold!r} must be a number > 0")
        if (self.feature_member is None) != (self.reference_file is None) or \
                (self.reference_file is None) != (self.threshold is None):
            raise BundleError("OOD spec: feature_member, reference_file and threshold go together")
        if self.reference_file is not None and (Path(self.reference_file).name != self.reference_file):
            raise BundleError(f"OOD reference file {self.reference_file!r} must be a plain file name")

    def to_dict(self) -> dict[str, Any]:
        return {"background_limit": float(self.background_limit), "feature_member": self.feature_member,
                "feature_layer": self.feature_layer, "reference_file": self.reference_file,
                "threshold": self.threshold, "percentile": float(self.percentile),
                "components": int(self.components), "how": self.how,
                "background_rule": self.background_rule, "feature_rule": self.feature_rule}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OodSpec:
        if not isinstance(d, Mapping):
            raise BundleError("'ood' must be an object")
        try:
            thr = d["threshold"]
            return cls(background_limit=float(d["background_limit"]),
                       feature_member=None if d["feature_member"] is None else str(d["feature_member"]),
                       feature_layer=str(d["feature_layer"]),
                       reference_file=None if d["reference_file"] is None else str(d["reference_file"]),
                       threshold=None if thr is None else float(thr), percentile=float(d["percentile"]),
                       components=int(d["components"]), how=str(d["how"]),
                       background_rule=str(d["background_rule"]), feature_rule=str(d["feature_rule"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed OOD spec: {type(exc).__name__}: {exc}") from None


def checks(spec: OodSpec | None, background: Sequence[float] | np.ndarray,
           distance: Sequence[float] | np.ndarray | None
           ) -> list[OodCheck]:
    """The per-patch checks from the measured background shares and feature distances."""
    limit = BACKGROUND_LIMIT if spec is None else spec.background_limit
    thr = None if spec is None else spec.threshold
    out = []
    for i, b in enumerate(background):
        d = None if distance is None else float(distance[i])
        w = []
        if b > limit:
            w.append(background_text(float(b)))
        if d is not None and thr is not None and d > thr:
            w.append(UNLIKE_TEXT)
        out.append(OodCheck(float(b), d, tuple(w)))
    return out
