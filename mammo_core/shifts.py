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

Research use only — not a medical device.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NOISE_SNR_DB = 20.0
EDGE_FRACTION = 0.2


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


def _noise(x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sigma = x.std(axis=(1, 2), keepdims=True) / (10 ** (NOISE_SNR_DB / 20.0))
    return x + sigma * rng.standard_normal(x.shape)


def _blur(x: np.ndarray, seed: int, sigma: float = 1.0) -> np.ndarray:
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


def _rescale(factor: float):
    def apply(x: np.ndarray, seed: int) -> np.ndarray:
        import cv2

        n, h, w = x.shape
        out = np.empty_like(x)
        for i in range(n):
            img = cv2.resize(x[i].astype(np.float32), None, fx=factor, fy=factor,
                             interpolation=cv2.INTER_LINEAR)
            if factor >= 1:
                t, lft = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
                out[i] = img[t:t + h, lft:lft + w]
            else:
                ph, pw = h - img.shape[0], w - img.shape[1]
                out[i] = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="reflect")
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
