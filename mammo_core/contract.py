"""The model input contract, defined once: every patch is ``PATCH_SIZE`` x ``PATCH_SIZE``
pixels, and every bundled model takes ``(N, *INPUT_SHAPE)`` float32 intensities in [0, 1]
(scaled by the image's true bit depth) and does its own normalisation inside the graph."""
from __future__ import annotations

PATCH_SIZE = 150
PATCH_SHAPE: tuple[int, int] = (PATCH_SIZE, PATCH_SIZE)
INPUT_SHAPE: tuple[int, int, int] = (PATCH_SIZE, PATCH_SIZE, 1)

__all__ = ["INPUT_SHAPE", "PATCH_SHAPE", "PATCH_SIZE"]
