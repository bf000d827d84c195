"""Importing TensorFlow once, without its start-up noise on the user's terminal.

TensorFlow 2.21 writes C++ log lines (oneDNN notice, CUDA probing, "All log messages before
absl::InitializeLog() ...") to file descriptor 2 while it is imported and when it first looks
for devices: before its own threshold ``TF_CPP_MIN_LOG_LEVEL`` is applied, so setting that
variable does not silence them. When ``TF_CPP_MIN_LOG_LEVEL`` is 1 or more (``mammo``,
``mammo-viewer`` and the training scripts set 2 before TensorFlow is imported), this module
points descriptor 2 at ``/dev/null`` for exactly that import and device probe; with 0 (or
unset) everything is shown. Python exceptions are not affected.
"""
from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
from collections.abc import Iterator
from typing import Any

_LOCK = threading.Lock()
_TF: Any = None


def installed_version(dist: str) -> str:
    """The installed version of distribution ``dist`` (e.g. ``keras``, ``tensorflow``) without
    importing it; ``"unknown"`` when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def configured_keras_backend() -> str:
    """The backend Keras runs (or will run) on, without importing Keras when it is not imported
    yet: Keras' own rule (``KERAS_BACKEND``, else ``backend`` in ``$KERAS_HOME/keras.json`` or
    ``~/.keras/keras.json``, else ``tensorflow``)."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        try:
            return str(keras.backend.backend())
        except Exception:  # noqa: BLE001 - a half-imported Keras: read the configuration
            pass
    env = os.environ.get("KERAS_BACKEND", "").strip()
    if env:
        return env
    import json

    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as fh:
            cfg = json.load(fh)
        if isinstance(cfg, dict) and isinstance(cfg.get("backend"), str):
            return cfg["backend"]
    except (OSError, ValueError):
        pass
    return "tensorflow"


def quiet_requested() -> bool:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")) >= 1
    except ValueError:
        return False


@contextlib.contextmanager
def native_stderr_silenced(active: bool = True) -> Iterator[None]:
    """Descriptor 2 to /dev/null inside the block (C/C++ writes included), then back. Left
    alone when descriptor 2 already is a regular file (a log the program diverted it to)."""
    if active:
        with contextlib.suppress(OSError):
            active = not stat.S_ISREG(os.fstat(2).st_mode)
    if not active:
        yield
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a detached GUI process): nothing to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def tensorflow() -> Any:
    """The ``tensorflow`` module (and Keras), imported and its devices probed once, quietly
    when ``TF_CPP_MIN_LOG_LEVEL`` asks for it. Call before the first TensorFlow/Keras use."""
    global _TF
    if _TF is not None:
        return _TF
    with _LOCK:
        if _TF is None:
            with native_stderr_silenced("tensorflow" not in sys.modules and quiet_requested()):
                import keras  # noqa: F401 - imports TensorFlow, its backend
                import tensorflow as tf

                tf.config.list_physical_devices()
            _TF = tf
    return _TF


def keras_backend() -> str:
    """Import Keras once (quietly with TensorFlow, as :func:`tensorflow`) and return its backend.
    With ``KERAS_BACKEND`` set to another backend (``jax``), TensorFlow is not imported: training
    runs where no TensorFlow is installed."""
    if os.environ.get("KERAS_BACKEND", "").strip() in ("", "tensorflow"):
        tensorflow()
    import keras

    return keras.backend.backend()


__all__ = ["configured_keras_backend", "installed_version", "keras_backend", "native_stderr_silenced",
           "quiet_requested", "tensorflow"]
