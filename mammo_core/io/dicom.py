"""DICOM through pydicom: one image or the frames of a multi-frame file, with its identifiers.

Pixel values (:func:`dicom_read`)
    Stored values are masked to ``BitsStored`` (sign-extended when ``PixelRepresentation`` is
    1) and MONOCHROME1 is inverted so that bright always means dense. The intensity scale comes
    from ``BitsStored`` / ``PixelRepresentation`` only: the stored range (0 .. 2**b - 1, or
    -2**(b-1) .. 2**(b-1) - 1 when signed) is the full scale and ``bits`` is ``b``, so the model
    input is ``pixels / (2**b - 1)`` whatever the header's rescale says. The modality rescale
    (``RescaleSlope`` / ``RescaleIntercept``) is linear: it moves and stretches the stored range
    but adds no levels, so the rescaled stored range is mapped back onto 0 .. 2**b - 1 (exactly,
    in integers: the stored levels in order, inverted for a negative slope). It changes values
    (a signed image becomes 0-based, a negative slope inverts), never the divisor: a 12-bit
    image with ``RescaleIntercept`` +1 or +1000 is scaled by 4095, as without it.
    A rescale that cannot be evaluated without losing the stored levels (a slope of 0 or
    beyond 1e-6 .. 1e6, an intercept beyond 1e9, or values that collapse to one number or
    overflow in floating point, such as slope 1e-300 with intercept 1e8) refuses the image in
    one line naming both tags.

Identifiers (:func:`dicom_source_ref`)
    ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID`` and ``SOPClassUID`` of the
    header, as a :class:`~mammo_core.io.source.SourceRef` (``None`` for a missing one).

Decoders' own logging
    pydicom logs a decoder's failure with its traceback on the ``pydicom`` logger; the one-line
    refusal here is what the user sees (:mod:`mammo_core.logsetup` keeps ``pydicom`` records off
    the terminal and in the log file).

Research use only — not a medical device.
"""
from __future__ import annotations

import io as _bio
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_core.errors import PatchReadError
from mammo_core.io.patch import short_problem
from mammo_core.io.source import SourceRef
from mammo_core.safeio import UnsafeFile, pixel_limit_problem, read_bytes, read_head

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
#: Rescale tags accepted: |RescaleSlope| in this range, |RescaleIntercept| up to the bound.
SLOPE_RANGE = (1e-6, 1e6)
MAX_INTERCEPT = 1e9


def has_dicom_preamble(path: Path) -> bool:
    head = read_head(path, 132)  # never blocks: a FIFO or device is simply "not DICOM"
    return head is not None and len(head) == 132 and head[128:132] == b"DICM"


def _uid(ds, name: str) -> str | None:
    try:
        value = ds.get(name)
    except Exception:  # noqa: BLE001 - a malformed element is left out
        return None
    text = str(value).strip() if value is not None else ""
    return text[:64] or None  # a UID is at most 64 characters


def dicom_source_ref(ds, path: Path) -> SourceRef:
    """The header's Study / Series / SOP Instance / SOP Class UIDs as a ``SourceRef``."""
    return SourceRef(str(path), _uid(ds, "StudyInstanceUID"), _uid(ds, "SeriesInstanceUID"),
                     _uid(ds, "SOPInstanceUID"), _uid(ds, "SOPClassUID"))


def rescale_problem(slope: float, intercept: float, bits: int, signed: bool) -> str | None:
    """Why a modality rescale of a ``bits``-bit stored range is refused; None when it is usable.
    Evaluated from the header values alone, without floating-point warnings."""
    tags = f"RescaleSlope {slope:g} / RescaleIntercept {intercept:g}"
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        return f"{tags} are not finite numbers"
    if slope == 0:
        return f"{tags}: a slope of 0 makes every pixel one value"
    if not SLOPE_RANGE[0] <= abs(slope) <= SLOPE_RANGE[1] or abs(intercept) > MAX_INTERCEPT:
        return (f"implausible {tags} (accepted: |slope| {SLOPE_RANGE[0]:g}..{SLOPE_RANGE[1]:g}, "
                f"|intercept| up to {MAX_INTERCEPT:g})")
    lo_s, hi_s = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    ends = [lo_s * slope + intercept, hi_s * slope + intercept]
    if not all(math.isfinite(e) for e in ends):
        return f"{tags} overflow the {bits}-bit stored range"
    step = abs((lo_s + 1) * slope + intercept - ends[0])
    if step == 0 or step < 4 * math.ulp(max(abs(ends[0]), abs(ends[1]))):
        return (f"{tags} collapse the {bits}-bit stored range {lo_s}..{hi_s} to one value "
                f"({ends[0]:g}..{ends[1]:g}): the image would be blank")
    return None


@dataclass(frozen=True)
class _Header:
    """The header numbers the pixel decoding needs."""

    photometric: str
    bits_stored: int
    bits_allocated: int
    signed: bool
    frames: int
    slope: float
    intercept: float
    rows: int
    cols: int

    @classmethod
    def of(cls, ds) -> _Header:  # ``ds.get`` is pydicom's own accessor, element by element
        slope = ds.get("RescaleSlope")
        return cls(str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper(),
                   int(ds.get("BitsStored", 0) or 0), int(ds.get("BitsAllocated", 0) or 0),
                   int(ds.get("PixelRepresentation", 0) or 0) == 1,
                   int(ds.get("NumberOfFrames", 1) or 1),
                   1.0 if slope is None or slope == "" else float(slope),
                   float(ds.get("RescaleIntercept", 0) or 0),
                   int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))


def _open(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        data = read_bytes(path)
    except UnsafeFile as exc:
        raise PatchReadError(str(exc), path) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(_bio.BytesIO(data), force=True)
    except OSError as exc:
        raise PatchReadError(f"cannot open file: {exc.strerror or exc}", path) from None
    except (InvalidDicomError, Exception) as exc:  # noqa: BLE001 - pydicom raises many kinds
        raise PatchReadError(f"not a readable DICOM file ({type(exc).__name__}: {short_problem(exc)})",
                             path) from None


def _decode(ds, path: Path) -> tuple[np.ndarray, _Header]:
    """The header numbers and the decoded pixel array; every refusal one line."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise PatchReadError("DICOM float pixel data is not supported", path)
        raise PatchReadError("DICOM file has no pixel data", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h = _Header.of(ds)
            problem = pixel_limit_problem(h.rows, h.cols, h.frames)
            if problem:  # from the header, before the pixel data is decoded
                raise PatchReadError(problem, path)
            if not (math.isfinite(h.slope) and math.isfinite(h.intercept)):
                raise PatchReadError(f"RescaleSlope {h.slope:g} / RescaleIntercept "
                                     f"{h.intercept:g} are not finite numbers", path)
            arr = ds.pixel_array
    except PatchReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing elements, compressed without a handler...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise PatchReadError(f"compressed DICOM ({getattr(syntax, 'name', syntax)}) that no "
                                 "installed decoder can read (pylibjpeg / gdcm plugins for pydicom "
                                 "decode it), or its data is corrupt", path) from None
        raise PatchReadError(f"cannot decode DICOM pixel data ({type(exc).__name__}: "
                             f"{short_problem(exc)})", path) from None
    arr = np.asarray(arr)
    if not arr.dtype.isnative:  # big endian transfer syntax: _scaled views native words
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr, h


def _grey(arr: np.ndarray, h: _Header, path: Path) -> tuple[np.ndarray, str]:
    """Colour samples converted to grey (photometric then ``RGB``); the array checked to be
    integer image(s). Returns the array and its photometric interpretation."""
    frames, photometric = h.frames, h.photometric
    if photometric == "PALETTE COLOR":
        raise PatchReadError("PALETTE COLOR DICOM is not supported", path)
    if arr.ndim == (4 if frames > 1 else 3) and arr.shape[-1] in (3, 4):
        import cv2

        if arr.dtype.kind not in "u" or arr.dtype.itemsize > 2:
            raise PatchReadError(f"colour DICOM with {arr.dtype} samples is not supported", path)
        flat = arr.reshape(-1, *arr.shape[-3:])
        code = cv2.COLOR_RGB2GRAY if arr.shape[-1] == 3 else cv2.COLOR_RGBA2GRAY
        arr = np.stack([cv2.cvtColor(np.ascontiguousarray(f), code) for f in flat])
        if frames <= 1:
            arr = arr[0]
        photometric = "RGB"
    if arr.ndim != (3 if frames > 1 else 2) or arr.size == 0:
        raise PatchReadError(f"DICOM pixel array of shape {arr.shape} is not a grey image", path)
    if arr.dtype.kind == "f":
        raise PatchReadError("DICOM float pixel data is not supported", path)
    if arr.dtype.kind not in "ui" or arr.dtype.itemsize > 4:
        raise PatchReadError(f"DICOM pixel data of dtype {arr.dtype} is not supported", path)
    return arr, photometric


def _scaled(arr: np.ndarray, h: _Header, photometric: str, path: Path) -> tuple[np.ndarray, int]:
    """Stored values -> 0 .. 2**bits - 1 (module doc), native uint8 / uint16, and ``bits``."""
    width = arr.dtype.itemsize * 8
    bits = h.bits_stored if 0 < h.bits_stored <= width else (
        h.bits_allocated if 0 < h.bits_allocated <= width else width)
    signed, slope, intercept = h.signed, h.slope, h.intercept
    problem = rescale_problem(slope, intercept, bits, signed) if (slope, intercept) != (1.0, 0.0) else None
    if problem:
        raise PatchReadError(problem, path)
    top = (1 << bits) - 1
    unsigned = np.ascontiguousarray(arr).view(np.dtype(f"u{arr.dtype.itemsize}"))
    invert = (photometric == "MONOCHROME1") != (slope < 0)
    if not signed and arr.dtype.itemsize <= 2:
        out_dtype = np.uint8 if bits <= 8 else np.uint16
        # the usual mammogram: unsigned -> stay in the native width (big images)
        out = unsigned & unsigned.dtype.type(top) if bits < width else unsigned
        if invert:
            out = unsigned.dtype.type(top) - out
        return np.ascontiguousarray(out.astype(out_dtype, copy=False)), bits
    raw = unsigned.astype(np.int64) & top
    if signed:  # sign-extend, then place the stored range -2**(b-1) .. 2**(b-1) - 1 at 0
        raw = np.where(raw >= (1 << (bits - 1)), raw - (1 << bits), raw) + (1 << (bits - 1))
    if invert:
        raw = top - raw
    if bits > 16:  # more levels than uint16 holds: keep the top 16 bits (same scale, coarser)
        raw, bits = raw >> (bits - 16), 16
    return np.ascontiguousarray(raw.astype(np.uint8 if bits <= 8 else np.uint16)), bits


def dicom_read(path: Path) -> tuple[np.ndarray, bool, int, SourceRef]:
    """DICOM -> (image (H, W) or frames (F, H, W), is_multiframe, bits, source identifiers);
    pixels native uint8 / uint16 in 0 .. 2**bits - 1 (module doc)."""
    ds = _open(path)
    arr, h = _decode(ds, path)
    arr, photometric = _grey(arr, h, path)
    pixels, bits = _scaled(arr, h, photometric, path)
    return pixels, h.frames > 1, bits, dicom_source_ref(ds, path)
