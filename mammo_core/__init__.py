"""mammo_core: the library behind the mammogram patch viewer and the `mammo` command.

Research use only - not a medical device.

The core never imports Qt. Heavy imports (tensorflow, matplotlib) happen lazily inside the
functions that need them, so ``import mammo_core`` is fast.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("mammo-patches")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

DISCLAIMER = "research use only \u2014 not a medical device"

__all__ = ["DISCLAIMER", "__version__"]
