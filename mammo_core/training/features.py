"""Cached pooled backbone features (the small-data ``transfer`` member, ``head="pooled"``).

One flat frozen VGG16 graph (the registry's ``transfer`` model with ``head="pooled"``, every
block pooled, average and max) is run once over every patch of a split and every dihedral view
(:mod:`mammo_core.tta`); each pooled layer is stored as its own ``.npy`` under
``<cache>/<data key>/<split>/view<k>/<gap|gmp>_<layer>.npy``. The data key hashes the split's
tensor file and the backbone weights file, so a changed dataset or backbone never reuses stale
features. Members then differ only in which cached blocks they concatenate. Features of
acquisition-changed training views (``--train-augment acquisition``, :func:`cached_augmented_features`)
are cached beside them under ``<split>/<augment key>/`` (:func:`augment_key`: the augmentation, its
ranges, seed, copy and the patches' dihedral views). The cache is a
plain folder of float32 arrays (no pickle) kept OUT of git (default ``runs/feature_cache``,
or ``$MAMMO_FEATURE_CACHE``).
Research use only - not a medical device.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from mammo_core.bundle import sha256_file
from mammo_core.errors import MammoError
from mammo_core.models import build_model
from mammo_core.models.transfer import pooled_keys
from mammo_core.shifts import AUGMENTS, acquisition_key, random_acquisition
from mammo_core.tta import dihedral

ALL_POOL_LAYERS = "block2_pool,block3_pool,block4_pool,block5_pool"
FEATURE_BACKBONE = "vgg16"
DEFAULT_CACHE = Path("runs") / "feature_cache"


def cache_root(cache: str | Path | None = None) -> Path:
    return Path(cache or os.environ.get("MAMMO_FEATURE_CACHE") or DEFAULT_CACHE)


def data_key(tensor_file: str | Path, weights: str | Path) -> str:
    return f"{sha256_file(tensor_file)[:16]}-{sha256_file(weights)[:12]}"


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, np.asarray(arr, np.float32), allow_pickle=False)
    os.replace(tmp, path)


def feature_model(weights: str | Path):
    """The flat frozen VGG16 with every block pooled (avg and max), outputs in ``pooled_keys``
    order: the same layers and weights as every bundled pooled member."""
    import keras

    m = build_model("transfer", 2, backbone=FEATURE_BACKBONE, head="pooled", pool_layers=ALL_POOL_LAYERS,
                    pooling="avgmax", weights=str(weights))
    keys = pooled_keys(ALL_POOL_LAYERS, "avgmax")
    return keras.Model(m.inputs, [m.get_layer(k).output for k in keys]), keys


def cached_features(x: np.ndarray, tensor_file: str | Path, split: str, weights: str | Path,
                    views: int = 8, cache: str | Path | None = None, batch_size: int = 32,
                    log=None) -> dict[str, np.ndarray]:
    """``{key: (views, N, d)}`` pooled features of ``x`` ((N,150,150,1) in [0,1], the whole
    split of ``tensor_file``) for dihedral views 0..views-1, computed once and cached."""

    log = log or (lambda m: logging.getLogger(__name__).info("%s", m))
    if not Path(weights).is_file():
        raise MammoError("backbone weights file not found", weights)
    root = cache_root(cache) / data_key(tensor_file, weights) / split
    return _cached_stack([(root / f"view{v}", f"view {v}", lambda v=v: dihedral(x, v)) for v in range(int(views))],
                         len(x), weights, batch_size, lambda m: log(f"[features] {split} {m}"))


def augment_key(augment: str, seed: int, copy: int, dihedral_views: np.ndarray) -> str:
    """Folder name of one augmented copy's features: the augmentation and its ranges
    (:func:`mammo_core.shifts.acquisition_key`), the seed, the copy index and a hash of the
    per-patch dihedral views, so no other augmentation, seed or view assignment reuses them."""
    import hashlib

    if augment not in AUGMENTS or augment == "none":
        raise MammoError(f"unknown training augmentation {augment!r}; choose from {', '.join(AUGMENTS[1:])}")
    dv = np.ascontiguousarray(np.asarray(dihedral_views, np.int64))
    h = hashlib.sha256(f"{augment}|{acquisition_key(augment)}|{int(seed)}|{int(copy)}|".encode() + dv.tobytes())
    return f"aug-{augment}-s{int(seed)}-c{int(copy)}-{h.hexdigest()[:16]}"


def augment_seed(seed: int, copy: int) -> int:
    """The seed of copy ``copy``'s random acquisition changes (one per copy, from the run's seed)."""
    return int(np.random.default_rng([int(seed), int(copy), 2024]).integers(0, 2 ** 31 - 1))


def cached_augmented_features(x: np.ndarray, tensor_file: str | Path, split: str, weights: str | Path,
                              augment: str, seed: int, dihedral_views: np.ndarray,
                              cache: str | Path | None = None, batch_size: int = 32,
                              log=None) -> dict[str, np.ndarray]:
    """``{key: (copies, N, d)}`` pooled features of acquisition-changed patches: copy ``j`` of
    patch ``i`` is :func:`mammo_core.shifts.random_acquisition` of kind ``augment`` (seed :func:`augment_seed`) of
    ``x[i]`` seen in dihedral view ``dihedral_views[i, j]``; computed once and cached."""
    log = log or (lambda m: logging.getLogger(__name__).info("%s", m))
    if not Path(weights).is_file():
        raise MammoError("backbone weights file not found", weights)
    dv = np.asarray(dihedral_views, np.int64)
    if dv.ndim != 2 or dv.shape[0] != len(x):
        raise MammoError(f"dihedral views must be (N, copies) for {len(x)} patches, got {dv.shape}")
    root = cache_root(cache) / data_key(tensor_file, weights) / split

    def changed(j: int) -> np.ndarray:
        xa, _ = random_acquisition(x, augment_seed(seed, j), augment)
        return np.stack([dihedral(xa[i:i + 1], int(dv[i, j]))[0] for i in range(len(xa))])

    return _cached_stack([(root / augment_key(augment, seed, j, dv[:, j]), f"{augment} copy {j}",
                           lambda j=j: changed(j)) for j in range(dv.shape[1])],
                         len(x), weights, batch_size, lambda m: log(f"[features] {split} {m}"))


def _cached_stack(entries, n: int, weights: str | Path, batch_size: int, log,
                  make_model=None) -> dict[str, np.ndarray]:
    """``{key: (len(entries), n, d)}``: per entry ``(folder, label, make_input)`` its cached
    pooled features, or ``make_input()`` run through the feature model (built once, only when
    something is not cached, by ``make_model(weights)``, default :func:`feature_model`) and saved there."""
    keys = pooled_keys(ALL_POOL_LAYERS, "avgmax")
    model = None
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for folder, label, make_input in entries:
        files = [folder / f"{k}.npy" for k in keys]
        arrs = _load_cached(files, n)
        if arrs is None:
            if model is None:
                model, _ = (make_model or feature_model)(weights)
            t0 = time.perf_counter()
            arrs = _compute_and_save(model, make_input(), files, batch_size)
            log(f"{label}: {n} patches in {time.perf_counter() - t0:.0f} s -> {folder}")
        for k, a in zip(keys, arrs):
            out[k].append(a)
    return {k: np.stack(v) for k, v in out.items()}


def _load_cached(files: list[Path], n: int) -> list[np.ndarray] | None:
    """The cached arrays of one view or copy when every file is there with ``n`` rows, else None."""
    if not all(f.is_file() for f in files):
        return None
    arrs = [np.load(f, allow_pickle=False) for f in files]
    return arrs if all(a.shape[0] == n for a in arrs) else None


def _compute_and_save(model, xv: np.ndarray, files: list[Path], batch_size: int) -> list[np.ndarray]:
    """The feature model's outputs for ``xv`` in batches, one array per output, each saved to its file."""
    parts: list[list[np.ndarray]] = [[] for _ in files]
    for i in range(0, len(xv), batch_size):
        for j, r in enumerate(model(xv[i:i + batch_size], training=False)):
            parts[j].append(np.asarray(r, np.float32))
    arrs = [np.concatenate(p) for p in parts]
    for f, a in zip(files, arrs):
        _save(f, a)
    return arrs
