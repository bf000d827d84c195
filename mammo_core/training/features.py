"""Cached pooled backbone features (the small-data ``transfer`` member, ``head="pooled"``).

One flat frozen VGG16 graph (the registry's ``transfer`` model with ``head="pooled"``, every
block pooled, average and max) is run once over every patch of a split and every dihedral view
(:mod:`mammo_core.tta`); each pooled layer is stored as its own ``.npy`` under
``<cache>/<data key>/<split>/view<k>/<gap|gmp>_<layer>.npy``. The data key hashes the split's
tensor file and the backbone weights file, so a changed dataset or backbone never reuses stale
features. Members then differ only in which cached blocks they concatenate. The cache is a
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
    keys = pooled_keys(ALL_POOL_LAYERS, "avgmax")
    model = None
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for v in range(int(views)):
        vdir = root / f"view{v}"
        files = [vdir / f"{k}.npy" for k in keys]
        if all(f.is_file() for f in files):
            arrs = [np.load(f, allow_pickle=False) for f in files]
            if all(a.shape[0] == len(x) for a in arrs):
                for k, a in zip(keys, arrs):
                    out[k].append(a)
                continue
        if model is None:
            model, _ = feature_model(weights)
        t0 = time.perf_counter()
        xv = dihedral(x, v)
        parts: list[list[np.ndarray]] = [[] for _ in keys]
        for i in range(0, len(xv), batch_size):
            res = model(xv[i:i + batch_size], training=False)
            for j, r in enumerate(res):
                parts[j].append(np.asarray(r, np.float32))
        for k, f, p in zip(keys, files, parts):
            a = np.concatenate(p)
            _save(f, a)
            out[k].append(a)
        log(f"[features] {split} view {v}: {len(x)} patches in {time.perf_counter() - t0:.0f} s -> {vdir}")
    return {k: np.stack(v) for k, v in out.items()}
