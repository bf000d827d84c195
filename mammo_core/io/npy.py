""".npy files read safely: never unpickled, the header checked against the file size before
anything is allocated, big arrays memory-mapped; pixel dtype and range checks shared with the
patch-array loader.

Research use only — not a medical device.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from mammo_core.contract import PATCH_SHAPE
from mammo_core.errors import MammoError, PatchReadError
from mammo_core.io.patch import short_problem
from mammo_core.safeio import UnsafeFile, max_file_bytes, open_regular, pixel_limit_problem

NPY_EXTENSIONS = frozenset({".npy"})
CHUNK_ROWS = 2048  # rows per chunk when scanning big memory-mapped arrays


def load_npy(path: Path, error_cls: type[MammoError] = PatchReadError, *, mmap: bool = True) -> np.ndarray:
    """Load a .npy file safely: never unpickles, checks the header against the file size first
    (so a truncated or lying header cannot trigger a huge allocation), memory-maps when asked."""
    try:
        fd, st = open_regular(path)
    except UnsafeFile as exc:
        raise error_cls(str(exc), path) from None
    with os.fdopen(fd, "rb") as fh:
        return load_npy_from(fh, st.st_size, path, error_cls, mmap)


def load_npy_from(fh, size: int, path: Path, error_cls: type[MammoError], mmap: bool) -> np.ndarray:
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
            raise error_cls(f"not a valid .npy file (bad header: {short_problem(exc)})", path) from None
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
            arr: np.ndarray = np.memmap(fh, dtype=dtype, mode="r", offset=data_start, shape=tuple(shape),
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
        raise error_cls(f"cannot load .npy file: {short_problem(exc)}", path) from None
    return arr


def read_limit() -> int:
    """Most bytes read into memory from one file (``MAMMO_MAX_FILE_BYTES``)."""
    return max_file_bytes()


def check_pixel_dtype(arr: np.ndarray, path: Path, error_cls: type[MammoError]) -> np.ndarray:
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


def check_finite(arr: np.ndarray, path: Path, error_cls: type[MammoError]) -> None:
    """Float pixels must be finite and in [0, 1] (the models' input range): checked for every
    patch of the file here, in the reader, so one bad file is one error and not a failed batch."""
    if arr.dtype.kind != "f":
        return
    rows = arr.reshape(arr.shape[0], -1) if arr.ndim >= 3 else arr.reshape(1, -1)
    for start in range(0, rows.shape[0], CHUNK_ROWS):
        chunk = np.asarray(rows[start:start + CHUNK_ROWS])
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


def npy_as_images(arr: np.ndarray, path: Path, error_cls: type[MammoError]) -> tuple[np.ndarray, bool]:
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
    out = check_pixel_dtype(out, path, error_cls)
    check_finite(out, path, error_cls)
    return out, stack


