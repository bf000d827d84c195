"""The models' input: float32 (N, 150, 150, 1) in [0, 1], each patch scaled by its true bit
depth (``pixels / (2**bits - 1)``: a 12-bit DICOM by 4095, an 8-bit PNG by 255, a 16-bit
container by 65535 unless ``bits`` says it holds fewer); float pixels must already be finite
and in [0, 1].

Research use only — not a medical device.
"""
from __future__ import annotations

import numpy as np

from mammo_core.contract import PATCH_SHAPE
from mammo_core.errors import MammoError
from mammo_core.io.image import check_bits
from mammo_core.io.patch import Patch


def scale_to_unit(images: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Intensities to float32 in [0, 1] by bit depth: ``pixels / (2**bits - 1)``, ``bits``
    defaulting to the container's (uint16 / 65535, uint8 / 255); a 12-bit image passes
    ``bits=12`` (/ 4095). Float must already be finite and in [0, 1]."""
    a = np.asarray(images)
    if a.dtype in (np.uint8, np.uint16):
        container = a.dtype.itemsize * 8
        depth = container if bits is None else check_bits(bits)
        depth = min(depth, container)
        top = (1 << depth) - 1
        if depth < container and a.size and int(a.max()) > top:
            raise MammoError(f"pixel value {int(a.max())} does not fit {depth} bits")
        return a.astype(np.float32) / np.float32(top)
    if a.dtype.kind == "f":
        out = a.astype(np.float32)
        if out.size and (not np.isfinite(out).all() or out.min() < 0.0 or out.max() > 1.0):
            raise MammoError("float pixels must be finite and in [0, 1]")
        return out
    raise MammoError(f"{a.dtype} pixels are not supported: expected uint8, uint16 or float in [0, 1]")


def to_model_input(pixels, bits: int | None = None) -> np.ndarray:
    """The models' input: float32 (N, 150, 150, 1) in [0, 1].

    Accepts one patch (150, 150), a stack (N, 150, 150) or (N, 150, 150, 1) (scaled by
    ``bits``, default the dtype's), a ``Patch`` or a sequence of ``Patch`` (each scaled by its
    own ``bits``: a 12-bit DICOM by 4095, an 8-bit PNG by 255).
    """
    if isinstance(pixels, Patch):
        pixels = [pixels]
    if isinstance(pixels, (list, tuple)):
        if not pixels:
            return np.zeros((0, *PATCH_SHAPE, 1), dtype=np.float32)
        if all(isinstance(p, Patch) for p in pixels):
            parts = []
            for p in pixels:
                try:
                    parts.append(to_model_input(p.pixels, bits=p.bits))
                except MammoError as err:
                    where = p.source if p.index is None else f"{p.source}[{p.index}]"
                    raise MammoError(err.problem, where) from None
            return np.concatenate(parts)
        pixels = np.asarray(pixels)
    a = np.asarray(pixels)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 3 or a.shape[1:] != PATCH_SHAPE:
        raise MammoError(
            f"model input must be (150, 150), (N, 150, 150) or (N, 150, 150, 1), got {np.shape(pixels)}")
    return np.ascontiguousarray(scale_to_unit(a, bits)[..., None])
