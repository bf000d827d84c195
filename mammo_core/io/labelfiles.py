"""Labels beside patches: ``X_labels.npy`` for the rows of ``X_tensor.npy`` (checked: integers
0-4, one per image) and ``labels.csv`` (columns ``file``, ``label``) beside single image files,
as written with the sample patches.

Research use only — not a medical device.
"""
from __future__ import annotations

import csv
import os
from io import StringIO
from pathlib import Path

import numpy as np

from mammo_core.errors import DatasetError
from mammo_core.io.patch import LABELS_SUFFIX, TENSOR_SUFFIX, ReadFailure
from mammo_core.labels import N_LABELS
from mammo_core.safeio import SMALL_FILE_BYTES, UnsafeFile, read_bytes

LABELS_CSV = "labels.csv"


def validate_labels(labels: np.ndarray, path: Path, n_images: int | None,
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


def labels_file_for(tensor: Path) -> Path | None:
    """``X_labels.npy`` beside ``X_tensor.npy``; None for other names."""
    if not tensor.name.endswith(TENSOR_SUFFIX):
        return None
    return tensor.with_name(tensor.name[: -len(TENSOR_SUFFIX)] + LABELS_SUFFIX)


def csv_labels(folder: Path, errors: list[ReadFailure], cache: dict[Path, dict[str, int]]) -> dict[str, int]:
    """``{file name: 0-4 label}`` from ``labels.csv`` (columns ``file`` and ``label``) in ``folder``,
    as written beside sample patches; empty when there is none. A bad file is reported once."""
    if folder in cache:
        return cache[folder]
    cache[folder] = {}
    path = folder / LABELS_CSV
    if not os.path.lexists(path):
        return cache[folder]
    try:
        try:
            text = read_bytes(path, SMALL_FILE_BYTES).decode("utf-8")
        except UnsafeFile as exc:
            raise ValueError(str(exc)) from None
        rows = list(csv.DictReader(StringIO(text, newline="")))
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
