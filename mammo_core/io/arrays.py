"""CBIS-DDSM patch arrays and the study's preprocessing.

``load_patch_arrays(folder)`` reads and validates ``train_tensor.npy`` / ``train_labels.npy``,
``public_test_tensor.npy`` / ``public_test_labels.npy`` and optionally
``private_test_tensor.npy`` (labels optional), memory-mapped read-only so big arrays load once;
every problem is a ``DatasetError`` naming the file. ``drop_baselines`` and ``select_task`` are
the study's preprocessing; ``pixel_range`` scans a memory-mapped stack in chunks.

Research use only — not a medical device.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_core.contract import PATCH_SHAPE
from mammo_core.errors import DatasetError
from mammo_core.io.labelfiles import validate_labels
from mammo_core.io.npy import CHUNK_ROWS, check_finite, check_pixel_dtype, load_npy
from mammo_core.io.patch import LABELLED_SPLITS, LABELS_SUFFIX, SPLIT_NAMES, TENSOR_SUFFIX
from mammo_core.labels import BASELINE, Task, get_task, has_pair_layout
from mammo_core.safeio import is_regular, missing_reason

pairs_ok = has_pair_layout  # the pair-layout check, defined in mammo_core.labels


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

def _validate_images(images: np.ndarray, path: Path) -> np.ndarray:
    shape = images.shape
    if images.ndim == 4 and shape[1:] == (*PATCH_SHAPE, 1):
        images = images[..., 0]
    elif not (images.ndim == 3 and shape[1:] == PATCH_SHAPE):
        raise DatasetError(f"images must be (N, 150, 150) or (N, 150, 150, 1), got shape {shape}", path)
    if images.shape[0] == 0:
        raise DatasetError("no patches (N = 0)", path)
    images = check_pixel_dtype(images, path, DatasetError)
    check_finite(images, path, DatasetError)
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
        labels = validate_labels(np.asarray(labels), split.label_file or split.image_file,
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
        images = load_npy(image_file, DatasetError, mmap=True)
        labels = None
        if label_file.is_file():
            labels = load_npy(label_file, DatasetError, mmap=False)
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
    for start in range(0, images.shape[0], CHUNK_ROWS):
        chunk = np.asarray(images[start:start + CHUNK_ROWS])
        cmin, cmax = chunk.min(), chunk.max()
        lo = cmin if lo is None else min(lo, cmin)
        hi = cmax if hi is None else max(hi, cmax)
    if images.dtype.kind in "ui":
        return int(lo), int(hi)
    return float(lo), float(hi)


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

