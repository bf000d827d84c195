"""Where things live: the repository's assets and the optional shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def assets_dir() -> Path:
    """``assets/`` of the source tree, or ``$MAMMO_ASSETS`` when set."""
    return Path(os.environ.get("MAMMO_ASSETS", REPO_DIR / "assets"))


def models_dir() -> Path:
    return assets_dir() / "models"


def samples_dir() -> Path:
    return assets_dir() / "samples"


def shared_dir() -> Path:
    """The team's shared data folder (``../shared`` beside the checkout, or ``$MAMMO_SHARED``)."""
    return Path(os.environ.get("MAMMO_SHARED", REPO_DIR.parent / "shared"))


def path_arg(text: str) -> Path:
    """argparse ``type`` for a path option: ``Path('')`` is ``.``, so an empty argument (an unset
    shell variable, ``-o ""``) would silently mean the current folder; refused instead."""
    if not text:
        import argparse

        raise argparse.ArgumentTypeError("empty path (an unset shell variable?); give a folder or "
                                         "file name, '.' for the current folder")
    return Path(text)
