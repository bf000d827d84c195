"""Simulated acquisition changes of patches: the fixed, documented set of shifts that the
acquisition-shift bench (``benchmarks/shift_bench.py``) scores the models under, reusable by any
other bench or test.

Every shift maps model inputs ``x`` (N, 150, 150[, 1]) float in [0, 1] (scaled by the true bit
depth, :func:`mammo_core.io.to_model_input`) to shifted inputs of the same shape in [0, 1].
Deterministic: the noise is drawn from ``numpy.random.default_rng(seed)``.

=================  ==========================================================================
name               what
=================  ==========================================================================
``none``           unchanged (the reference row)
``gamma_0.5``      ``x ** 0.5`` (brighter mid-tones: another display / log-to-linear mapping)
``gamma_2``        ``x ** 2`` (darker mid-tones)
``contrast_0.6``   ``m + 0.6 (x - m)``, ``m`` the patch's mean (a flatter digitiser curve)
``noise_snr20``    additive Gaussian noise, SNR 20 dB against the patch's own intensity
                   spread: ``sigma = std(x) / 10`` (quantum / electronic noise)
``blur_1px``       Gaussian blur, sigma 1 px (another focal spot / resampling)
``bits_10``        re-quantised to 10 bits: ``round(x * 1023) / 1023``
``bits_12``        re-quantised to 12 bits
``film_edge``      the outer 20 % of columns (one side, alternating) set to 0 (film background
                   beside the breast, as at the skin line)
``scale_0.8``      content shrunk to 0.8 x about the centre (reflect-padded to 150 x 150)
``scale_1.25``     content magnified 1.25 x about the centre (cropped to 150 x 150)
=================  ==========================================================================

**Random acquisition changes for training** (:func:`random_acquisition`, the pooled members'
``--train-augment acquisition``): the same functions with parameters drawn per patch from
``numpy.random.default_rng(seed)``, every family at once, in this order: rescale (log-uniform
0.8-1.25), Gaussian blur (sigma uniform 0-1.2 px), additive Gaussian noise (SNR uniform 15-30 dB,
``sigma = std(x) / 10 ** (snr / 20)``), clip, contrast (factor uniform 0.6-1 about the patch
mean), gamma (log-uniform 0.5-2), clip. The bench's gamma 0.5 / 2, contrast x0.6, noise SNR 20 dB,
blur 1 px and rescale 0.8 / 1.25 are points INSIDE these ranges (the first, third and last at
their ends): on a member trained with this augmentation the bench measures robustness to the
families it was trained on, not to unseen changes. Re-quantisation is not in the augmentation
(10 and 12 bits move a [0, 1] patch by at most 1/2046), and ``film_edge`` is not: it stays an
unseen shift.
``--train-augment scale`` (``random_acquisition(kind="scale")``, :data:`AUGMENT_FAMILIES`) draws
the same rescale with the same seed and leaves every other family as it is.

Research use only — not a medical device.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mammo_core.errors import MammoError

NOISE_SNR_DB = 20.0
EDGE_FRACTION = 0.2
# the random acquisition change of training views: (low, high, "log" | "lin") per parameter
ACQUISITION_RANGES: dict[str, tuple[float, float, str]] = {
    "scale": (0.8, 1.25, "log"),
    "blur_sigma": (0.0, 1.2, "lin"),
    "snr_db": (15.0, 30.0, "lin"),
    "contrast": (0.6, 1.0, "lin"),
    "gamma": (0.5, 2.0, "log"),
}
ACQUISITION_ORDER = ("scale", "blur_sigma", "snr_db", "contrast", "gamma")
# the training augmentations: which of the families above each one changes (the others left as they are)
AUGMENT_FAMILIES: dict[str, tuple[str, ...]] = {"acquisition": ACQUISITION_ORDER, "scale": ("scale",)}
AUGMENTS = ("none", *AUGMENT_FAMILIES)
# the value of each family that leaves a patch unchanged (a family an augmentation does not draw)
_IDENTITY = {"scale": 1.0, "blur_sigma": 0.0, "snr_db": np.inf, "contrast": 1.0, "gamma": 1.0}


@dataclass(frozen=True)
class Shift:
    name: str
    description: str
    apply: Callable[[np.ndarray, int], np.ndarray]  # (x (N, H, W), seed) -> shifted


def _gamma(g: float):
    return lambda x, seed: np.power(x, g)


def _contrast(x: np.ndarray, seed: int, factor: float = 0.6) -> np.ndarray:
    m = x.mean(axis=(1, 2), keepdims=True)
    return m + factor * (x - m)


def _noise(x: np.ndarray, seed: int, snr_db: float = NOISE_SNR_DB) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sigma = x.std(axis=(1, 2), keepdims=True) / (10 ** (snr_db / 20.0))
    return x + sigma * rng.standard_normal(x.shape)


def _blur(x: np.ndarray, seed: int, sigma: float = 1.0) -> np.ndarray:
    if sigma <= 1e-3:
        return x
    r = int(np.ceil(3 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, ((0, 0), (r, r), (r, r)), mode="reflect")
    rows = sum(k[i] * pad[:, i:i + x.shape[1], :] for i in range(len(k)))
    return sum(k[i] * rows[:, :, i:i + x.shape[2]] for i in range(len(k)))


def _bits(b: int):
    top = (1 << b) - 1
    return lambda x, seed: np.round(x * top) / top


def _film_edge(x: np.ndarray, seed: int) -> np.ndarray:
    out = x.copy()
    w = round(EDGE_FRACTION * x.shape[2])
    out[0::2, :, :w] = 0.0
    out[1::2, :, x.shape[2] - w:] = 0.0
    return out


def _rescale_one(img: np.ndarray, factor: float) -> np.ndarray:
    """One (H, W) patch's content rescaled ``factor`` x about the centre, back to (H, W)."""
    import cv2

    h, w = img.shape
    if abs(factor - 1.0) < 1e-6:
        return img
    r = cv2.resize(img.astype(np.float32), None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    if r.shape[0] >= h and r.shape[1] >= w:
        t, lft = (r.shape[0] - h) // 2, (r.shape[1] - w) // 2
        return r[t:t + h, lft:lft + w]
    ph, pw = max(0, h - r.shape[0]), max(0, w - r.shape[1])
    r = np.pad(r, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="reflect")
    return r[:h, :w]


def _rescale(factor: float):
    def apply(x: np.ndarray, seed: int) -> np.ndarray:
        out = np.empty_like(x)
        for i in range(len(x)):
            out[i] = _rescale_one(x[i], factor)
        return out
    return apply


SHIFTS: tuple[Shift, ...] = (
    Shift("none", "unchanged", lambda x, seed: x),
    Shift("gamma_0.5", "gamma 0.5", _gamma(0.5)),
    Shift("gamma_2", "gamma 2", _gamma(2.0)),
    Shift("contrast_0.6", "contrast x0.6 about the patch mean", _contrast),
    Shift("noise_snr20", f"additive Gaussian noise, SNR {NOISE_SNR_DB:g} dB (sigma = std / 10)", _noise),
    Shift("blur_1px", "Gaussian blur sigma 1 px", _blur),
    Shift("bits_10", "re-quantised to 10 bits", _bits(10)),
    Shift("bits_12", "re-quantised to 12 bits", _bits(12)),
    Shift("film_edge", f"outer {100 * EDGE_FRACTION:.0f} % of columns set to film background (0)", _film_edge),
    Shift("scale_0.8", "content rescaled 0.8x (reflect-padded)", _rescale(0.8)),
    Shift("scale_1.25", "content rescaled 1.25x (centre crop)", _rescale(1.25)),
)
SHIFT_NAMES = tuple(s.name for s in SHIFTS)


def get_shift(name: str) -> Shift:
    for s in SHIFTS:
        if s.name == name:
            return s
    raise KeyError(f"unknown shift {name!r}; choose from {', '.join(SHIFT_NAMES)}")


def apply_shift(name: str, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``x`` under the shift ``name`` (float32, same shape, clipped to [0, 1])."""
    x = np.asarray(x, dtype=np.float64)
    chan = x.ndim == 4
    if chan:
        x = x[..., 0]
    if x.ndim == 2:
        return apply_shift(name, x[None], seed)[0]
    y = np.clip(get_shift(name).apply(x, seed), 0.0, 1.0).astype(np.float32)
    return y[..., None] if chan else y


def acquisition_key(kind: str = "acquisition") -> str:
    """A short text naming the random acquisition change's ranges and order (for cache keys:
    changed ranges never reuse features of the old ones); ``kind`` other than ``acquisition``
    names the families it draws."""
    key = ";".join(f"{k}={lo:g}-{hi:g}{spacing}" for k, (lo, hi, spacing) in
                   ((k, ACQUISITION_RANGES[k]) for k in ACQUISITION_ORDER))
    return key if kind == "acquisition" else f"{key}|only={','.join(AUGMENT_FAMILIES[kind])}"


def draw_acquisition(n: int, seed: int) -> dict[str, np.ndarray]:
    """``{parameter: (n,)}``: one random acquisition change per patch (:data:`ACQUISITION_RANGES`;
    "log" ranges log-uniform), from ``numpy.random.default_rng([seed, 24])``, plus ``noise_seed``."""
    rng = np.random.default_rng([int(seed), 24])
    out: dict[str, np.ndarray] = {}
    for k in ACQUISITION_ORDER:
        lo, hi, kind = ACQUISITION_RANGES[k]
        u = rng.random(int(n))
        out[k] = np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))) if kind == "log" else lo + u * (hi - lo)
    out["noise_seed"] = rng.integers(0, 2 ** 31 - 1, int(n))
    return out


def random_acquisition(x: np.ndarray, seed: int, kind: str = "acquisition"
                       ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(x changed, parameters)``: each patch of ``x`` ((N, H, W[, 1]) model inputs in [0, 1],
    scaled by the true bit depth) under its own random acquisition change (module docstring),
    built from the bench's shift functions. Deterministic per ``seed``; float32, same shape.
    ``kind`` (:data:`AUGMENT_FAMILIES`): ``acquisition`` draws every family; ``scale`` only the
    rescale (the same draw as ``acquisition`` with the same seed), every other family left as it is."""
    if kind not in AUGMENT_FAMILIES:
        raise MammoError(f"unknown training augmentation {kind!r}; choose from {', '.join(AUGMENT_FAMILIES)}")
    x = _check_unit(x)
    chan = x.ndim == 4
    x3 = x[..., 0] if chan else x
    if x3.ndim != 3:
        raise MammoError(f"random_acquisition needs patches (N, H, W[, 1]), got shape {np.shape(x)}")
    prm = draw_acquisition(len(x3), seed)
    for k in ACQUISITION_ORDER:
        if k not in AUGMENT_FAMILIES[kind]:
            prm[k] = np.full(len(x3), _IDENTITY[k])
    out = np.empty(x3.shape, np.float32)
    for i in range(len(x3)):
        p = _rescale_one(x3[i], float(prm["scale"][i]))[None].astype(np.float64)
        if prm["blur_sigma"][i] > 0:
            p = _blur(p, 0, float(prm["blur_sigma"][i]))
        if np.isfinite(prm["snr_db"][i]):
            p = np.clip(_noise(p, int(prm["noise_seed"][i]), float(prm["snr_db"][i])), 0.0, 1.0)
        if prm["contrast"][i] != 1.0:
            p = _contrast(p, 0, float(prm["contrast"][i]))
        if prm["gamma"][i] != 1.0:
            p = np.power(np.clip(p, 0.0, 1.0), float(prm["gamma"][i]))
        out[i] = np.clip(p[0], 0.0, 1.0)
    return (out[..., None] if chan else out), prm


def _check_unit(x) -> np.ndarray:
    """``x`` as float64 model inputs in [0, 1]; raw integer pixels (16-bit, say) are refused."""
    a = np.asarray(x)
    if a.dtype.kind not in "f":
        raise MammoError(f"acquisition changes need model inputs in [0, 1] (io.to_model_input), got {a.dtype} "
                         "pixels")
    a = a.astype(np.float64)
    if a.size and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
        raise MammoError("acquisition changes need model inputs in [0, 1] (io.to_model_input), got values "
                         "outside it")
    return a
