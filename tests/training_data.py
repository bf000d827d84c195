"""Synthetic CBIS-DDSM-layout folders for the training tests (seeded, uint16, pair layout).

Every abnormality class appears in every split, and the classes differ visibly (a bright disc
for masses, a grid of bright dots for calcifications, brighter for malignant), so a few
epochs learn something.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _patch(rng: np.random.Generator, label: int) -> np.ndarray:
    img = rng.integers(0, 15000, size=(150, 150)).astype(np.uint16)
    yy, xx = np.mgrid[:150, :150]
    level = 20000 if label in (1, 3) else 40000
    cy, cx = rng.integers(55, 95, size=2)
    if label in (1, 2):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 600] += level
    elif label in (3, 4):
        img[(yy % 9 == 0) & (xx % 9 == 0) & ((yy - cy) ** 2 + (xx - cx) ** 2 < 1600)] += level
    return img


def make_cbis_folder(folder: Path, *, n_train_pairs: int = 16, n_test_pairs: int = 8, seed: int = 0,
                     patients: bool = False) -> Path:
    """Write train_* and public_test_* arrays (and metadata.csv with patient ids if asked)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, n in (("train", n_train_pairs), ("public_test", n_test_pairs)):
        abn = np.resize(np.array([1, 2, 3, 4]), n)
        rng.shuffle(abn)
        labels = np.zeros(2 * n, dtype=np.int64)
        labels[1::2] = abn
        images = np.stack([_patch(rng, int(l)) for l in labels])
        np.save(folder / f"{split}_tensor.npy", images)
        np.save(folder / f"{split}_labels.npy", labels)
        for i, l in enumerate(labels):  # two pairs per patient
            rows.append({"index": i, "split": split, "pair": i // 2,
                         "patient": f"{split[:2]}{i // 4}", "label": int(l)})
    if patients:
        with open(folder / "metadata.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return folder


def random_vgg16_weights(path: Path, seed: int = 0) -> Path:
    """A VGG16 (no top, 150 x 150 x 3) weights file with seeded random initial weights: the
    pooled members' backbone in tests (the real ImageNet file lives in ../shared only)."""
    import keras

    keras.utils.set_random_seed(seed)
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(150, 150, 3)).save_weights(path)
    return path
