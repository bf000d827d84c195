"""Shared fixtures. Tests are fast by default; `slow` ones need -m slow; `shared` ones need
../shared (real mini-MIAS data, ImageNet weights) and skip with a reason when it is absent."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# compiled-engine caches of the tests' tiny models go to a temp folder, never the user's cache
import tempfile

os.environ.setdefault("MAMMO_ENGINE_CACHE", tempfile.mkdtemp(prefix="mammo-test-engine-cache-"))

from pathlib import Path

import numpy as np
import pytest

from mammo_core.paths import shared_dir

SHARED = shared_dir()
MIAS_DIR = SHARED / "data" / "mini-mias"
VGG16_WEIGHTS = SHARED / "weights" / "vgg16_imagenet_notop.weights.h5"


def pytest_collection_modifyitems(config, items):
    if MIAS_DIR.is_dir() and VGG16_WEIGHTS.is_file():
        return
    skip = pytest.mark.skip(reason=f"needs the shared data folder {SHARED} (absent on a fresh clone)")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def mias_dir() -> Path:
    return MIAS_DIR


@pytest.fixture(scope="session")
def vgg16_weights() -> Path:
    return VGG16_WEIGHTS


@pytest.fixture
def dark_style(qapp):
    """create_app()'s real look (Fusion, dark palette, DARK_QSS) on the shared QApplication for
    one test, its own style, palette and style sheet restored afterwards (the viewer tests run
    without it, so a leftover style sheet would change every later GUI test)."""
    from PyQt6.QtGui import QPalette

    from app.main import DARK_QSS, apply_style

    style, palette, sheet = qapp.style().name(), QPalette(qapp.palette()), qapp.styleSheet()
    apply_style(qapp)
    assert qapp.styleSheet() == DARK_QSS
    try:
        yield qapp
    finally:
        qapp.setStyleSheet(sheet)
        qapp.setPalette(palette)
        qapp.setStyle(style)
