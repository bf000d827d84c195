"""One image file at full size, whatever its format, and the rules that make it a patch.

``read_image(path)`` reads one file as a 2-D array of its native dtype: ``.npy`` (2-D or with
one trailing channel; never unpickled, :mod:`~mammo_core.io.npy`), PNG / TIFF / JPEG / PGM /
PNM 8- and 16-bit (:mod:`~mammo_core.io.raster`) and DICOM (:mod:`~mammo_core.io.dicom`).
``read_image_bits`` adds the bit depth the model input is scaled by, ``read_image_ref`` the
source's identifiers too. ``resize_patch`` brings an image to 150 x 150 with
``cv2.INTER_NEAREST``, as the dataset was cut; ``check_patch_size`` refuses an image far from
a patch (a whole mammogram: ``NotAPatchError``).

Research use only — not a medical device.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mammo_core.contract import PATCH_SHAPE, PATCH_SIZE
from mammo_core.errors import MammoError, NotAPatchError, PatchReadError
from mammo_core.io.dicom import DICOM_EXTENSIONS, dicom_read, has_dicom_preamble
from mammo_core.io.npy import NPY_EXTENSIONS, load_npy, npy_as_images
from mammo_core.io.patch import container_bits
from mammo_core.io.raster import CV2_EXTENSIONS, cv2_read
from mammo_core.io.source import SourceRef
from mammo_core.safeio import UnsafeFile, is_regular, missing_reason, open_regular

#: Extensions tried when reading a folder (plus extension-less files with the DICOM preamble).
READ_EXTENSIONS = NPY_EXTENSIONS | CV2_EXTENSIONS | DICOM_EXTENSIONS
#: A single image is read as a patch only when each side is within this factor of 150 px.
PATCH_SIZE_FACTOR = 4
#: ``.npy`` files above this many bytes are memory-mapped (stacks: rows load lazily).
MMAP_MIN_BYTES = 16 << 20


class Pixels(NamedTuple):
    """What one file holds: an image (H, W) or a stack (N, H, W), the bit depth to scale it
    by (``Patch.bits``) and, for DICOM, the source's identifiers (None for other files)."""

    array: np.ndarray
    stack: bool
    bits: int | None
    ref: SourceRef | None


def file_kind(path: Path) -> str | None:
    """``"npy"``, ``"cv2"`` or ``"dicom"`` from the extension (or the DICOM preamble); None
    for anything else."""
    ext = path.suffix.lower()
    if ext in NPY_EXTENSIONS:
        return "npy"
    if ext in CV2_EXTENSIONS:
        return "cv2"
    if ext in DICOM_EXTENSIONS:
        return "dicom"
    if has_dicom_preamble(path):
        return "dicom"
    return None


def check_bits(bits: int | None) -> int | None:
    """``bits`` (1-16) as an int, or None; a one-line error for anything else."""
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= 16:
        raise MammoError(f"bits must be an integer from 1 to 16, got {bits!r}")
    return int(bits)


def _apply_bits(pixels: np.ndarray, bits: int | None, path: Path) -> int | None:
    """The bit depth to scale a non-DICOM image by: its container's (8 / 16) unless ``bits``
    says a 16-bit container holds fewer; then no pixel may exceed ``2**bits - 1``."""
    container = container_bits(pixels.dtype)
    if bits is None or container is None or container <= 8:
        return container
    top = (1 << bits) - 1
    hi = int(pixels.max()) if pixels.size else 0
    if hi > top:
        raise PatchReadError(f"pixel value {hi} does not fit {bits} bits (top {top}); "
                             f"is --bits {bits} right for this file?", path)
    return bits


def read_pixels(path: Path, bits: int | None = None) -> Pixels:
    """Read a file as an image or a stack (:class:`Pixels`); ``PatchReadError`` otherwise."""
    if not os.path.exists(path):
        raise PatchReadError(missing_reason(path), path)
    if path.is_dir():
        raise PatchReadError("is a folder, not an image file (use read_patches)", path)
    if not is_regular(path):
        try:  # says what it is (FIFO, device...) without ever blocking on it
            fd, _ = open_regular(path)
            os.close(fd)
        except UnsafeFile as exc:
            raise PatchReadError(str(exc), path) from None
    kind = file_kind(path)
    if kind is None:
        raise PatchReadError(
            "unknown file type: expected " + ", ".join(sorted(READ_EXTENSIONS))
            + " or DICOM", path)
    try:
        if kind == "npy":
            big = path.stat().st_size > MMAP_MIN_BYTES  # stacks: memory-map, load rows lazily
            pixels, stack = npy_as_images(load_npy(path, PatchReadError, mmap=big), path, PatchReadError)
            return Pixels(pixels, stack, _apply_bits(pixels, bits, path), None)
        if kind == "cv2":
            pixels = cv2_read(path)
            return Pixels(pixels, False, _apply_bits(pixels, bits, path), None)
        return Pixels(*dicom_read(path))
    except MammoError:
        raise
    except MemoryError:
        raise PatchReadError("image too large to load", path) from None


def read_image(path: str | Path) -> np.ndarray:
    """One image file at full size: 2-D, native dtype (uint8 / uint16; float only from .npy).

    Raises ``PatchReadError(reason, path)`` for anything it cannot read, including stacked
    arrays and multi-frame DICOM (use ``read_patches`` for those).
    """
    return read_image_ref(path)[0]


def read_image_bits(path: str | Path, bits: int | None = None) -> tuple[np.ndarray, int | None]:
    """``read_image`` plus the bit depth to scale the image by (see ``Patch.bits``): BitsStored
    for DICOM, else the container's depth or ``bits`` for a 16-bit container holding fewer."""
    pixels, depth, _ = read_image_ref(path, bits)
    return pixels, depth


def read_image_ref(path: str | Path, bits: int | None = None
                   ) -> tuple[np.ndarray, int | None, SourceRef]:
    """``read_image_bits`` plus the source's identifiers (DICOM UIDs; the path for others)."""
    path = Path(path)
    got = read_pixels(path, check_bits(bits))
    if got.stack:
        what = "multi-frame DICOM" if path.suffix.lower() != ".npy" else "stacked array"
        raise PatchReadError(f"{what} of {got.array.shape[0]} patches; read it with read_patches", path)
    return got.array, got.bits, got.ref if got.ref is not None else SourceRef.of_file(path)


def resize_patch(img: np.ndarray) -> np.ndarray:
    """Resize one 2-D image to 150 x 150 with ``cv2.INTER_NEAREST`` (returned as is when it
    already is 150 x 150), keeping its dtype."""
    img = np.asarray(img)
    if img.ndim != 2:
        raise MammoError(f"resize_patch needs a 2-D image, got shape {img.shape}")
    if img.shape == PATCH_SHAPE:
        return img
    import cv2

    src = img.astype(np.float32) if img.dtype == np.float16 else np.ascontiguousarray(img)
    return cv2.resize(src, (PATCH_SIZE, PATCH_SIZE), interpolation=cv2.INTER_NEAREST)


def check_patch_size(shape: tuple[int, ...], path: str | Path | None = None) -> None:
    """Refuse an image whose size is far from a 150 x 150 patch (each side must lie within a
    factor ``PATCH_SIZE_FACTOR`` of 150 px): larger ones raise ``NotAPatchError`` (a whole
    mammogram), smaller ones ``PatchReadError``; both say why in one line."""
    h, w = int(shape[0]), int(shape[1])
    lo, hi = math.ceil(PATCH_SIZE / PATCH_SIZE_FACTOR), PATCH_SIZE * PATCH_SIZE_FACTOR
    if max(h, w) > hi:
        raise NotAPatchError(
            f"{w} x {h} pixels is far from a 150 x 150 patch (sides {lo}-{hi} px accepted): "
            "a whole mammogram? Open it in the viewer's mammogram view or run 'mammo scan' "
            "(shrinking it to 150 x 150 would classify the whole breast as one patch)", path)
    if min(h, w) < lo:
        raise PatchReadError(
            f"{w} x {h} pixels is far from a 150 x 150 patch (sides {lo}-{hi} px accepted): "
            "too small to enlarge to a patch", path)

