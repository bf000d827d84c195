"""One forward pass for several loaded models: identical leading layers are computed once.

The bundled members are frozen ImageNet VGG16 trunks with different heads: their blocks 1-4
are the same layers with byte-identical weights, and that trunk is nearly all of the cost
(~6 GMAC per 150 x 150 patch, the heads a few thousand). :class:`SharedForward` walks the
Keras functional graphs of the models and gives every layer call a structural key:

    key = sha256(layer class, layer config without its name, sha256 of every weight array,
                 the keys of the tensors it is called on, its non-tensor arguments)

Two calls with the same key compute the same function of the same input, so the combined pass
evaluates each key once and feeds the result to every model that uses it: exact (the same
layers run on the same tensors; ``tests/test_forward.py`` checks the outputs against each
model alone). Only built-in Keras layers are shared (a layer from elsewhere might keep state
outside its config and weights: it is always computed per model). Models with nothing in
common simply run one after the other inside the same ``tf.function``.

:func:`mammo_core.inference.predict_arrays` runs every prediction through this (the viewer,
``mammo predict``, ``mammo scan``'s map and candidates). Research use only — not a medical device.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mammo_core import tfload
from mammo_core.contract import INPUT_SHAPE
from mammo_core.errors import MammoError

_INPUT_KEY = ("input",)
_LOCK = threading.Lock()
#: Share identical layers between models (``False``: every model computes its own layers, as
#: before this module; ``benchmarks/bench_viewer.py`` times both in one run).
SHARE_LAYERS = True


def _weights_digest(layer) -> list[str]:
    out = []
    for w in getattr(layer, "weights", ()):
        a = np.ascontiguousarray(np.asarray(w.numpy() if hasattr(w, "numpy") else w))
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        out.append(h.hexdigest())
    return out


def layer_signature(layer) -> str | None:
    """A digest of what a layer computes (class, config without its name, weights), or None
    when it must not be shared (not a built-in Keras layer, or its config cannot be read)."""
    cls = type(layer)
    if not cls.__module__.startswith("keras.") or hasattr(layer, "layers"):
        return None  # custom code, or a nested model (shared only as a whole: not worth it)
    try:
        cfg = dict(layer.get_config())
    except Exception:  # noqa: BLE001 - an op without a config: never shared
        return None
    for k in ("name", "trainable"):
        cfg.pop(k, None)
    text = json.dumps([cls.__module__, cls.__qualname__, cfg, _weights_digest(layer)],
                      sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


class SharedForward:
    """The combined forward pass of ``keras_models`` (each one input ``(None, 150, 150, 1)``,
    one output): ``self(x)`` returns one probability array per model, in order. ``share``
    False: no layer is shared (each model's own pass, one after the other). ``multi_output``:
    models may have several outputs, returned flattened in order (the shared Grad-CAM pass).
    :meth:`run` is the uncompiled pass on tensors (to differentiate through)."""

    def __init__(self, keras_models: Sequence[Any], share: bool = True, multi_output: bool = False):
        self.models = list(keras_models)
        self.multi_output = bool(multi_output)  # True: every output of each model, flattened
        self.share = bool(share)
        keys: dict[int, tuple] = {}
        self._steps: list[tuple[Any, tuple, list[tuple[int, tuple]]]] = []
        self._outputs: list[tuple] = []
        computed: set[tuple] = set()
        self.layer_calls = 0          # layer calls in the models, all together
        sig_cache: dict[int, str | None] = {}
        self.plain = False            # True: Keras internals not as expected, each model alone
        for mi, model in enumerate(self.models):
            if len(model.inputs) != 1 or (len(model.outputs) != 1 and not self.multi_output):
                raise MammoError(f"model {getattr(model, 'name', mi)!r} is not a one-input, "
                                 "one-output Keras functional model")
        try:
            self._walk(keys, computed, sig_cache)
        except (AttributeError, KeyError, TypeError, ImportError) as err:
            # the graph walk reads Keras 3 internals (_nodes_by_depth, node.arguments); a Keras
            # release that changes them must not stop predictions: every model runs alone
            import logging

            logging.getLogger(__name__).warning(
                "shared forward pass unavailable with this Keras (%s); models run one by one", err)
            self.plain = True
            self._steps, self._outputs, self.layer_calls = [], [], 0
        self._fn: Callable[..., Any] | None = None

    def _walk(self, keys: dict, computed: set, sig_cache: dict) -> None:
        from keras.src.backend.common.keras_tensor import KerasTensor

        for mi, model in enumerate(self.models):
            keys[id(model.inputs[0])] = _INPUT_KEY
            for depth in sorted(model._nodes_by_depth, reverse=True):
                for node in model._nodes_by_depth[depth]:
                    if not node.operation or node.is_input:
                        continue
                    self.layer_calls += 1
                    op = node.operation
                    if id(op) not in sig_cache:
                        sig_cache[id(op)] = layer_signature(op)
                    sig = sig_cache[id(op)] if self.share else None
                    args, kwargs = node.arguments.convert(
                        lambda a: ("tensor", keys[id(a)]) if isinstance(a, KerasTensor) else a)
                    key: tuple[object, ...]
                    if sig is None:
                        key = ("own", mi, id(op), repr((args, kwargs)))
                    else:
                        key = ("layer", hashlib.sha256(
                            repr((sig, args, kwargs)).encode()).hexdigest())
                    for i, t in enumerate(node.outputs):
                        keys[id(t)] = (key, i)
                    if key in computed:
                        continue
                    computed.add(key)
                    inputs = [(id(t), keys[id(t)]) for t in node.input_tensors]
                    self._steps.append((node, key, inputs))
            self._outputs.extend(keys[id(t)] for t in model.outputs)

    @property
    def shared_calls(self) -> int:
        """Layer calls saved by sharing (0: the models have nothing in common)."""
        return self.layer_calls - len(self._steps)

    def run(self, x):
        """The pass on a tensor, not compiled (e.g. inside a ``GradientTape``)."""
        return self._run(x)

    def _run(self, x):
        if self.plain:
            outs = [m(x, training=False) for m in self.models]
            return tuple(t for o in outs for t in (o if isinstance(o, (list, tuple)) else [o]))
        vals: dict[tuple, Any] = {_INPUT_KEY: x}
        for node, key, inputs in self._steps:
            args, kwargs = node.arguments.fill_in({tid: vals[k] for tid, k in inputs})
            op = node.operation
            if "training" in getattr(op, "_call_context_args", ()):
                kwargs["training"] = False
            outs = op(*args, **kwargs)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            for i, y in enumerate(outs):
                vals[(key, i)] = y
        return tuple(vals[k] for k in self._outputs)

    def _function(self):
        """The compiled pass: a ``tf.function`` (TensorFlow backend) or ``jax.jit`` (JAX backend:
        a JAX model is never wrapped in a ``tf.function``), built once."""
        if self._fn is None:
            with _LOCK:
                if self._fn is None:
                    if _backend() == "jax":
                        import jax

                        self._fn = jax.jit(self._run)
                    else:
                        tf = tfload.tensorflow()
                        self._fn = tf.function(
                            self._run, input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32)],
                            reduce_retracing=True, autograph=False)
        return self._fn

    def concrete_function(self):
        """The TensorFlow graph of the pass (batch dimension ``None``): what a compiled engine
        converts (:mod:`mammo_core.engine`). TensorFlow backend only."""
        if _backend() != "tensorflow":
            raise MammoError(f"no TensorFlow graph on Keras' {_backend()} backend")
        return self._function().get_concrete_function()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        out = self._function()(np.ascontiguousarray(x, dtype=np.float32))
        return [np.asarray(o) for o in out]


def _backend() -> str:
    import keras

    return keras.backend.backend()
