"""Pixels for the screen: window/level, invert, heatmap compositing, numpy -> QImage.

Everything here is plain numpy (fast enough to redo on every slider move for a 150 x 150
patch). Intensities are first scaled to [0, 1] exactly as the models see them
(``mammo_core.io.to_model_input``: uint16 / 65535, uint8 / 255), so "window" and "level" are
fractions of the full range of the file's bit depth. Heatmaps are coloured once, in the worker
that computed them (``mammo_core.explain.colorize``); blending with the windowed image happens
here, so the opacity slider and contrast controls never wait for a model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PyQt6.QtGui import QImage

from mammo_core.explain import colorize
from mammo_core.io import Patch, to_model_input


@dataclass(frozen=True)
class Window:
    """Display window on the [0, 1] intensity scale: ``center`` (level) and ``width``."""

    center: float = 0.5
    width: float = 1.0
    invert: bool = False

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2


def to_unit(pixels) -> np.ndarray:
    """One patch (a ``Patch``, scaled by its own bit depth, or (H, W) pixels in native dtype)
    -> float32 (H, W) in [0, 1], exactly as the models see it."""
    if not isinstance(pixels, Patch):
        pixels = np.asarray(pixels)
    return to_model_input(pixels)[0, ..., 0]


def auto_window(unit: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> Window:
    """A window spanning the patch's own intensity percentiles (robust to a few outliers)."""
    lo, hi = np.percentile(unit, [lo_pct, hi_pct])
    if hi - lo < 1e-6:  # flat patch: a small window around its value
        lo, hi = float(lo) - 0.01, float(hi) + 0.01
    return Window(center=float(lo + hi) / 2, width=float(hi - lo))


def apply_window(unit: np.ndarray, window: Window) -> np.ndarray:
    """float [0, 1] (H, W) -> uint8 (H, W) grey, clipped to the window (inverted if asked)."""
    width = max(float(window.width), 1e-6)
    scaled = (unit.astype(np.float32) - np.float32(window.low)) / np.float32(width)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    if window.invert:
        scaled = 1.0 - scaled
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def blend(grey: np.ndarray, heat_rgb: np.ndarray, alpha: float,
          mask: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend a coloured heatmap (H, W, 3) uint8 over a grey image (H, W) uint8; where
    ``mask`` (the tissue) is False the grey image shows uncoloured (background is not part of
    the map)."""
    if grey.shape != heat_rgb.shape[:2]:
        raise ValueError(f"image {grey.shape} and heatmap {heat_rgb.shape[:2]} differ in size")
    a = float(np.clip(alpha, 0.0, 1.0))
    base = grey.astype(np.float32)[..., None]
    out = base * (1.0 - a) + heat_rgb.astype(np.float32) * a
    if mask is not None:
        out = np.where(np.asarray(mask, dtype=bool)[..., None], out, base)
    return (out + 0.5).astype(np.uint8)


def colour_bar(width: int = 256, height: int = 12) -> np.ndarray:
    """The heatmaps' colour scale from 0 (left) to 1 (right) as uint8 RGB (height, width, 3),
    coloured by the same function as the maps (``mammo_core.explain.colorize``)."""
    row = colorize(np.linspace(0.0, 1.0, max(int(width), 2))[None, :])
    return np.repeat(row, max(int(height), 1), axis=0)


def to_qimage(arr: np.ndarray) -> QImage:
    """uint8 (H, W) grey or (H, W, 3) RGB -> an independent QImage (data copied)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {arr.dtype}")
    h, w = arr.shape[:2]
    if arr.ndim == 2:
        img = QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_Grayscale8)  # type: ignore[call-overload]
    elif arr.ndim == 3 and arr.shape[2] == 3:
        img = QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_RGB888)  # type: ignore[call-overload]
    else:
        raise ValueError(f"expected (H, W) or (H, W, 3), got {arr.shape}")
    return img.copy()  # detach from the numpy buffer


def qimage_to_array(img: QImage) -> np.ndarray:
    """QImage -> uint8 (H, W, 3) RGB copy (used by tests and the screenshot check)."""
    img = img.convertToFormat(QImage.Format.Format_RGB888)
    h, w = img.height(), img.width()
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    arr = np.frombuffer(ptr, np.uint8).reshape(h, img.bytesPerLine())[:, : w * 3]  # type: ignore[call-overload]
    return arr.reshape(h, w, 3).copy()


def thumbnail(pixels: np.ndarray, size: int = 56) -> QImage:
    """A small auto-contrast grey thumbnail of one patch."""
    from PyQt6.QtCore import Qt

    unit = to_unit(pixels)
    grey = apply_window(unit, auto_window(unit))
    return to_qimage(grey).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                  Qt.TransformationMode.SmoothTransformation)
