"""Test-time augmentation: the 8 dihedral views of a square patch (4 rotations by 90 degrees,
each with and without a left-right flip) and the mean of a model's probabilities over them.

No TensorFlow here: ``predict`` is any callable ``(N, H, W, C) -> (N, K)``.
Research use only - not a medical device.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

N_VIEWS = 8
TTA_MODES = ("none", "dihedral8")


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` (0..7) of a batch ``(N, H, W[, C])``: rotation by ``k % 4`` quarter turns,
    then a left-right flip when ``k >= 4``. View 0 is ``x`` itself."""
    if not 0 <= int(k) < N_VIEWS:
        raise ValueError(f"dihedral view must be 0..7, got {k}")
    v = np.rot90(x, int(k) % 4, axes=(1, 2))
    if k >= 4:
        v = v[:, :, ::-1]
    return np.ascontiguousarray(v)


def check_tta(mode: str | None) -> str:
    mode = "none" if mode in (None, "", False) else str(mode)
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {', '.join(TTA_MODES)}")
    return mode


def predict_tta(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, mode: str = "dihedral8") -> np.ndarray:
    """``predict(x)`` (mode ``none``) or the mean of ``predict`` over the 8 dihedral views."""
    if check_tta(mode) == "none":
        return np.asarray(predict(x), dtype=np.float64)
    return np.mean([np.asarray(predict(dihedral(x, k)), dtype=np.float64) for k in range(N_VIEWS)], axis=0)
