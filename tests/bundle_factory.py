"""Tiny *real* Keras bundles for tests: trained for a few epochs on seeded synthetic patches,
saved with mammo_core.bundle.write_bundle, cached per test process.

Synthetic data: a label 0-4 decides what is drawn on a noisy background: 0 nothing (baseline),
masses (1, 2) a bright disc, calcifications (3, 4) bright dots; malignant ones (2, 4) are
brighter. The tiny functional CNN (named last conv layer ``last_conv``) learns it well above
chance in 6 epochs (~1 s per bundle), which is all the tests need (real saved models, real predictions,
real gradients).

Use from tests (read-only; the cache folder lives in a per-process temp dir)::

    from bundle_factory import tiny_bundle, models_dir_with   # tests/ is on sys.path under pytest
    path = tiny_bundle("mass_calc")                  # a bundle folder
    root = models_dir_with(tmp_path, ["mass_calc", "benign_malignant"], ensemble=True)
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CACHE: dict[tuple, Path] = {}
_ROOT: Path | None = None
GRADCAM_LAYER = "last_conv"


def _root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="mammo-test-bundles-"))
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def synthetic_patches(n: int, seed: int = 0, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint16 (150, 150) patches and their 0-4 labels (pairs baseline/abnormal)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        ab = rng.integers(1, 5, size=(n + 1) // 2)
        labels = np.empty(n, dtype=np.int64)
        labels[0::2] = 0
        labels[1::2] = ab[: n // 2]
    labels = np.asarray(labels, dtype=np.int64)
    yy, xx = np.mgrid[0:150, 0:150]
    imgs = np.empty((len(labels), 150, 150), dtype=np.float64)
    for i, lab in enumerate(labels):
        img = 0.25 + 0.08 * rng.standard_normal((150, 150))
        boost = 0.45 if lab in (2, 4) else 0.25
        if lab in (1, 2):
            cy, cx = rng.integers(45, 105, 2)
            r = rng.integers(18, 30)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += boost
        elif lab in (3, 4):
            for _ in range(12):
                cy, cx = rng.integers(20, 130, 2)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < 9] += boost + 0.2
        imgs[i] = img
    return (np.clip(imgs, 0, 1) * 65535).astype(np.uint16), labels


def build_tiny_model(n_classes: int, seed: int = 0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((150, 150, 1), name="patch")
    x = layers.Conv2D(4, 5, strides=3, activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(8, 3, activation="relu", name=GRADCAM_LAYER)(x)
    x = layers.GlobalMaxPooling2D(name="gmp")(x)
    out = layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="tiny_cnn")


def tiny_bundle(task: str = "mass_calc", seed: int = 0, epochs: int = 6, n: int = 240,
                name: str | None = None, subset: str | None = None) -> Path:
    """Train (once per process) and save a tiny bundle for ``task``; returns its folder."""
    key = (task, seed, epochs, n, name, subset)
    if key in _CACHE:
        return _CACHE[key]
    import keras

    from mammo_core.bundle import write_bundle
    from mammo_core.labels import get_task

    t = get_task(task)
    imgs, labels = synthetic_patches(n, seed=seed + 100)
    keep, y = t.map_labels(labels)
    if subset is not None:
        sub = np.isin(labels, {"mass": (1, 2), "calcification": (3, 4)}[subset])
        y = y[sub[keep]]
        keep = keep & sub
    x = imgs[keep].astype(np.float32)[..., None] / 65535.0
    model = build_tiny_model(t.n_classes, seed)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    bname = name or f"tiny_{task}_{seed}" + (f"_{subset}" if subset else "")
    out = _root() / bname
    card = {
        "name": bname,
        "task": task,
        "classes": list(t.classes),
        "architecture": {"name": "tiny_cnn", "note": "test fixture"},
        "training": {"data": {"path": "synthetic (tests/bundle_factory.py)"},
                     "protocol": {"seed": seed, "epochs": epochs}, "subset": subset},
        "metrics": {},
        "gradcam_layer": GRADCAM_LAYER,
    }
    write_bundle(model, out, card)
    _CACHE[key] = out
    return out


def copy_bundle(src: Path, dst_root: Path) -> Path:
    dst = Path(dst_root) / Path(src).name
    shutil.copytree(src, dst)
    return dst


def tiny_ensemble(member_dirs: Sequence[Path], out_dir: Path, n_val: int = 80, seed: int = 7) -> Path:
    """Fit an ensemble of ``member_dirs`` on synthetic validation patches; write it."""
    from mammo_core.ensemble import MemberInfo, fit_ensemble, write_ensemble
    from mammo_core.inference import load_bundle, predict_arrays

    models = [load_bundle(d) for d in member_dirs]
    imgs, labels = synthetic_patches(n_val, seed=seed)
    x = imgs.astype(np.float32)[..., None] / 65535.0
    probs = predict_arrays(models, x, batch_size=64)
    spec = fit_ensemble([MemberInfo.from_bundle(m.info) for m in models], probs, labels,
                        validation={"data": "synthetic", "n": n_val})
    write_ensemble(out_dir, spec, {"training": {"method": "synthetic validation (tests)"}})
    return Path(out_dir)


def models_dir_with(root: Path, tasks: Sequence[str] = ("mass_calc", "benign_malignant", "baseline_mass_calc"),
                    ensemble: bool = True) -> Path:
    """A models folder with copies of tiny bundles (+ a fitted ensemble) and its MANIFEST.json."""
    from mammo_core.bundle import write_manifest

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    members = [copy_bundle(tiny_bundle(t), root) for t in tasks]
    if ensemble:
        tiny_ensemble(members, root / "ensemble")
    write_manifest(root)
    return root


def typed_card(metrics: dict | None = None, name: str = "m", task: str = "mass_calc", **extra):
    """A checked :class:`mammo_core.card.Card` with these ``metrics`` (flat per-question AUCs,
    ``auc_<question>``, are read as a /1 card gives them and migrated), no files behind it."""
    from mammo_core.card import parse_card
    from mammo_core.labels import get_task

    ens = task == "five_class"
    return parse_card({"name": name, "kind": "ensemble" if ens else "model", "task": task,
                       "classes": list(get_task(task).classes), "version": "1.0.0",
                       "files": {"ensemble.json" if ens else "model.keras": "a" * 64},
                       "metrics": metrics or {}, **extra})
