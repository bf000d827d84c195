"""Many patches at once: ``read_patches(paths)`` over any mix of files, stacked ``.npy`` arrays
(N, 150, 150[, 1]) (one patch per row), multi-frame DICOM (one patch per frame) and folders.

Files in a folder are read in sorted name order (sub-folders too when ``recursive``, each folder
once by ``(st_dev, st_ino)`` however many symlinks lead to it); only known extensions are tried
there (``READ_EXTENSIONS`` and extension-less DICOM with the ``DICM`` preamble), hidden files
are skipped and ``X_labels.npy`` is never a patch: its labels are attached to the rows of
``X_tensor.npy`` beside it. A file that cannot be read becomes a ``ReadFailure`` and the
others still load: this never raises for one bad file.

Research use only — not a medical device.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mammo_core.errors import DatasetError, MammoError, NotAPatchError
from mammo_core.io.dicom import has_dicom_preamble
from mammo_core.io.image import READ_EXTENSIONS, check_bits, check_patch_size, read_pixels, resize_patch
from mammo_core.io.labelfiles import csv_labels, labels_file_for, validate_labels
from mammo_core.io.npy import load_npy
from mammo_core.io.patch import LABELS_SUFFIX, Patch, PatchCollection, ReadFailure, readonly


def _patches_from_file(path: Path, errors: list[ReadFailure],
                       label_cache: dict[Path, dict[str, int]] | None = None,
                       bits: int | None = None) -> list[Patch]:
    pixels, stack, depth, ref = read_pixels(path, bits)
    source = str(path)
    check_patch_size(pixels.shape[-2:], path)
    if not stack:
        orig = tuple(int(s) for s in pixels.shape)
        label = csv_labels(path.parent, errors, {} if label_cache is None else label_cache).get(path.name)
        return [Patch(readonly(resize_patch(pixels)), source, None, label, orig, bits=depth,
                      source_ref=ref)]
    labels = None
    label_file = labels_file_for(path) if path.suffix.lower() == ".npy" else None
    if label_file is not None and os.path.lexists(label_file):
        try:
            labels = validate_labels(load_npy(label_file, DatasetError, mmap=False),
                                     label_file, pixels.shape[0], path)
        except MammoError as err:
            errors.append(ReadFailure(str(label_file), err.problem + " (patches loaded without labels)"))
    orig = tuple(int(s) for s in pixels.shape[1:])
    return [
        Patch(readonly(resize_patch(np.asarray(pixels[i]))), source, i,
              None if labels is None else int(labels[i]), orig, bits=depth,
              source_ref=None if ref is None else ref.with_frame(i))
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
        if ext in READ_EXTENSIONS or (ext == "" and has_dicom_preamble(entry)):
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
    bits = check_bits(bits)
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

