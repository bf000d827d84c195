"""Raster images through OpenCV: PNG, TIFF, JPEG, PGM / PNM, 8- and 16-bit, colour converted to
grey and alpha dropped; the pixel limit checked from the header (Pillow) before decoding and
OpenCV's own log lines silenced (the reader reports a problem once).

Research use only — not a medical device.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from mammo_core.errors import PatchReadError
from mammo_core.io.patch import short_problem
from mammo_core.safeio import UnsafeFile, max_pixels, pixel_limit_problem, read_bytes

CV2_EXTENSIONS = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".pgm", ".pnm"})
_NATIVE_INT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's own log lines (libpng/libtiff complaints about a broken file) while
    decoding: the reader reports the problem once, as a PatchReadError."""
    try:
        from cv2.utils import logging as cv_log
    except ImportError:  # pragma: no cover - very old OpenCV
        yield
        return
    previous = cv_log.getLogLevel()
    cv_log.setLogLevel(cv_log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv_log.setLogLevel(previous)


def _header_problem(data: bytes) -> str | None:
    """Why an image is too big to decode, from its header alone (Pillow reads the header
    lazily); None when it is within ``MAMMO_MAX_PIXELS`` or Pillow does not know the format."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return None
    import io as _bio
    import re as _re

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(_bio.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:  # Pillow's own cap (2 x 89 Mpx) is past ours
        m = _re.search(r"\((\d+) pixels\)", str(exc))
        n = int(m.group(1)) if m else max_pixels() + 1
        if n > max_pixels():
            return (f"image of {n:,} pixels exceeds the limit of {max_pixels():,} pixels "
                    "(set MAMMO_MAX_PIXELS to raise it)")
        return None
    except Exception:  # noqa: BLE001 - not a format Pillow knows: OpenCV decides
        return None
    return pixel_limit_problem(int(height), int(width))


def cv2_read(path: Path) -> np.ndarray:
    import cv2

    try:
        data = read_bytes(path)  # imdecode on our own bytes: works with non-ASCII paths
    except UnsafeFile as exc:
        raise PatchReadError(str(exc), path) from None
    if not data:
        raise PatchReadError("empty file", path)
    kind = path.suffix.lower().lstrip(".").upper() or "image"
    problem = _header_problem(data)
    if problem:
        raise PatchReadError(problem, path)
    try:
        with _quiet_opencv():
            img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise PatchReadError(f"not a readable {kind} image ({short_problem(exc)})", path) from None
    if img is None or img.size == 0:
        raise PatchReadError(f"not a readable {kind} image (corrupt, truncated or another format)", path)
    problem = pixel_limit_problem(img.shape[0], img.shape[1])
    if problem:  # a format whose header Pillow could not read
        raise PatchReadError(problem, path)
    if img.dtype not in _NATIVE_INT_DTYPES:
        raise PatchReadError(f"{img.dtype} {kind} images are not supported: expected 8- or 16-bit", path)
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 1 or channels == 2:
            img = img[:, :, 0]
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif channels == 4:  # alpha dropped, colour to grey
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        else:
            raise PatchReadError(f"{kind} image with {channels} channels is not supported", path)
    elif img.ndim != 2:
        raise PatchReadError(f"{kind} image of shape {img.shape} is not supported", path)
    return np.ascontiguousarray(img)

