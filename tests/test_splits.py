"""Grouped splits: pairs and patients are never split; stratified; reproducible."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from mammo_core.datasets.splits import grouped_kfold, grouped_split, groups_for_arrays
from mammo_core.errors import DatasetError


def pair_labels(rng, n_pairs, classes=(1, 2, 3, 4), p=None):
    lab = np.zeros(2 * n_pairs, np.int64)
    lab[1::2] = rng.choice(classes, size=n_pairs, p=p)
    return lab


def test_grouped_split_keeps_pairs_and_patients(rng):
    labels = pair_labels(rng, 300, p=[0.4, 0.3, 0.2, 0.1])
    patients = np.repeat(rng.integers(0, 90, size=300), 2)
    tr, te = grouped_split(labels, patients, 0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(labels.size))
    assert not set(patients[tr]) & set(patients[te])
    assert not set(tr // 2) & set(te // 2)
    # every pair whole and in order: baseline then abnormality
    assert np.all(labels[tr][0::2] == 0) and np.all(labels[tr][1::2] > 0)
    # stratified: each class's share in test near 0.2
    for c in (1, 2, 3, 4):
        share = np.sum(labels[te] == c) / np.sum(labels == c)
        assert 0.1 < share < 0.3, (c, share)
    # reproducible, and the seed matters
    _, te2 = grouped_split(labels, patients, 0.2, seed=3)
    assert np.array_equal(te, te2)
    assert not np.array_equal(te, grouped_split(labels, patients, 0.2, seed=4)[1])


def test_pair_with_two_groups_merges_them(rng):
    labels = pair_labels(rng, 40)
    groups = np.arange(80)          # every patch its own group: pairs must still stay whole
    tr, te = grouped_split(labels, groups, 0.25, seed=0)
    assert not set(tr // 2) & set(te // 2)
    assert te.size > 0


def test_fraction_zero_and_bad_fraction(rng):
    labels = pair_labels(rng, 10)
    tr, te = grouped_split(labels, None, 0.0, seed=0)
    assert tr.tolist() == list(range(20)) and te.size == 0
    with pytest.raises(DatasetError):
        grouped_split(labels, None, 1.0, seed=0)


def test_grouped_kfold(rng):
    labels = pair_labels(rng, 120)
    patients = np.repeat(rng.integers(0, 50, size=120), 2)
    folds = grouped_kfold(labels, patients, 5, seed=1)
    assert len(folds) == 5
    seen = np.concatenate([va for _, va in folds])
    assert np.array_equal(np.sort(seen), np.arange(labels.size))
    for tr, va in folds:
        assert not set(patients[tr]) & set(patients[va])
        assert not set(tr // 2) & set(va // 2)
    again = grouped_kfold(labels, patients, 5, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    with pytest.raises(DatasetError):
        grouped_kfold(labels[:4], None, 5, seed=0)


def test_groups_for_arrays_from_folder(tmp_path):
    labels = np.array([0, 1, 0, 3, 0, 2, 0, 4])
    np.save(tmp_path / "train_labels.npy", labels)
    # without metadata: the pair index
    assert groups_for_arrays(tmp_path).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert groups_for_arrays(labels).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    with open(tmp_path / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "split", "patient"])
        for i, p in enumerate(["7", "7", "9", "9", "7", "7", "5", "5"]):
            w.writerow([i, "train", p])
        w.writerow([0, "public_test", "7"])
        w.writerow([1, "public_test", "7"])
    g = groups_for_arrays(tmp_path)
    assert g.tolist() == [0, 0, 1, 1, 0, 0, 2, 2]
    tr, te = grouped_split(labels, g, 0.5, seed=0)
    assert not set(g[tr]) & set(g[te])
    np.save(tmp_path / "train_labels.npy", labels[:6])
    with pytest.raises(DatasetError, match="metadata.csv"):
        groups_for_arrays(tmp_path)
