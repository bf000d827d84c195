"""Reading mammogram patches and CBIS-DDSM patch arrays. Research use only — not a medical device.

Single images
    ``read_image(path)`` reads one image file at full size as a 2-D array of its native dtype:
    ``.npy`` (2-D or with one trailing channel; never unpickled), PNG / TIFF / JPEG / PGM / PNM
    8- and 16-bit through OpenCV (colour converted to grey, alpha dropped), and DICOM through
    pydicom (MONOCHROME1 inverted, BitsStored respected, RescaleSlope/Intercept applied).
    ``resize_patch`` brings it to 150 x 150 with ``cv2.INTER_NEAREST``, as the dataset was cut.

Many patches
    ``read_patches(paths)`` reads any mix of files, stacked ``.npy`` arrays (N, 150, 150[, 1])
    (one patch per row), multi-frame DICOM (one patch per frame) and folders (files in sorted
    name order) into a ``PatchCollection``: the patches that loaded and, for each file that did
    not, a ``ReadFailure`` with its reason. It never raises for one bad file. In a folder, only
    known extensions are tried (``READ_EXTENSIONS`` and extension-less DICOM with the ``DICM``
    preamble); other files are ignored, as are hidden files. ``X_labels.npy`` files are never read
    as patches: their labels are attached to the patches of ``X_tensor.npy`` beside them, so a
    CBIS-DDSM-layout folder reads as the patches of its tensors with ``label`` set. Single image
    files get their label from a ``labels.csv`` (columns ``file``, ``label``) beside them, as
    written with the sample patches.

Input size is never silent
    A single image is a patch only when each side is within a factor ``PATCH_SIZE_FACTOR`` (4)
    of 150 px (38..600 px); it is then resized to 150 x 150 with ``cv2.INTER_NEAREST``. Larger
    images (whole mammograms) are refused by ``read_patches`` with ``NotAPatchError`` (the
    ``ReadFailure`` has ``whole_image=True``): open them as mammograms
    (``mammo_core.mammogram.read_mammogram``, ``mammo scan``, the viewer's mammogram view), which
    cut windows the way the training data was cut. Smaller ones are refused as too small.

Patch arrays (CBIS-DDSM layout)
    ``load_patch_arrays(folder)`` reads and validates ``train_tensor.npy`` / ``train_labels.npy``,
    ``public_test_tensor.npy`` / ``public_test_labels.npy`` and optionally
    ``private_test_tensor.npy`` (labels optional), memory-mapped so big arrays load once.
    ``drop_baselines``, ``select_task`` and ``scale_to_unit`` are the study's preprocessing;
    ``to_model_input`` builds the models' (N, 150, 150, 1) float32 input in [0, 1].

Every problem the user can act on is a ``PatchReadError`` / ``DatasetError`` whose message
names the file and the problem in one line.

Decisions worth knowing
    * Pixel values are kept as stored: a 12-bit DICOM stays 0..4095 in uint16 (MONOCHROME1 is
      mirrored within that range) and its ``Patch.bits`` is 12, so ``to_model_input`` scales it
      by 4095, the way an 8-bit PNG of the same image is scaled by 255 (true bit depth). Other
      files use their container depth (uint8 / 255, uint16 / 65535, as the study did for its
      16-bit patches) unless ``bits=`` says a 16-bit container holds fewer bits. Only a rescale
      that leaves 0..65535 is remapped (then ``bits`` is 16).
    * Hostile files: only regular files are opened (``O_NONBLOCK`` + ``fstat``: a FIFO or a
      symlink to ``/dev/zero`` is refused at once), at most ``MAMMO_MAX_FILE_BYTES`` bytes are
      read, an image over ``MAMMO_MAX_PIXELS`` pixels is refused from its header before
      decoding, float pixels outside [0, 1] make their file fail (not the batch), and a
      recursive walk enters each folder once by ``(st_dev, st_ino)`` (symlink cycles end).
    * Multi-frame DICOM: ``read_image`` refuses it; ``read_patches`` yields one patch per frame.
      Multi-page TIFF: the first page is read.
    * ``Patch.source`` is the file path as given (a CBIS tensor's patches carry the path of
      ``<split>_tensor.npy`` and ``index`` = row); stacks and big files are memory-mapped
      read-only, so ``Patch.pixels`` may be a view of the file.
    * OpenCV's own log lines are silenced while decoding (the reader reports the problem once).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from io import StringIO as _StringIO
from pathlib import Path

import numpy as np

from mammo_core.contract import PATCH_SHAPE, PATCH_SIZE
from mammo_core.errors import DatasetError, MammoError, NotAPatchError, PatchReadError
from mammo_core.labels import BASELINE, N_LABELS, Task, get_task, has_pair_layout
from mammo_core.predictions import patch_key
from mammo_core.safeio import (
    SMALL_FILE_BYTES,
    UnsafeFile,
    is_regular,
    max_file_bytes,
    max_pixels,
    missing_reason,
    open_regular,
    pixel_limit_problem,
    read_bytes,
    read_head,
)

#: A single image is read as a patch only when each side is within this factor of 150 px.
PATCH_SIZE_FACTOR = 4

NPY_EXTENSIONS = frozenset({".npy"})
CV2_EXTENSIONS = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".pgm", ".pnm"})
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
#: Extensions tried when reading a folder (plus extension-less files with the DICOM preamble).
READ_EXTENSIONS = NPY_EXTENSIONS | CV2_EXTENSIONS | DICOM_EXTENSIONS

#: The splits of a CBIS-DDSM patch-array folder, in reading order.
SPLIT_NAMES = ("train", "public_test", "private_test")
#: Splits whose labels file must be present when the tensor is.
LABELLED_SPLITS = ("train", "public_test")
TENSOR_SUFFIX = "_tensor.npy"
LABELS_SUFFIX = "_labels.npy"

_NATIVE_INT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def split_of(source: str | Path, index: int | None) -> str:
    """The split a row of a patch array belongs to (``train`` for ``train_tensor.npy``), from
    the file's name; ``""`` for anything else."""
    name = Path(str(source)).name
    if index is None or not name.endswith(TENSOR_SUFFIX):
        return ""
    return name[: -len(TENSOR_SUFFIX)]
_CHUNK_ROWS = 2048  # rows per chunk when scanning big memory-mapped arrays
_MMAP_MIN_BYTES = 16 << 20  # .npy files above this are memory-mapped by read_patches


# --------------------------------------------------------------------------- data classes
@dataclass(frozen=True, eq=False)
class Patch:
    """One 150 x 150 patch and where it came from.

    ``pixels`` is (150, 150) in the file's native dtype (uint8 / uint16; float only from .npy),
    read-only. ``source`` is the file path as given; ``index`` the row of a stacked array or the
    frame of a multi-frame DICOM (``None`` for a single image); ``label`` the 0-4 label when a
    labels file gave one; ``original_shape`` the (height, width) before resizing to 150 x 150;
    ``bits`` the bit depth the model input is scaled by (``pixels / (2**bits - 1)``): BitsStored
    for DICOM, the container depth (8 / 16) for other files unless ``bits=`` overrode it, and
    ``None`` for float pixels (already in [0, 1]). Left out, it follows the dtype.
    ``split`` the split of a patch array (``train`` for a row of ``train_tensor.npy``; ``""``
    otherwise; derived from the file name when not given). ``key`` names the patch in reports,
    heatmap mappings and the viewer. Patches compare by identity; use ``sha256`` to compare
    pixel content.
    """

    pixels: np.ndarray
    source: str
    index: int | None = None
    label: int | None = None
    original_shape: tuple[int, int] | None = None
    split: str | None = None
    bits: int | None = None

    def __post_init__(self) -> None:
        if self.split is None:
            object.__setattr__(self, "split", split_of(self.source, self.index))
        if self.bits is None:
            object.__setattr__(self, "bits", _container_bits(np.asarray(self.pixels).dtype))

    @property
    def key(self) -> str:
        """``source`` or ``source#index`` (:func:`mammo_core.predictions.patch_key`)."""
        return patch_key(self.source, self.index)

    @cached_property
    def sha256(self) -> str:
        """sha256 hex digest of the pixel bytes (C order)."""
        return hashlib.sha256(np.ascontiguousarray(self.pixels).tobytes()).hexdigest()

    @property
    def name(self) -> str:
        """A short display name: file name, plus ``[index]`` for rows of a stack."""
        base = Path(self.source).name
        return base if self.index is None else f"{base}[{self.index}]"


@dataclass(frozen=True)
class ReadFailure:
    """A file (or labels file) that could not be read, and why (one line, without the path)."""

    source: str
    error: str
    whole_image: bool = False  # far larger than a patch: open it as a whole mammogram instead

    def __str__(self) -> str:
        return f"{self.source}: {self.error}"


@dataclass
class PatchCollection:
    """What ``read_patches`` returns: the patches that loaded and the files that did not."""

    patches: list[Patch] = field(default_factory=list)
    errors: list[ReadFailure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.patches)

    def __iter__(self):
        return iter(self.patches)


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a patch-array folder. ``images`` is (N, 150, 150) in its native dtype
    (often a read-only memory map); ``labels`` (N,) int64 or ``None`` when the split has no
    labels file (private test)."""

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    image_file: Path
    label_file: Path | None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True, eq=False)
class PatchArrays:
    """A validated CBIS-DDSM patch-array folder: ``splits`` keyed by split name, in
    ``SPLIT_NAMES`` order, holding only the splits present."""

    path: Path
    splits: Mapping[str, Split]

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]


def _container_bits(dtype: np.dtype) -> int | None:
    """8 for uint8, 16 for uint16, None for float (already [0, 1])."""
    return dtype.itemsize * 8 if dtype.kind == "u" else None


# --------------------------------------------------------------------------- .npy files
def _npy_problem(exc: BaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return msg[:200]


def _load_npy(path: Path, error_cls: type[MammoError] = PatchReadError, *, mmap: bool = True) -> np.ndarray:
    """Load a .npy file safely: never unpickles, checks the header against the file size first
    (so a truncated or lying header cannot trigger a huge allocation), memory-maps when asked."""
    try:
        fd, st = open_regular(path)
    except UnsafeFile as exc:
        raise error_cls(str(exc), path) from None
    with os.fdopen(fd, "rb") as fh:
        return _load_npy_from(fh, st.st_size, path, error_cls, mmap)


def _load_npy_from(fh, size: int, path: Path, error_cls: type[MammoError], mmap: bool) -> np.ndarray:
    try:
        try:
            version = np.lib.format.read_magic(fh)
        except Exception:  # noqa: BLE001 - any header garbage is "not a .npy file"
            raise error_cls("not a .npy file (bad magic string)", path) from None
        try:
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        except MammoError:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed header of any kind
            raise error_cls(f"not a valid .npy file (bad header: {_npy_problem(exc)})", path) from None
        data_start = fh.tell()
    except MammoError:
        raise
    except OSError as exc:
        raise error_cls(f"cannot open file: {exc.strerror or exc}", path) from None

    if dtype.hasobject:
        raise error_cls("object/pickled array refused (allow_pickle=False)", path)
    if any(int(d) < 0 for d in shape):
        raise error_cls(f"not a valid .npy file (bad shape {shape})", path)
    count = math.prod(int(d) for d in shape)  # Python ints: a lying header cannot overflow
    need = count * dtype.itemsize
    have = size - data_start
    if have < need:
        raise error_cls(
            f"truncated .npy file: header declares {dtype} {tuple(shape)} ({need} bytes of data) "
            f"but the file holds {have}", path)
    if len(shape) >= 2:  # one image's pixels, from the header, before anything is read
        rows_cols = shape[-2:] if not (len(shape) >= 3 and int(shape[-1]) == 1) else shape[-3:-1]
        problem = pixel_limit_problem(int(rows_cols[0]), int(rows_cols[1]))
        if problem:
            raise error_cls(problem, path)
    try:
        if mmap and need > 0:  # from the descriptor already checked to be a regular file
            arr = np.memmap(fh, dtype=dtype, mode="r", offset=data_start, shape=tuple(shape),
                            order="F" if fortran else "C")
        else:
            if need > read_limit():
                raise error_cls(f"array of {need:,} bytes exceeds the limit of {read_limit():,} bytes "
                                "(set MAMMO_MAX_FILE_BYTES to raise it)", path)
            fh.seek(data_start)
            data = fh.read(need)
            if len(data) < need:
                raise ValueError("file shrank while reading")
            arr = np.frombuffer(data, dtype=dtype, count=count).reshape(tuple(shape), order="F" if fortran else "C")
            arr = arr.copy()  # writable, owns its memory
    except MammoError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever numpy says, it is this file's problem
        raise error_cls(f"cannot load .npy file: {_npy_problem(exc)}", path) from None
    return arr


def read_limit() -> int:
    return max_file_bytes()


def _check_pixel_dtype(arr: np.ndarray, path: Path, error_cls: type[MammoError]) -> np.ndarray:
    """Accept uint8 / uint16 / float; native byte order; float16 widened to float32."""
    dt = arr.dtype
    if dt.names is not None:
        raise error_cls(f"structured array ({dt}) is not an image", path)
    if dt.kind == "u" and dt.itemsize in (1, 2):
        return arr if dt.isnative else arr.astype(dt.newbyteorder("="))
    if dt.kind == "f":
        if dt.itemsize == 2:
            return arr.astype(np.float32)
        return arr if dt.isnative else arr.astype(dt.newbyteorder("="))
    raise error_cls(
        f"{dt} pixels are not supported: expected uint8 or uint16 (or finite float in [0, 1])", path)


def _check_finite(arr: np.ndarray, path: Path, error_cls: type[MammoError]) -> None:
    """Float pixels must be finite and in [0, 1] (the models' input range): checked for every
    patch of the file here, in the reader, so one bad file is one error and not a failed batch."""
    if arr.dtype.kind != "f":
        return
    rows = arr.reshape(arr.shape[0], -1) if arr.ndim >= 3 else arr.reshape(1, -1)
    for start in range(0, rows.shape[0], _CHUNK_ROWS):
        chunk = np.asarray(rows[start:start + _CHUNK_ROWS])
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            bad = int(np.argmin(finite)) + start
            where = f" (first in patch {bad})" if arr.ndim >= 3 else ""
            raise error_cls(f"pixels contain NaN or infinity{where}", path)
        inside = ((chunk >= 0.0) & (chunk <= 1.0)).all(axis=1)
        if not inside.all():
            bad = int(np.argmin(inside)) + start
            row = chunk[bad - start]
            where = f" (first in patch {bad})" if arr.ndim >= 3 else ""
            raise error_cls(f"float pixels must be in [0, 1], found {float(row.min()):.6g}.."
                            f"{float(row.max()):.6g}{where}", path)


def _npy_as_images(arr: np.ndarray, path: Path, error_cls: type[MammoError]) -> tuple[np.ndarray, bool]:
    """Interpret an array as one image (H, W) or a stack (N, 150, 150); returns (array, is_stack)."""
    shape = arr.shape
    if arr.ndim == 2:
        out, stack = arr, False
    elif arr.ndim == 3 and shape[1:] == PATCH_SHAPE:
        out, stack = arr, True
    elif arr.ndim == 3 and shape[2] == 1:
        out, stack = arr[:, :, 0], False
    elif arr.ndim == 4 and shape[1:] == (*PATCH_SHAPE, 1):
        out, stack = arr[..., 0], True
    else:
        raise error_cls(
            f"array of shape {shape} is not an image: expected (H, W), (H, W, 1), "
            f"(N, 150, 150) or (N, 150, 150, 1)", path)
    if min(out.shape[-2:], default=0) == 0 or (stack and out.shape[0] == 0):
        raise error_cls(f"empty array of shape {shape}", path)
    out = _check_pixel_dtype(out, path, error_cls)
    _check_finite(out, path, error_cls)
    return out, stack


# --------------------------------------------------------------------------- OpenCV images
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


def _cv2_read(path: Path) -> np.ndarray:
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
        raise PatchReadError(f"not a readable {kind} image ({_npy_problem(exc)})", path) from None
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


# --------------------------------------------------------------------------- DICOM
def _has_dicom_preamble(path: Path) -> bool:
    head = read_head(path, 132)  # never blocks: a FIFO or device is simply "not DICOM"
    return head is not None and len(head) == 132 and head[128:132] == b"DICM"


def _dicom_read(path: Path) -> tuple[np.ndarray, bool, int]:
    """DICOM -> (image (H, W) or frames (F, H, W), is_multiframe, bits), native uint8/uint16.

    Stored values are masked to BitsStored (sign-extended when PixelRepresentation is 1), the
    modality rescale (RescaleSlope/Intercept) is applied, and MONOCHROME1 is inverted so that
    bright always means dense. When the rescaled range fits 0..65535 as integers it is kept as
    is (``bits`` = the bit length of its top: BitsStored without a rescale); otherwise the
    stored range is mapped linearly onto 0..65535 (``bits`` = 16). The model input is
    ``pixels / (2**bits - 1)``, so a 12-bit mammogram fills [0, 1] as its 8-bit export does.
    """
    import io as _bio

    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        data = read_bytes(path)
    except UnsafeFile as exc:
        raise PatchReadError(str(exc), path) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(_bio.BytesIO(data), force=True)
    except OSError as exc:
        raise PatchReadError(f"cannot open file: {exc.strerror or exc}", path) from None
    except (InvalidDicomError, Exception) as exc:  # noqa: BLE001 - pydicom raises many kinds
        raise PatchReadError(f"not a readable DICOM file ({type(exc).__name__}: {_npy_problem(exc)})", path) from None
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise PatchReadError("DICOM float pixel data is not supported", path)
        raise PatchReadError("DICOM file has no pixel data", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
            bits_stored = int(ds.get("BitsStored", 0) or 0)
            bits_allocated = int(ds.get("BitsAllocated", 0) or 0)
            signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            problem = pixel_limit_problem(rows, cols, frames)
            if problem:  # from the header, before the pixel data is decoded
                raise PatchReadError(problem, path)
            if not (math.isfinite(slope) and math.isfinite(intercept)) or abs(slope) > 1e6 \
                    or abs(intercept) > 1e9:
                raise PatchReadError(f"implausible RescaleSlope {slope:g} / RescaleIntercept "
                                     f"{intercept:g}", path)
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
                             f"{_npy_problem(exc)})", path) from None

    if photometric == "PALETTE COLOR":
        raise PatchReadError("PALETTE COLOR DICOM is not supported", path)
    arr = np.asarray(arr)
    if not arr.dtype.isnative:  # big endian transfer syntax: the bit masks below view native words
        arr = arr.astype(arr.dtype.newbyteorder("="))
    colour = arr.ndim == (4 if frames > 1 else 3) and arr.shape[-1] in (3, 4)
    if colour:
        import cv2

        if arr.dtype.kind not in "u" or arr.dtype.itemsize > 2:
            raise PatchReadError(f"colour DICOM with {arr.dtype} samples is not supported", path)
        flat = arr.reshape(-1, *arr.shape[-3:])
        code = cv2.COLOR_RGB2GRAY if arr.shape[-1] == 3 else cv2.COLOR_RGBA2GRAY
        arr = np.stack([cv2.cvtColor(np.ascontiguousarray(f), code) for f in flat])
        if frames <= 1:
            arr = arr[0]
        photometric = "RGB"
    expected_ndim = 3 if frames > 1 else 2
    if arr.ndim != expected_ndim or arr.size == 0:
        raise PatchReadError(f"DICOM pixel array of shape {arr.shape} is not a grey image", path)
    if arr.dtype.kind == "f":
        raise PatchReadError("DICOM float pixel data is not supported", path)
    if arr.dtype.kind not in "ui" or arr.dtype.itemsize > 4:
        raise PatchReadError(f"DICOM pixel data of dtype {arr.dtype} is not supported", path)

    # BitsStored: keep only the stored bits, sign-extend signed data.
    bits = bits_stored if 0 < bits_stored <= arr.dtype.itemsize * 8 else (
        bits_allocated if 0 < bits_allocated <= arr.dtype.itemsize * 8 else arr.dtype.itemsize * 8)
    if not np.isfinite(slope) or not np.isfinite(intercept) or slope == 0:
        slope, intercept = 1.0, 0.0
    unsigned = np.ascontiguousarray(arr).view(np.dtype(f"u{arr.dtype.itemsize}"))
    if not signed and slope == 1 and intercept == 0 and bits <= 16:
        # the usual mammogram: unsigned, no rescale -> stay in the native width (big images)
        top = (1 << bits) - 1
        out = unsigned & unsigned.dtype.type(top) if bits < unsigned.dtype.itemsize * 8 else unsigned
        if photometric == "MONOCHROME1":
            out = unsigned.dtype.type(top) - out
        out_dtype = np.uint8 if top <= 255 else np.uint16
        return np.ascontiguousarray(out.astype(out_dtype, copy=False)), frames > 1, bits
    raw = unsigned.astype(np.int64) & ((1 << bits) - 1)
    if signed:
        raw = np.where(raw >= (1 << (bits - 1)), raw - (1 << bits), raw)
        lo_stored, hi_stored = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo_stored, hi_stored = 0, (1 << bits) - 1

    ends = sorted((lo_stored * slope + intercept, hi_stored * slope + intercept))
    lo, hi = ends
    integral = float(slope).is_integer() and float(intercept).is_integer()
    if integral and lo >= 0 and hi <= 65535:
        values = raw * int(slope) + int(intercept)
        bottom, top = int(lo), int(hi)
    else:  # map the stored range linearly onto 0..65535 (content independent)
        values = np.rint((raw * slope + intercept - lo) / (hi - lo) * 65535.0).astype(np.int64)
        bottom, top = 0, 65535
    if photometric == "MONOCHROME1":  # mirror within the output range: bottom <-> top
        values = bottom + top - values
    values = np.clip(values, bottom, top)
    out_dtype = np.uint8 if top <= 255 else np.uint16
    return np.ascontiguousarray(values.astype(out_dtype)), frames > 1, max(1, int(top).bit_length())


# --------------------------------------------------------------------------- single images
def _file_kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in NPY_EXTENSIONS:
        return "npy"
    if ext in CV2_EXTENSIONS:
        return "cv2"
    if ext in DICOM_EXTENSIONS:
        return "dicom"
    if _has_dicom_preamble(path):
        return "dicom"
    return None


def _check_bits(bits: int | None) -> int | None:
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= 16:
        raise MammoError(f"bits must be an integer from 1 to 16, got {bits!r}")
    return int(bits)


def _apply_bits(pixels: np.ndarray, bits: int | None, path: Path) -> int | None:
    """The bit depth to scale a non-DICOM image by: its container's (8 / 16) unless ``bits``
    says a 16-bit container holds fewer; then no pixel may exceed ``2**bits - 1``."""
    container = _container_bits(pixels.dtype)
    if bits is None or container is None or container <= 8:
        return container
    top = (1 << bits) - 1
    hi = int(pixels.max()) if pixels.size else 0
    if hi > top:
        raise PatchReadError(f"pixel value {hi} does not fit {bits} bits (top {top}); "
                             f"is --bits {bits} right for this file?", path)
    return bits


def _read_pixels(path: Path, bits: int | None = None) -> tuple[np.ndarray, bool, int | None]:
    """Read a file as (image (H, W), False, bits) or (stack (N, H, W), True, bits)."""
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
    kind = _file_kind(path)
    if kind is None:
        raise PatchReadError(
            "unknown file type: expected " + ", ".join(sorted(READ_EXTENSIONS))
            + " or DICOM", path)
    try:
        if kind == "npy":
            big = path.stat().st_size > _MMAP_MIN_BYTES  # stacks: memory-map, load rows lazily
            pixels, stack = _npy_as_images(_load_npy(path, PatchReadError, mmap=big), path, PatchReadError)
            return pixels, stack, _apply_bits(pixels, bits, path)
        if kind == "cv2":
            pixels = _cv2_read(path)
            return pixels, False, _apply_bits(pixels, bits, path)
        return _dicom_read(path)
    except MammoError:
        raise
    except MemoryError:
        raise PatchReadError("image too large to load", path) from None


def read_image(path: str | Path) -> np.ndarray:
    """One image file at full size: 2-D, native dtype (uint8 / uint16; float only from .npy).

    Raises ``PatchReadError(reason, path)`` for anything it cannot read, including stacked
    arrays and multi-frame DICOM (use ``read_patches`` for those).
    """
    return read_image_bits(path)[0]


def read_image_bits(path: str | Path, bits: int | None = None) -> tuple[np.ndarray, int | None]:
    """``read_image`` plus the bit depth to scale the image by (see ``Patch.bits``): BitsStored
    for DICOM, else the container's depth or ``bits`` for a 16-bit container holding fewer."""
    path = Path(path)
    pixels, stack, depth = _read_pixels(path, _check_bits(bits))
    if stack:
        what = "multi-frame DICOM" if path.suffix.lower() != ".npy" else "stacked array"
        raise PatchReadError(f"{what} of {pixels.shape[0]} patches; read it with read_patches", path)
    return pixels, depth


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


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


# --------------------------------------------------------------------------- labels files
def _validate_labels(labels: np.ndarray, path: Path, n_images: int | None,
                     image_file: Path | None = None) -> np.ndarray:
    """Labels (N,) or (N, 1) of an integer dtype, all in 0..4, N equal to the images' length."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DatasetError(f"labels must be a 1-D array, got shape {labels.shape}", path)
    if labels.dtype.kind not in "ui":
        raise DatasetError(f"labels must be integers 0-{N_LABELS - 1}, got dtype {labels.dtype}", path)
    labels = np.asarray(labels).astype(np.int64)
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= N_LABELS:
            bad = int(np.flatnonzero((labels < 0) | (labels >= N_LABELS))[0])
            raise DatasetError(
                f"labels out of range 0-{N_LABELS - 1}: found {lo}..{hi} (first bad at index {bad})", path)
    if n_images is not None and labels.shape[0] != n_images:
        other = f" in {image_file.name}" if image_file is not None else ""
        raise DatasetError(f"{labels.shape[0]} labels for {n_images} images{other}", path)
    return labels


def _labels_file_for(tensor: Path) -> Path | None:
    if not tensor.name.endswith(TENSOR_SUFFIX):
        return None
    return tensor.with_name(tensor.name[: -len(TENSOR_SUFFIX)] + LABELS_SUFFIX)


# --------------------------------------------------------------------------- many patches
LABELS_CSV = "labels.csv"


def _csv_labels(folder: Path, errors: list[ReadFailure], cache: dict[Path, dict[str, int]]) -> dict[str, int]:
    """``{file name: 0-4 label}`` from ``labels.csv`` (columns ``file`` and ``label``) in ``folder``,
    as written beside sample patches; empty when there is none. A bad file is reported once."""
    if folder in cache:
        return cache[folder]
    cache[folder] = {}
    path = folder / LABELS_CSV
    if not os.path.lexists(path):
        return cache[folder]
    import csv

    try:
        try:
            text = read_bytes(path, SMALL_FILE_BYTES).decode("utf-8")
        except UnsafeFile as exc:
            raise ValueError(str(exc)) from None
        rows = list(csv.DictReader(_StringIO(text, newline="")))
        out = {}
        for i, row in enumerate(rows, start=2):
            if row.get("file") is None or row.get("label") is None:
                raise ValueError("needs columns 'file' and 'label'")
            label = int(row["label"])
            if not 0 <= label < N_LABELS:
                raise ValueError(f"label {label} out of range 0-{N_LABELS - 1} on line {i}")
            out[row["file"]] = label
        cache[folder] = out
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        errors.append(ReadFailure(str(path), f"{exc} (patches loaded without labels)"))
    return cache[folder]


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


def _patches_from_file(path: Path, errors: list[ReadFailure],
                       label_cache: dict[Path, dict[str, int]] | None = None,
                       bits: int | None = None) -> list[Patch]:
    pixels, stack, depth = _read_pixels(path, bits)
    source = str(path)
    check_patch_size(pixels.shape[-2:], path)
    if not stack:
        orig = tuple(int(s) for s in pixels.shape)
        label = _csv_labels(path.parent, errors, {} if label_cache is None else label_cache).get(path.name)
        return [Patch(_readonly(resize_patch(pixels)), source, None, label, orig, bits=depth)]
    labels = None
    label_file = _labels_file_for(path) if path.suffix.lower() == ".npy" else None
    if label_file is not None and os.path.lexists(label_file):
        try:
            labels = _validate_labels(_load_npy(label_file, DatasetError, mmap=False),
                                      label_file, pixels.shape[0], path)
        except MammoError as err:
            errors.append(ReadFailure(str(label_file), err.problem + " (patches loaded without labels)"))
    orig = tuple(int(s) for s in pixels.shape[1:])
    return [
        Patch(_readonly(resize_patch(np.asarray(pixels[i]))), source, i,
              None if labels is None else int(labels[i]), orig, bits=depth)
        for i in range(pixels.shape[0])
    ]


def _folder_files(folder: Path, recursive: bool, errors: list[ReadFailure],
                  visited: set[tuple[int, int]] | None = None) -> list[Path]:
    """Readable-looking files of ``folder`` in name order (sub-folders too when ``recursive``).
    Every folder is entered once, by its ``(st_dev, st_ino)``, so symlink cycles end."""
    out: list[Path] = []
    if visited is None:
        visited = set()
    try:
        st = folder.stat()
    except OSError:
        st = None
    if st is not None:
        if (st.st_dev, st.st_ino) in visited:
            return out
        visited.add((st.st_dev, st.st_ino))
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        errors.append(ReadFailure(str(folder), f"cannot list folder: {exc.strerror or exc}"))
        return out
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if recursive:
                out.extend(_folder_files(entry, recursive, errors, visited))
            continue
        if entry.name.endswith(LABELS_SUFFIX):
            continue  # labels of X_tensor.npy, attached to its patches; never a patch itself
        ext = entry.suffix.lower()
        if ext in READ_EXTENSIONS or (ext == "" and _has_dicom_preamble(entry)):
            out.append(entry)
    return out


def read_patches(paths: str | Path | Iterable[str | Path], *, recursive: bool = False,
                 bits: int | None = None) -> PatchCollection:
    """Read any mix of image files, stacked ``.npy`` arrays and folders into patches.

    Files in a folder are read in sorted name order (subfolders too when ``recursive``, each
    folder once however many symlinks lead to it); only known extensions are tried there. Only
    regular files are read (a FIFO or device is refused without blocking), at most
    ``MAMMO_MAX_FILE_BYTES`` bytes and ``MAMMO_MAX_PIXELS`` pixels each. ``bits`` (1-16) says
    that 16-bit PNG / TIFF / ``.npy`` containers hold only that many bits (DICOM uses its own
    BitsStored). A file that cannot be read becomes a ``ReadFailure`` and the others still
    load; this function never raises for one bad file.
    """
    bits = _check_bits(bits)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result = PatchCollection()
    label_cache: dict[Path, dict[str, int]] = {}
    visited: set[tuple[int, int]] = set()
    for given in paths:
        p = Path(given)
        if p.is_dir():
            files = _folder_files(p, recursive, result.errors, visited)
        elif os.path.lexists(p):
            files = [p]
        else:
            result.errors.append(ReadFailure(str(p), "no such file or folder"))
            continue
        for f in files:
            try:
                result.patches.extend(_patches_from_file(f, result.errors, label_cache, bits))
            except MammoError as err:
                result.errors.append(ReadFailure(str(f), err.problem,
                                                 whole_image=isinstance(err, NotAPatchError)))
    return result


# --------------------------------------------------------------------------- model input
def scale_to_unit(images: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Intensities to float32 in [0, 1] by bit depth: ``pixels / (2**bits - 1)``, ``bits``
    defaulting to the container's (uint16 / 65535, uint8 / 255); a 12-bit image passes
    ``bits=12`` (/ 4095). Float must already be finite and in [0, 1]."""
    a = np.asarray(images)
    if a.dtype in (np.uint8, np.uint16):
        container = a.dtype.itemsize * 8
        depth = container if bits is None else _check_bits(bits)
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


# --------------------------------------------------------------------------- patch arrays
pairs_ok = has_pair_layout  # the pair-layout check, defined in mammo_core.labels


def _validate_images(images: np.ndarray, path: Path) -> np.ndarray:
    shape = images.shape
    if images.ndim == 4 and shape[1:] == (*PATCH_SHAPE, 1):
        images = images[..., 0]
    elif not (images.ndim == 3 and shape[1:] == PATCH_SHAPE):
        raise DatasetError(f"images must be (N, 150, 150) or (N, 150, 150, 1), got shape {shape}", path)
    if images.shape[0] == 0:
        raise DatasetError("no patches (N = 0)", path)
    images = _check_pixel_dtype(images, path, DatasetError)
    _check_finite(images, path, DatasetError)
    return images


def validate_split(split: Split) -> Split:
    """Check one split and return it with images as (N, 150, 150) and labels as int64 (N,).

    Raises ``DatasetError`` naming the file: wrong shape, unsupported dtype, NaN/inf, labels
    not integers in 0-4, or a different number of labels and images. The pair layout is not
    checked here (see ``pairs_ok``): a violation is reported, not refused.
    """
    images = _validate_images(split.images, split.image_file)
    labels = split.labels
    if labels is not None:
        labels = _validate_labels(np.asarray(labels), split.label_file or split.image_file,
                                  images.shape[0], split.image_file)
    return Split(split.name, images, labels, split.image_file, split.label_file)


def load_patch_arrays(folder: str | Path) -> PatchArrays:
    """Read and validate a CBIS-DDSM patch-array folder.

    Expects ``<split>_tensor.npy`` with ``<split>_labels.npy`` for ``train`` and
    ``public_test``, and optionally ``private_test_tensor.npy`` (labels optional). Images are
    memory-mapped read-only. Raises ``DatasetError`` naming the file and the problem.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError("no such folder", folder)
    if not folder.is_dir():
        raise DatasetError("not a folder: expected a folder of <split>_tensor.npy / <split>_labels.npy", folder)
    splits: dict[str, Split] = {}
    for name in SPLIT_NAMES:
        image_file = folder / f"{name}{TENSOR_SUFFIX}"
        label_file = folder / f"{name}{LABELS_SUFFIX}"
        for f in (image_file, label_file):
            if os.path.lexists(f) and not is_regular(f):
                if os.path.exists(f):
                    raise DatasetError("not a regular file (a folder or special file named like a "
                                       "patch array)", f)
                raise DatasetError(missing_reason(f), f)
        if not image_file.is_file():
            if label_file.is_file():
                raise DatasetError(f"labels without images: {image_file.name} is missing", label_file)
            continue
        images = _load_npy(image_file, DatasetError, mmap=True)
        labels = None
        if label_file.is_file():
            labels = _load_npy(label_file, DatasetError, mmap=False)
        elif name in LABELLED_SPLITS:
            raise DatasetError(f"labels file {label_file.name} is missing", image_file)
        splits[name] = validate_split(Split(name, images, labels, image_file,
                                            label_file if labels is not None else None))
    if not splits:
        raise DatasetError(
            "no patch arrays found: expected train_tensor.npy / train_labels.npy, "
            "public_test_tensor.npy / public_test_labels.npy (private_test_tensor.npy optional)",
            folder)
    return PatchArrays(folder, splits)


def pixel_range(images: np.ndarray) -> tuple[float, float]:
    """(min, max) of a possibly memory-mapped stack, scanned in chunks; ints for int dtypes."""
    lo, hi = None, None
    for start in range(0, images.shape[0], _CHUNK_ROWS):
        chunk = np.asarray(images[start:start + _CHUNK_ROWS])
        cmin, cmax = chunk.min(), chunk.max()
        lo = cmin if lo is None else min(lo, cmin)
        hi = cmax if hi is None else max(hi, cmax)
    if images.dtype.kind in "ui":
        return int(lo), int(hi)
    return float(lo), float(hi)


# --------------------------------------------------------------------------- study preprocessing
def drop_baselines(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove baseline patches (label 0), as the study did for its two-class tasks."""
    labels = np.asarray(labels)
    keep = labels != BASELINE
    return np.asarray(images)[keep], labels[keep]


def select_task(images: np.ndarray, labels: np.ndarray,
                task: str | Task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the patches of ``task`` and remap their 0-4 labels to the task's classes.

    Returns ``(images, task_labels, keep_mask)`` (``keep_mask`` over the input rows).
    """
    t = get_task(task) if isinstance(task, str) else task
    keep, task_labels = t.map_labels(labels)
    return np.asarray(images)[keep], task_labels, keep


__all__ = [
    "PATCH_SHAPE",
    "PATCH_SIZE",
    "READ_EXTENSIONS",
    "SPLIT_NAMES",
    "Patch",
    "PatchArrays",
    "PatchCollection",
    "ReadFailure",
    "Split",
    "check_patch_size",
    "drop_baselines",
    "load_patch_arrays",
    "pairs_ok",
    "pixel_range",
    "read_image",
    "read_image_bits",
    "read_patches",
    "resize_patch",
    "scale_to_unit",
    "select_task",
    "to_model_input",
    "validate_split",
]
