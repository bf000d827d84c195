"""Loading a task's training and held-out data from a CBIS-DDSM-layout folder.

Training uses ``train_*`` (the validation part is carved from it, grouped by pair or by
patient where ``metadata.csv`` gives patient ids); ``public_test_*`` is the held-out split,
evaluated once at the end.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_core import io
from mammo_core.bundle import sha256_file
from mammo_core.contract import INPUT_SHAPE
from mammo_core.datasets.splits import groups_for_arrays
from mammo_core.errors import DatasetError
from mammo_core.labels import get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskData:
    """One task's arrays: float32 (N,150,150,1) in [0,1], task labels, groups for splitting."""

    task: str
    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    groups_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    grouping: str  # "patient" or "pair"
    provenance: dict

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _counts(y: np.ndarray, classes) -> dict[str, int]:
    c = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes))
    return {name: int(c[i]) for i, name in enumerate(classes)}


def flat_patches(x: np.ndarray) -> np.ndarray:
    """Boolean mask of patches whose every pixel has one value (a flat grey image)."""
    x = np.asarray(x)
    if len(x) == 0:
        return np.zeros(0, dtype=bool)
    flat = x.reshape(len(x), -1)
    return flat.min(axis=1) == flat.max(axis=1)


def check_classes(y: np.ndarray, classes, task: str, where: Path) -> None:
    """Refuse a training set without a patch of every class the task needs (counts per class)."""
    counts = _counts(y, classes)
    missing = [c for c, n in counts.items() if n == 0]
    if missing:
        raise DatasetError(f"task {task} needs every class {list(classes)} in training; "
                           f"{', '.join(missing)} missing (counts: "
                           + ", ".join(f"{c} {n}" for c, n in counts.items()) + ")", where)


def load_task_data(folder: str | Path, task: str) -> TaskData:
    folder = Path(folder)
    t = get_task(task)
    arrays = io.load_patch_arrays(folder)
    if "train" not in arrays.splits:
        raise DatasetError("no train_tensor.npy / train_labels.npy", folder)
    if "public_test" not in arrays.splits:
        raise DatasetError("no public_test_tensor.npy / public_test_labels.npy (the held-out split)", folder)
    tr, te = arrays.splits["train"], arrays.splits["public_test"]
    for s in (tr, te):
        if s.labels is None:
            raise DatasetError(f"split {s.name!r} has no labels", folder)
    groups_all = groups_for_arrays(folder, split="train")
    has_patients = (folder / "metadata.csv").is_file() and not np.array_equal(
        groups_all, np.arange(len(groups_all)) // 2)
    x_tr, y_tr, keep_tr = io.select_task(tr.images, tr.labels, t.name)
    x_te, y_te, _ = io.select_task(te.images, te.labels, t.name)
    if len(y_tr) == 0 or len(y_te) == 0:
        raise DatasetError(f"no patches of task {t.name!r} in train or public_test", folder)
    flat = flat_patches(x_tr)
    if flat.any():  # a uniform patch carries no image: never a labelled training example
        idx = np.flatnonzero(np.asarray(keep_tr, dtype=bool))[flat]
        log.warning("%s: %d uniform (flat) train_* patch(es) left out of training: indices %s",
                    folder, len(idx), ", ".join(map(str, idx[:10])) + (" ..." if len(idx) > 10 else ""))
        keep_tr = np.asarray(keep_tr, dtype=bool).copy()
        keep_tr[idx] = False
        x_tr, y_tr = x_tr[~flat], y_tr[~flat]
    check_classes(y_tr, t.classes, t.name, folder / "train_labels.npy")
    provenance = {
        "path": str(folder.resolve()),
        "sha256": {Path(f).name: sha256_file(f) for s in (tr, te)
                   for f in (s.image_file, s.label_file) if f is not None},
        "counts": {"train": _counts(y_tr, t.classes), "public_test": _counts(y_te, t.classes)},
    }
    return TaskData(
        task=t.name,
        classes=tuple(t.classes),
        x_train=io.scale_to_unit(x_tr).reshape(-1, *INPUT_SHAPE),
        y_train=np.asarray(y_tr, dtype=np.int64),
        groups_train=np.asarray(groups_all)[np.asarray(keep_tr, dtype=bool)],
        x_test=io.scale_to_unit(x_te).reshape(-1, *INPUT_SHAPE),
        y_test=np.asarray(y_te, dtype=np.int64),
        grouping="patient" if has_patients else "pair",
        provenance=provenance,
    )


def smoke_subset(data: TaskData, per_class: int = 8, test_per_class: int = 6, seed: int = 0) -> TaskData:
    """A few patches per class (for ``--smoke``), chosen with ``seed``."""
    rng = np.random.default_rng(seed)

    def pick(y, k):
        idx = [rng.permutation(np.flatnonzero(y == c))[:k] for c in range(data.n_classes)]
        return np.sort(np.concatenate(idx))

    i_tr, i_te = pick(data.y_train, per_class), pick(data.y_test, test_per_class)
    prov = dict(data.provenance)
    prov["smoke_subset"] = {"train": len(i_tr), "public_test": len(i_te)}
    return TaskData(data.task, data.classes, data.x_train[i_tr], data.y_train[i_tr],
                    data.groups_train[i_tr], data.x_test[i_te], data.y_test[i_te], data.grouping, prov)
