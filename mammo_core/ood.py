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
(c) **Acquisition check**: cheap statistics of the patch's tissue (:func:`acquisition_stats`:
    noise level from a robust high-pass estimate, sharpness as fine- over mid-band energy,
    pixel-to-pixel correlation of the fine band, tissue contrast spread, tissue brightness),
    each with a two-sided limit set on the training patches. Per statistic a robust score
    (distance from the training median in units of the distance from the median to the 1st /
    99th percentile, on the side the patch lies); the patch's score is the largest of them and
    the threshold is the 99th percentile of the OUT-OF-FOLD training scores (limits fitted on the
    other folds' women), so ~1 % of training patches are warned by design, whatever the number
    of statistics. The words say what was found: ``"noise level above that of 99.9 % of training
    patches: another scanner or preparation?"``. Why: the feature distance (b) does not rise
    under blur, noise, contrast x0.6 or rescale 0.8, although the AUC falls (docs/trust.md).

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
ACQ_PERCENTILE = 99.0
#: (name, words) of the acquisition statistics, in the order of :func:`acquisition_stats`
ACQ_STATS: tuple[tuple[str, str], ...] = (
    ("noise", "noise level"),
    ("sharpness", "sharpness (fine-detail energy)"),
    ("correlation", "pixel-to-pixel correlation of fine detail"),
    ("contrast", "tissue contrast spread"),
    ("brightness", "tissue brightness"),
)
ACQ_RULE = ("statistics of the patch's tissue (noise level from a robust high-pass estimate, sharpness, "
            "pixel-to-pixel correlation of fine detail, contrast spread, brightness), each against a "
            "two-sided limit from the training patches; warned beyond the 99th percentile of the "
            "out-of-fold training scores (~1 % of training patches by design)")
_ACQ_MIN_TISSUE = 50  # fewer tissue pixels: no statistics (the background check warns anyway)
#: 3 x 3 high-pass of Immerkaer (1996): zero on any locally linear image; its response to white
#: noise of sd s has sd 6 s; the mean of the lower half of |N(0, 1)| is 0.3245 (robust to edges)
_HP = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_HALF_MEAN = 0.3245


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


def acquisition_stats(x: np.ndarray) -> np.ndarray:
    """(N, 5) statistics of the tissue of model inputs ``x`` (N, 150, 150[, 1]) in [0, 1], in the
    order of :data:`ACQ_STATS`: log noise sd (Immerkaer high-pass, mean of the lower half of
    |response|), log(mean |x - G1 x| / mean |G1 x - G2 x|) (G_s a Gaussian blur of sd s px),
    the lag-1 autocorrelation of the fine band ``x - G1 x``, log(p95 - p5) and p50 of the tissue
    intensities. Measured on tissue eroded by 3 px (no film edge, no frame) where that leaves
    enough pixels; NaN rows for patches with under 50 tissue pixels."""
    import cv2

    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        x = x[..., 0]
    if x.ndim == 2:
        x = x[None]
    out = np.full((len(x), len(ACQ_STATS)), np.nan)
    kern = np.ones((7, 7), np.uint8)
    for i, im in enumerate(x):
        t = im > np.float32(TISSUE_LEVEL)
        if t.sum() < _ACQ_MIN_TISSUE:
            continue
        inner = cv2.erode(t.astype(np.uint8), kern, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
        m = inner if inner.sum() >= 4 * _ACQ_MIN_TISSUE else t
        hp = np.abs(cv2.filter2D(im, -1, _HP, borderType=cv2.BORDER_REFLECT)[m])
        half = np.partition(hp, len(hp) // 2)[: max(1, len(hp) // 2)]
        noise = float(half.mean()) / (6.0 * _HALF_MEAN)
        g1 = cv2.GaussianBlur(im, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
        g2 = cv2.GaussianBlur(im, (0, 0), 2.0, borderType=cv2.BORDER_REFLECT)
        fine = im - g1
        e_fine, e_mid = float(np.abs(fine[m]).mean()), float(np.abs((g1 - g2)[m]).mean())
        f = np.where(m, fine - fine[m].mean(), 0.0)
        var = float((f[m] ** 2).mean())
        pairs = (m[:, 1:] & m[:, :-1]).sum() + (m[1:] & m[:-1]).sum()
        corr = float((f[:, 1:] * f[:, :-1]).sum() + (f[1:] * f[:-1]).sum()) / max(pairs, 1) / var \
            if var > 0 else 0.0
        v = im[t]
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        out[i] = (np.log(noise + 1e-6), np.log((e_fine + 1e-9) / (e_mid + 1e-9)), corr,
                  np.log(p95 - p5 + 1e-6), p50)
    return out


@dataclass(frozen=True)
class AcquisitionLimits:
    """Two-sided limits of the acquisition statistics (plain arrays, in the OOD reference)."""

    low: np.ndarray  # (S,) below: warned
    high: np.ndarray  # (S,) above: warned
    inside_low: np.ndarray  # (S,) share of the training patches above ``low``
    inside_high: np.ndarray  # (S,) share of the training patches below ``high``
    threshold: float  # the robust score threshold the limits come from

    def outside(self, stats: np.ndarray) -> np.ndarray:
        """(N, S) -1 below the low limit, +1 above the high one, 0 inside (NaN: inside)."""
        s = np.asarray(stats, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return np.where(s > self.high, 1, np.where(s < self.low, -1, 0))

    def warned(self, stats: np.ndarray) -> np.ndarray:
        return np.any(self.outside(stats) != 0, axis=1)

    def texts(self, stats_row: np.ndarray) -> list[str]:
        """What was found, one line per statistic outside its limits."""
        out = []
        for j, o in enumerate(self.outside(np.asarray(stats_row)[None])[0]):
            if o == 0:
                continue
            share = self.inside_high[j] if o > 0 else self.inside_low[j]
            out.append(acquisition_text(ACQ_STATS[j][1], o > 0, float(share)))
        return out


def acquisition_text(what: str, high: bool, share: float) -> str:
    pct = f"{100 * share:.1f}".rstrip("0").rstrip(".")
    return (f"{what} {'above' if high else 'below'} that of {pct} % of training patches: "
            "another scanner or preparation?")


def _acq_params(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(stats, dtype=np.float64)
    s = s[np.all(np.isfinite(s), axis=1)]
    lo, med, hi = np.percentile(s, [100 - ACQ_PERCENTILE, 50, ACQ_PERCENTILE], axis=0)
    tiny = 1e-9 + 1e-6 * np.abs(med)
    return med, np.maximum(med - lo, tiny), np.maximum(hi - med, tiny)


def acquisition_scores(fit_stats: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """(N,) the largest robust deviation of each row of ``stats`` from ``fit_stats`` (0 for NaN
    rows): (s - median) / (p99 - median) above the median, (median - s) / (median - p1) below."""
    med, down, up = _acq_params(fit_stats)
    s = np.asarray(stats, dtype=np.float64)
    z = np.maximum((s - med) / up, (med - s) / down)
    z = np.where(np.isfinite(z), z, 0.0)
    return z.max(axis=1)


def out_of_fold_acquisition_scores(stats: np.ndarray, fold: np.ndarray) -> np.ndarray:
    fold = np.asarray(fold)
    out = np.empty(len(stats))
    for f in np.unique(fold):
        held = fold == f
        out[held] = acquisition_scores(stats[~held], stats[held])
    return out


def fit_acquisition(stats: np.ndarray, threshold: float) -> AcquisitionLimits:
    """The limits at robust score ``threshold`` from the training patches' statistics."""
    med, down, up = _acq_params(stats)
    low, high = med - threshold * down, med + threshold * up
    s = np.asarray(stats, dtype=np.float64)
    s = s[np.all(np.isfinite(s), axis=1)]
    return AcquisitionLimits(low, high, (s > low).mean(axis=0), (s < high).mean(axis=0), float(threshold))


@dataclass(frozen=True)
class FeatureReference:
    """The training patches' pooled features, summarised (plain arrays)."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), rows orthonormal
    sd: np.ndarray  # (k,) the training scores' standard deviations
    residual: float  # mean squared residual norm of the training patches
    acquisition: AcquisitionLimits | None = None  # None: a reference written before check (c)

    def distance(self, feats: np.ndarray) -> np.ndarray:
        f = (np.asarray(feats, dtype=np.float64) - self.mean) / self.scale
        z = f @ self.components.T
        r = f - z @ self.components
        return np.sqrt(np.sum((z / self.sd) ** 2, axis=1) + np.sum(r * r, axis=1) / self.residual)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            arrays: dict[str, np.ndarray] = {
                "mean": self.mean, "scale": self.scale, "components": self.components, "sd": self.sd,
                "residual": np.array(self.residual)}
            if self.acquisition is not None:
                arrays.update({
                    "acq_stats": np.array([n for n, _ in ACQ_STATS]), "acq_low": self.acquisition.low,
                    "acq_high": self.acquisition.high, "acq_inside_low": self.acquisition.inside_low,
                    "acq_inside_high": self.acquisition.inside_high,
                    "acq_threshold": np.array(self.acquisition.threshold)})
            np.savez(fh, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> FeatureReference:
        try:
            with np.load(path, allow_pickle=False) as z:
                acq = None
                if "acq_stats" in z.files:  # written with check (c); older references lack it
                    if tuple(str(n) for n in z["acq_stats"]) != tuple(n for n, _ in ACQ_STATS):
                        raise BundleError(f"OOD reference has other acquisition statistics "
                                          f"({', '.join(map(str, z['acq_stats']))}) than this version", path)
                    acq = AcquisitionLimits(z["acq_low"].astype(np.float64), z["acq_high"].astype(np.float64),
                                            z["acq_inside_low"].astype(np.float64),
                                            z["acq_inside_high"].astype(np.float64), float(z["acq_threshold"]))
                    if any(a.shape != (len(ACQ_STATS),) for a in (acq.low, acq.high, acq.inside_low,
                                                                   acq.inside_high)):
                        raise BundleError("OOD reference acquisition limits have the wrong shape", path)
                ref = cls(z["mean"].astype(np.float64), z["scale"].astype(np.float64),
                          z["components"].astype(np.float64), z["sd"].astype(np.float64),
                          float(z["residual"]), acq)
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
    acquisition: bool = False  # the reference holds the acquisition limits of check (c)
    acquisition_rule: str = ""

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
        if self.acquisition and self.reference_file is None:
            raise BundleError("OOD spec: the acquisition check needs the reference file")

    def to_dict(self) -> dict[str, Any]:
        return {"background_limit": float(self.background_limit), "feature_member": self.feature_member,
                "feature_layer": self.feature_layer, "reference_file": self.reference_file,
                "threshold": self.threshold, "percentile": float(self.percentile),
                "components": int(self.components), "how": self.how,
                "background_rule": self.background_rule, "feature_rule": self.feature_rule,
                "acquisition": bool(self.acquisition), "acquisition_rule": self.acquisition_rule}

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
                       background_rule=str(d["background_rule"]), feature_rule=str(d["feature_rule"]),
                       # specs written before check (c) have neither key
                       acquisition=bool(d["acquisition"]) if "acquisition" in d else False,
                       acquisition_rule=str(d["acquisition_rule"]) if "acquisition_rule" in d else "")
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed OOD spec: {type(exc).__name__}: {exc}") from None


def checks(spec: OodSpec | None, background: Sequence[float] | np.ndarray,
           distance: Sequence[float] | np.ndarray | None,
           acquisition: tuple[AcquisitionLimits, np.ndarray] | None = None) -> list[OodCheck]:
    """The per-patch checks from the measured background shares, feature distances and
    (limits, (N, S) statistics) of the acquisition check."""
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
        if acquisition is not None:
            w.extend(acquisition[0].texts(acquisition[1][i]))
        out.append(OodCheck(float(b), d, tuple(w)))
    return out
