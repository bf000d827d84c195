"""Where a run trains: the Keras backend, its devices, and one ``--distribute`` choice.

- ``none``: one device (the backend's default: a GPU when there is one).
- ``mirrored`` (TensorFlow): ``tf.distribute.MirroredStrategy`` over every local GPU.
- ``multiworker`` (TensorFlow): ``tf.distribute.MultiWorkerMirroredStrategy`` from ``TF_CONFIG``
  (one process per machine; see training_scripts/README.md).
- ``data-parallel`` (JAX): ``keras.distribution.DataParallel`` over every local device.

GPU detection goes through ``keras.distribution.list_devices`` (both backends), not ``tf.config``.
Inference and Grad-CAM stay on TensorFlow; a model trained on JAX is saved as the same ``.keras``
file. Research use only - not a medical device.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from mammo_core import tfload
from mammo_core.errors import MammoError
from mammo_core.training.outdir import UsageError

_CACHE: dict[str, Any] = {}
BACKEND_OF = {"mirrored": "tensorflow", "multiworker": "tensorflow", "data-parallel": "jax"}


def backend() -> str:
    import keras

    return keras.backend.backend()


def accelerators() -> list[str]:
    """The GPUs (or TPUs) Keras sees on this backend, e.g. ``["gpu:0"]``; [] on a CPU."""
    import keras

    found: list[str] = []
    for kind in ("gpu", "tpu"):
        try:
            devs = keras.distribution.list_devices(kind)
        except (RuntimeError, ValueError):  # the backend has no such platform
            continue
        found += [d for d in devs if str(d).lower().startswith(kind)]
    return found


def gpu_available() -> bool:
    return bool(accelerators())


@dataclass
class Placement:
    """The distribution of one run: ``scope()`` wraps model building, compiling and fitting."""

    kind: str
    backend: str
    replicas: int = 1
    devices: list[str] = field(default_factory=list)
    handle: Any = None  # tf.distribute strategy or keras.distribution.Distribution

    def scope(self):
        if self.handle is None:
            return contextlib.nullcontext()
        return self.handle.scope()

    @property
    def multiple_of(self) -> int:
        """Batches must split evenly over the devices (JAX data parallelism)."""
        return self.replicas if self.kind == "data-parallel" else 1


def check_backend(kind: str) -> None:
    """Refuse (UsageError, exit 2) a --distribute that the Keras backend of this run cannot do,
    before any data is read or folder made."""
    need = BACKEND_OF.get(kind)
    if kind == "none":
        return
    if need is None:
        raise UsageError(f"unknown --distribute {kind!r}; choose none, mirrored, multiworker or data-parallel")
    b = tfload.keras_backend()
    if need != b:
        other = "data-parallel" if b == "jax" else "mirrored or multiworker"
        raise UsageError(f"--distribute {kind} needs KERAS_BACKEND={need} (this run uses {b}; "
                         f"on {b} use --distribute {other})")


def make_placement(kind: str) -> Placement:
    """One placement object per kind and process (two MirroredStrategy objects in one process
    reuse collective keys and abort when the second trains)."""
    b = backend()
    if kind == "none":
        return Placement("none", b, 1, accelerators()[:1])
    need = BACKEND_OF.get(kind)
    if need is None:
        raise MammoError(f"unknown --distribute {kind!r}; choose none, mirrored, multiworker or data-parallel")
    if need != b:
        other = "data-parallel" if b == "jax" else "mirrored or multiworker"
        raise MammoError(f"--distribute {kind} needs KERAS_BACKEND={need} (this run uses {b}; "
                         f"on {b} use --distribute {other})")
    if kind in _CACHE:
        return _CACHE[kind]
    if kind == "data-parallel":
        import keras

        devices = keras.distribution.list_devices()
        dist = keras.distribution.DataParallel(devices=devices)
        p = Placement(kind, b, len(devices), list(devices), dist)
    else:
        import tensorflow as tf

        strategy = (tf.distribute.MirroredStrategy() if kind == "mirrored"
                    else tf.distribute.MultiWorkerMirroredStrategy())
        devices = list(getattr(strategy.extended, "worker_devices", ()))
        p = Placement(kind, b, int(strategy.num_replicas_in_sync), [str(d) for d in devices], strategy)
    _CACHE[kind] = p
    return p


def scaled_lr(lr: float, rule: str, replicas: int) -> float:
    """The learning rate actually used: ``linear`` multiplies by the replicas (global batch grows
    with them), ``none`` keeps it."""
    return float(lr * replicas) if rule == "linear" else float(lr)
