"""Whole mammograms: pixels at full size, pixel spacing, laterality / view and header fields.

``read_mammogram(path)`` reads DICOM (the CBIS-DDSM release's 16-bit files included), PNG, PGM
(as mini-MIAS ships), TIFF and 2-D ``.npy`` through :func:`mammo_core.io.read_image_ref` (one
reader for pixels: BitsStored, PixelRepresentation, rescale and MONOCHROME1 handled there, the
source's UIDs kept in ``Mammogram.source_ref``; the true bit depth is
kept in ``Mammogram.bits`` so a 12-bit DICOM is scaled by 4095 as predict does) and adds what a viewer
and ``mammo scan`` need around the pixels (size limits: ``mammo_core.safeio``, as for every
file read):

* pixel spacing in mm (row, column): DICOM ``PixelSpacing``, else ``ImagerPixelSpacing``, else a
  stated default per source (mini-MIAS: 200 µm, from its README), else unknown (``None``);
* laterality (``L`` / ``R``) and view (``CC``, ``MLO``, ...): DICOM ``ImageLaterality`` /
  ``Laterality`` / ``ViewPosition``, else the file path (CBIS-DDSM folder names such as
  ``Mass-Training_P_00001_LEFT_CC``, or ``_L_CC`` / ``_RMLO`` style names);
* a short list of DICOM header fields for display (no pixel data).

Coordinates everywhere: array ``(row, col)``, origin at the top-left corner of the image as
stored (mini-MIAS's Info.txt counts y from the bottom: row = H - Y).
Research use only — not a medical device.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammo_core.errors import PatchReadError
from mammo_core.io import SourceRef, file_kind, read_image_ref
from mammo_core.protocol import full_scale

#: mini-MIAS pixel size (the data's README: 200 micron pixels).
MINI_MIAS_SPACING_MM = 0.2
#: Pixel sizes accepted (mm), from a DICOM header or given: mammography detectors and film
#: digitisers are 0.025-0.2 mm; anything outside this range is a broken header or a typo.
SPACING_RANGE_MM = (0.001, 5.0)
#: Largest ratio of the two pixel sides (mammograms have square pixels).
MAX_SPACING_RATIO = 1.1

HEADER_FIELDS = (
    "PatientID", "PatientAge", "StudyDate", "Modality", "Manufacturer", "ManufacturerModelName",
    "BodyPartExamined", "ImageLaterality", "Laterality", "ViewPosition", "SeriesDescription",
    "Rows", "Columns", "BitsAllocated", "BitsStored", "PhotometricInterpretation",
    "PixelSpacing", "ImagerPixelSpacing", "WindowCenter", "WindowWidth", "RescaleSlope",
    "RescaleIntercept", "PresentationIntentType",
)

_MIAS_NAME = re.compile(r"^mdb\d{3}$", re.IGNORECASE)
_LAT_WORD = re.compile(r"(?:^|[_\-\s./])(LEFT|RIGHT)(?=$|[_\-\s./])", re.IGNORECASE)
_VIEW_WORD = re.compile(r"(?:^|[_\-\s./])(L|R)?[_\-]?(CC|MLO|ML|LM|XCCL|AT)(?=$|[_\-\s./])",
                        re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class Mammogram:
    """One whole mammogram. ``pixels`` is 2-D uint8 / uint16 as stored (read-only)."""

    pixels: np.ndarray
    source: str
    spacing_mm: tuple[float, float] | None = None     # (row, column) pixel size, mm
    spacing_source: str = "unknown"
    laterality: str | None = None                      # "L" / "R"
    view: str | None = None                            # "CC", "MLO", ...
    orientation_source: str = ""                       # where laterality / view came from
    header: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    kind: str = "image"                                # "dicom" or "image"
    bits: int | None = None                            # true bit depth (DICOM BitsStored...)
    source_ref: SourceRef | None = None                # path and, for DICOM, Study/Series/SOP UIDs

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    @property
    def name(self) -> str:
        return Path(self.source).name

    @property
    def stem(self) -> str:
        return Path(self.source).stem

    @property
    def full_scale(self) -> int:
        """The value that maps to 1.0: ``2**bits - 1`` of the true bit depth (a 12-bit DICOM:
        4095, whatever its brightest pixel), else guessed from the pixels' maximum."""
        if self.bits is not None and 1 <= self.bits <= 16:
            return (1 << int(self.bits)) - 1
        return full_scale(self.pixels)

    @property
    def mm_per_pixel(self) -> float | None:
        """Mean pixel size in mm (None when unknown)."""
        return None if self.spacing_mm is None else float(np.mean(self.spacing_mm))

    def describe(self) -> str:
        h, w = self.shape
        sp = ("pixel size unknown" if self.spacing_mm is None
              else f"{1000 * self.mm_per_pixel:.0f} µm pixels ({self.spacing_source})")
        lat = {"L": "left", "R": "right"}.get(self.laterality or "", "side unknown")
        return f"{self.name}: {w} x {h} px, {self.pixels.dtype}, {sp}, {lat}, {self.view or 'view unknown'}"


def _dicom_header(path: Path) -> dict[str, str]:
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - pixels were readable; a header we cannot parse is just empty
        return {}
    out: dict[str, str] = {}
    for name in HEADER_FIELDS:
        try:
            v = ds.get(name)
        except Exception:  # noqa: BLE001 - a malformed element is left out
            continue
        if v is None or v == "":
            continue
        text = "\\".join(str(x) for x in v) if isinstance(v, (list, tuple)) or (
            hasattr(v, "__iter__") and not isinstance(v, (str, bytes))) else str(v)
        out[name] = text[:200]
    return out


def spacing_problem(value: float) -> str | None:
    """Why ``value`` (mm) is not a usable pixel size; None when it is."""
    lo, hi = SPACING_RANGE_MM
    try:
        ok = np.isfinite(value) and lo <= value <= hi
    except TypeError:
        ok = False
    return None if ok else f"pixel size {value!r} mm is outside {lo:g}-{hi:g} mm"


def _spacing(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        parts = [float(x) for x in text.split("\\")]
    except ValueError:
        return None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or any(spacing_problem(p) for p in parts):
        return None
    if max(parts) / min(parts) > MAX_SPACING_RATIO:  # non-square pixels: no square windows
        return None
    return parts[0], parts[1]


def orientation_from_name(path: str | Path) -> tuple[str | None, str | None]:
    """(laterality, view) from a file path: CBIS-DDSM ``..._LEFT_CC``, ``..._R_MLO``,
    ``RCC``; (None, None) when the name does not say."""
    text = "/".join(Path(path).parts[-3:])
    lat = view = None
    m = _LAT_WORD.search(text)
    if m:
        lat = m.group(1)[0].upper()
    for v in _VIEW_WORD.finditer(text):
        view = v.group(2).upper()
        if lat is None and v.group(1):
            lat = v.group(1).upper()
    return lat, view


def orientation(header: dict[str, str], path: str | Path) -> tuple[str | None, str | None, str]:
    """(laterality, view, where they came from): DICOM ``ImageLaterality`` / ``Laterality`` /
    ``ViewPosition`` from ``header`` (field name -> text), else the file path
    (:func:`orientation_from_name`)."""
    lat = (header.get("ImageLaterality") or header.get("Laterality") or "").strip().upper()[:1] or None
    view = (header.get("ViewPosition") or "").strip().upper() or None
    src = "DICOM" if (lat or view) else ""
    if lat not in ("L", "R"):
        lat = None
    if lat is None or view is None:
        nlat, nview = orientation_from_name(path)
        if (lat is None and nlat) or (view is None and nview):
            src = (src + " + " if src else "") + "file name"
        lat, view = lat or nlat, view or nview
    return lat, view, src


def is_mini_mias(path: str | Path, shape: tuple[int, int]) -> bool:
    return bool(_MIAS_NAME.match(Path(path).stem)) and tuple(shape) == (1024, 1024)


def read_mammogram(path: str | Path, spacing_mm: float | None = None,
                   bits: int | None = None) -> Mammogram:
    """Read a whole mammogram (see the module docstring). ``spacing_mm`` overrides the pixel
    size (stated as "given"); ``bits``: a 16-bit PNG / TIFF / .npy holds only that many bits
    (as ``mammo predict --bits``; DICOM uses its BitsStored). Raises ``PatchReadError`` naming
    the file for anything unreadable."""
    path = Path(path)
    try:
        pixels, bits, ref = read_image_ref(path, bits)
    except PatchReadError as err:
        if "read it with read_patches" not in err.problem:
            raise
        raise PatchReadError(err.problem.split(";")[0].replace("patches", "frames")
                             + ": a whole mammogram is one 2-D image", path) from None
    if pixels.ndim != 2 or pixels.dtype.kind not in "ui":
        raise PatchReadError(f"a mammogram must be 2-D 8- or 16-bit integers, got {pixels.dtype} "
                             f"{pixels.shape}", path)
    if pixels.flags.writeable:
        pixels = pixels.view()
        pixels.flags.writeable = False
    kind = "dicom" if file_kind(path) == "dicom" else "image"
    header = _dicom_header(path) if kind == "dicom" else {}
    sp, sp_src = None, "unknown"
    if spacing_mm is not None:
        problem = spacing_problem(spacing_mm)
        if problem:
            raise PatchReadError(f"given {problem}", path)
        sp, sp_src = (float(spacing_mm), float(spacing_mm)), "given"
    else:
        for tag in ("PixelSpacing", "ImagerPixelSpacing"):
            sp = _spacing(header.get(tag))
            if sp is not None:
                sp_src = f"DICOM {tag}"
                break
            if header.get(tag) and sp_src == "unknown":  # say why a header value was not used
                sp_src = (f"unknown (DICOM {tag} {header[tag][:40]!r} is not two equal pixel sides "
                          f"of {SPACING_RANGE_MM[0]:g}-{SPACING_RANGE_MM[1]:g} mm)")
        if sp is None and is_mini_mias(path, pixels.shape):
            sp, sp_src = (MINI_MIAS_SPACING_MM,) * 2, "mini-MIAS default (200 µm, its README)"
    lat, view, src = orientation(header, path)
    return Mammogram(pixels, str(path), sp, sp_src, lat, view, src, tuple(header.items()), kind, bits,
                     ref)
