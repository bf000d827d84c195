"""Grouped, stratified splits that never separate a baseline/abnormality pair or a patient.

Used by the dataset builders (train / public-test split of mini-MIAS) and by training
(validation split, k-fold). All functions are deterministic given ``seed``.

Units: when ``labels`` has the CBIS-DDSM pair layout (even length, a baseline 0 at every even
index, an abnormality 1-4 at every odd index) the unit of splitting is the pair and it is
stratified on the pair's abnormality label; otherwise each patch is a unit stratified on its
own label. Groups (patients) that share a pair are merged, so neither a pair nor a patient is
ever split.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mammo_core.errors import DatasetError
from mammo_core.labels import has_pair_layout

__all__ = ["check_split", "grouped_kfold", "grouped_split", "groups_for_arrays", "has_pair_layout"]


def _units(labels: np.ndarray, groups: np.ndarray | None):
    """(unit members [list of index arrays], unit strat labels, unit group codes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DatasetError(f"labels must be 1-D, got shape {labels.shape}")
    n = labels.size
    if groups is None:
        groups = np.arange(n) // 2 if has_pair_layout(labels) else np.arange(n)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise DatasetError(f"groups must have one entry per label ({n}), got shape {groups.shape}")
    _, gcode = np.unique(groups, return_inverse=True)
    if has_pair_layout(labels):
        members = [np.array([2 * i, 2 * i + 1]) for i in range(n // 2)]
        strat = labels[1::2].astype(np.int64)
    else:
        members = [np.array([i]) for i in range(n)]
        strat = labels.astype(np.int64)
    # union-find over group codes: a pair whose two patches carry different groups joins them
    parent = list(range(int(gcode.max()) + 1 if n else 0))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for m in members:
        roots = {find(int(gcode[i])) for i in m}
        r0 = min(roots)
        for r in roots:
            parent[r] = r0
    ugroup = np.array([find(int(gcode[m[0]])) for m in members], dtype=np.int64)
    return members, strat, ugroup


def _expand(members: Sequence[np.ndarray], unit_idx: Iterable[int]) -> np.ndarray:
    idx = [members[u] for u in unit_idx]
    return np.sort(np.concatenate(idx)).astype(np.int64) if idx else np.zeros(0, np.int64)


def grouped_split(labels: np.ndarray, groups: np.ndarray | None, fraction: float,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split patch indices into ``(train_idx, test_idx)`` with about ``fraction`` of the units
    of every class in the test part, keeping pairs and groups whole; sorted indices.

    Greedy and reproducible: groups are shuffled with ``seed``, ordered largest first (the
    shuffle breaks ties), and each is put in the test part when that brings the per-class test
    counts closer (squared error) to ``fraction`` x the class totals. ``fraction`` 0 puts
    everything in train.
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise DatasetError(f"split fraction must be in [0, 1), got {fraction}")
    members, strat, ugroup = _units(labels, groups)
    n_units = len(members)
    if fraction == 0 or n_units == 0:
        return _expand(members, range(n_units)), np.zeros(0, np.int64)
    classes, scode = np.unique(strat, return_inverse=True)
    gids = np.unique(ugroup)
    counts = np.zeros((gids.size, classes.size), dtype=np.int64)
    gpos = np.searchsorted(gids, ugroup)
    np.add.at(counts, (gpos, scode), 1)
    target = fraction * counts.sum(axis=0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(gids.size)
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    cur = np.zeros(classes.size)
    in_test = np.zeros(gids.size, dtype=bool)
    for g in order:
        new = cur + counts[g]
        if np.sum((new - target) ** 2) < np.sum((cur - target) ** 2):
            cur = new
            in_test[g] = True
    test_units = np.flatnonzero(in_test[gpos])
    train_units = np.flatnonzero(~in_test[gpos])
    return _expand(members, train_units), _expand(members, test_units)


def grouped_kfold(labels: np.ndarray, groups: np.ndarray | None, k: int,
                  seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds ``[(train_idx, val_idx), ...]`` from scikit-learn's StratifiedGroupKFold
    (shuffled with ``seed``) over pairs/patches, keeping pairs and groups whole."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = int(k)
    if k < 2:
        raise DatasetError(f"k-fold needs k >= 2, got {k}")
    members, strat, ugroup = _units(labels, groups)
    n_groups = np.unique(ugroup).size
    if n_groups < k:
        raise DatasetError(f"cannot make {k} folds from {n_groups} groups (patients/pairs)")
    skf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(seed))
    folds = []
    import warnings

    with warnings.catch_warnings():
        # "The least populated class in y has only n members" is expected on small sets
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for tr, va in skf.split(np.zeros(len(members)), strat, ugroup):
            folds.append((_expand(members, tr), _expand(members, va)))
    return folds


def _read_metadata(metadata) -> tuple[list[dict], str]:
    if isinstance(metadata, (str, Path)):
        path = Path(metadata)
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh)), str(path)
        except OSError as err:
            raise DatasetError(f"cannot read metadata: {err.strerror or err}", path) from None
        except UnicodeDecodeError as err:
            raise DatasetError(f"not a UTF-8 CSV file (byte {err.start}): a binary file?", path) from None
        except csv.Error as err:
            raise DatasetError(f"not a readable CSV file: {err}", path) from None
    return [dict(r) for r in metadata], "metadata"


def groups_for_arrays(folder_or_labels, metadata=None, split: str = "train") -> np.ndarray:
    """One integer group id per patch of ``split``.

    ``folder_or_labels`` is a patch-array folder (``<split>_labels.npy`` is read; its
    ``metadata.csv`` is used when present and ``metadata`` is None) or a labels array.
    ``metadata`` (a CSV path or a list of row dicts with ``split``, ``index`` and ``patient``)
    gives patient ids: patches of one patient share a group. Without it, the group is the pair
    index ``i // 2``.
    """
    if isinstance(folder_or_labels, (str, Path)):
        folder = Path(folder_or_labels)
        label_file = folder / f"{split}_labels.npy"
        try:
            labels = np.load(label_file, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DatasetError(f"cannot read labels: {err}", label_file) from None
        if metadata is None and (folder / "metadata.csv").is_file():
            metadata = folder / "metadata.csv"
    else:
        labels = np.asarray(folder_or_labels)
    n = int(np.asarray(labels).shape[0])
    if metadata is None:
        return np.arange(n, dtype=np.int64) // 2
    rows, name = _read_metadata(metadata)
    if rows and "split" in rows[0]:
        rows = [r for r in rows if r.get("split") == split]
    if not rows or "patient" not in rows[0] or any(not str(r.get("patient", "")).strip() for r in rows):
        return np.arange(n, dtype=np.int64) // 2
    if len(rows) != n:
        raise DatasetError(f"has {len(rows)} rows for split {split!r} but the arrays hold {n} patches",
                           name)
    if "index" in rows[0]:
        try:
            rows = sorted(rows, key=lambda r: int(r["index"]))
        except ValueError:
            raise DatasetError("column 'index' is not an integer", name) from None
        if [int(r["index"]) for r in rows] != list(range(n)):
            raise DatasetError(f"indices of split {split!r} are not 0..{n - 1}", name)
    codes: dict[str, int] = {}
    return np.array([codes.setdefault(str(r["patient"]).strip(), len(codes)) for r in rows],
                    dtype=np.int64)


def check_split(train_idx: np.ndarray, test_idx: np.ndarray, groups: np.ndarray,
                labels: np.ndarray | None = None) -> None:
    """Raise DatasetError when a group or a pair appears on both sides (a safety net)."""
    groups = np.asarray(groups)
    shared = set(groups[train_idx].tolist()) & set(groups[test_idx].tolist())
    if shared:
        raise DatasetError(f"groups on both sides of a split: {sorted(shared)[:5]}")
    if labels is not None and has_pair_layout(np.asarray(labels)):
        pairs_tr = set((np.asarray(train_idx) // 2).tolist())
        pairs_te = set((np.asarray(test_idx) // 2).tolist())
        if pairs_tr & pairs_te:
            raise DatasetError("a baseline/abnormality pair is split")
