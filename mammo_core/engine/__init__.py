"""Running loaded models: the Keras graph (the reference) or a compiled engine (OpenVINO).

The Keras graph stays the source of truth: training, Grad-CAM gradients and ``mammo models
verify`` use it. Prediction and the abnormality map run through an :class:`Engine`:

- ``keras``: :class:`mammo_core.forward.SharedForward` (one ``tf.function``, identical layers of
  the models computed once).
- ``openvino``: that same combined graph (the shared trunk included) converted once with
  ``openvino.convert_model`` and compiled for this CPU with the precision hint ``f32`` or
  ``bf16``. Converted graphs are cached on disk (:mod:`mammo_core.engine.cache`, keyed by the
  models' file hashes, the OpenVINO version and the precision), so a second start does not
  convert again.
- ``auto`` (default): OpenVINO where it loads, converts and compiles; Keras otherwise.

Every fault on the OpenVINO path (not installed, conversion or compilation failing, an
inference call failing) is one log line and the Keras path: the same answers in the same
format, and :meth:`Engine.info` says which engine computed them (reports carry it in their
provenance). Test-time augmentation is not the engine's business: the caller
(:func:`mammo_core.inference.predict_arrays`) feeds the views and averages them the same way on
every engine. The measured deviation of each engine/precision from Keras f32 is in
``docs/engines.md`` (:data:`MEASURED`). Research use only — not a medical device.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammo_core import forward, tfload
from mammo_core.engine.cache import IRCache, cache_key
from mammo_core.errors import MammoError
from mammo_core.forward import SharedForward

log = logging.getLogger(__name__)

ENGINES = ("auto", "keras", "openvino")
PRECISIONS = ("f32", "bf16")
#: The precision patch predictions use unless told otherwise (chosen by measurement:
#: docs/engines.md, rule of issue 23: calls identical on >= 99.5 % of the dev patches and AUCs
#: within 0.005 of Keras f32, else f32).
DEFAULT_PRECISION = "f32"
#: The precision of the abnormality map's pass (``mammo scan``, the viewer's map) unless told
#: otherwise: bf16 only if the candidates' top-3 hit rate on the dev images is not lower than
#: with f32 in the same run. Measured (benchmarks/scan_candidates.py --every 5 --map-modes
#: windowed:f32,windowed:bf16, 8 Dec 2026, docs/engines.md): identical top-1 / 3 / 10 hits on
#: 17 mini-MIAS images (training women's lesions: top-3 10 of 14 both), map pass 1.76x faster.
MAP_PRECISION = "bf16"
#: The map pass's measured deviation from the f32 map, stated in every scan output that used it.
MAP_MEASURED: dict[str, str] = {
    "bf16": "map windows' P(abnormal) vs the f32 map: max |dp| 0.18, mean 0.006, correlation 0.998 "
            "over 17 mini-MIAS images; candidates' lesion hits identical (docs/engines.md)",
}
#: The measured deviation from Keras f32 of each (engine, precision) on the dev patches
#: (``benchmarks/bench_engines.py --agreement``, table in docs/engines.md).
MEASURED: dict[tuple[str, str], str] = {
    ("keras", "f32"): "reference (Keras f32)",
    ("openvino", "f32"): "max |dp| 4.0e-06, mean 1.6e-07, calls identical on 240 of 240 mini-MIAS dev "
                         "patches, one view (docs/engines.md)",
    ("openvino", "bf16"): "max |dp| 0.17, mean <= 0.014 per member, member calls identical on 97.5-100 % "
                          "of 240 mini-MIAS dev patches, one view: fails the default rule (docs/engines.md)",
}

Runner = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class EngineSettings:
    """What the user asked for: ``engine`` auto | keras | openvino, ``precision`` f32 | bf16
    (None: :data:`DEFAULT_PRECISION`)."""

    engine: str = "auto"
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise MammoError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise MammoError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")

    @property
    def chosen_precision(self) -> str:
        return self.precision or DEFAULT_PRECISION


@dataclass(frozen=True)
class EngineInfo:
    """What computed an answer: the engine, its version, the precision, why it is not the one
    asked for (``note``) and its measured deviation from Keras f32 (``deviation``)."""

    name: str
    version: str
    precision: str
    requested: str = "auto"
    note: str = ""
    deviation: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "precision": self.precision,
                "requested": self.requested, "note": self.note, "deviation": self.deviation}

    def text(self) -> str:
        s = f"{self.name} {self.version} {self.precision}"
        return s + (f" ({self.note})" if self.note else "")


def _keras_version() -> str:
    """``"<keras version> (<backend>)"`` without importing Keras (which imports TensorFlow):
    from the installed distribution and :func:`mammo_core.tfload.configured_keras_backend`."""
    return f"{tfload.installed_version('keras')} ({tfload.configured_keras_backend()})"


def openvino_module() -> Any:
    """``openvino`` imported, or raise the reason it cannot be (``ImportError``...). Tests set
    ``MAMMO_OPENVINO=0`` to act as if it were not installed."""
    if os.environ.get("MAMMO_OPENVINO", "").strip() == "0":
        raise ImportError("disabled by MAMMO_OPENVINO=0")
    import openvino

    return openvino


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


class _OpenVINORunner:
    """The compiled combined graph; falls back to the Keras pass (``make_fwd()``, built only
    then: a graph read from the cache runs without TensorFlow) with one log line when a call
    fails."""

    def __init__(self, compiled: Any, make_fwd: Callable[[], forward.SharedForward], engine: Engine):
        self.compiled = compiled
        self.make_fwd = make_fwd
        self.engine = engine
        self.failed = False
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if not self.failed:
            x = np.ascontiguousarray(x, dtype=np.float32)
            try:
                with self._lock:
                    res = self.compiled(x)
                    out = [np.array(res[o]) for o in self.compiled.outputs]
                return out
            except Exception as err:  # noqa: BLE001 - any engine fault: the Keras path
                self.failed = True
                self.engine._fallback(f"OpenVINO inference failed ({_first_line(err)})")
        return self.make_fwd()(x)


class Engine:
    """Makes runners for sets of Keras models (:meth:`forward`) on the engine of ``settings``.
    Thread-safe. ``cache``: the on-disk cache (default :class:`IRCache` at its default folder)."""

    def __init__(self, settings: EngineSettings = EngineSettings(), cache: IRCache | None = None):
        self.settings = settings
        self.cache = cache if cache is not None else IRCache()
        self._lock = threading.RLock()
        self._runners: dict[tuple, tuple[Any, Runner]] = {}
        self._ov: Any = None
        self._core: Any = None
        self._why_not: str | None = None
        self._last: EngineInfo | None = None

    # ------------------------------------------------------------------ what runs
    def _keras_info(self, note: str = "") -> EngineInfo:
        return EngineInfo("keras", _keras_version(), "f32", self.settings.engine, note,
                          MEASURED[("keras", "f32")])

    def _ov_info(self, precision: str) -> EngineInfo:
        return EngineInfo("openvino", str(self._ov.get_version()).split("-")[0], precision,
                          self.settings.engine, "",
                          MEASURED.get(("openvino", precision), "not measured"))

    def reference_info(self, note: str = "") -> EngineInfo:
        """The Keras reference engine as it appears in provenance, with ``note`` (what ran
        on Keras although this engine was asked for, e.g. the dense map's trunk)."""
        return self._keras_info(note)

    def _fallback(self, why: str) -> None:
        with self._lock:
            if self._why_not is None:
                log.warning("%s; predicting with Keras instead (same answers format, engine named "
                            "in the report)", why)
            self._why_not = why
            self._runners.clear()

    def _openvino(self) -> bool:
        """True when OpenVINO can be used (imported once; the first reason it cannot, logged once)."""
        if self.settings.engine == "keras" or self._why_not is not None:
            return False
        if self._ov is not None:
            return True
        backend = tfload.configured_keras_backend()
        if backend != "tensorflow":
            self._fallback(f"engine {self.settings.engine}: the models run on Keras' "
                           f"{backend} backend (OpenVINO converts TensorFlow graphs)")
            return False
        try:
            ov = openvino_module()
            core = ov.Core()
        except Exception as err:  # noqa: BLE001 - not installed, broken install, no CPU plugin
            self._fallback(f"OpenVINO unavailable ({_first_line(err)})")
            return False
        self._ov, self._core = ov, core
        return True

    def info(self, precision: str | None = None) -> EngineInfo:
        """The engine that computes (or computed) answers at ``precision`` (default the
        settings')."""
        precision = precision or self.settings.chosen_precision
        with self._lock:
            if self._openvino():
                return self._ov_info(precision)
            note = self._why_not or ""
            if self.settings.engine != "keras" and precision != "f32" and not note:
                note = "Keras runs f32 only"
            return self._keras_info(note)

    # ------------------------------------------------------------------ runners
    def forward(self, make_fwd: Callable[[], forward.SharedForward], hashes: Sequence[str],
                precision: str | None = None, owner: Sequence[Any] = (),
                share: bool = True) -> Runner:
        """A runner ``x -> [one output per model]`` on this engine at ``precision``, for the
        models whose Keras reference pass ``make_fwd()`` builds (called only when needed: the
        Keras engine, a graph to convert, a fallback) and whose model files hash to ``hashes``
        (the cache key; an empty hash: no disk cache). ``owner``: the objects the runner is kept
        for in memory (their ids are the key, and the runner holds them so the ids stay theirs);
        ``share``: whether the pass shares identical layers (part of the cache key). A graph
        found in the disk cache runs without TensorFlow being imported."""
        precision = precision or self.settings.chosen_precision
        if precision not in PRECISIONS:
            raise MammoError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        owner = tuple(owner)
        key = (tuple(id(o) for o in owner), tuple(hashes), share, precision)
        with self._lock:
            hit = self._runners.get(key)
            if hit is not None:
                return hit[1]
            runner: Runner | None = None
            if self._openvino():
                compiled = self._compile(make_fwd, list(hashes), share, precision)
                if compiled is not None:
                    runner = _OpenVINORunner(compiled, make_fwd, self)
            if runner is None:
                runner = make_fwd()
            self._runners[key] = (owner, runner)
            return runner

    def _compile(self, make_fwd: Callable[[], SharedForward], hashes: list[str], share: bool,
                 precision: str) -> Any | None:
        ov, core = self._ov, self._core
        version = str(ov.get_version())
        made_by = [f"keras {_keras_version()}", f"tensorflow {tfload.installed_version('tensorflow')}"]
        key = cache_key(hashes + made_by, "openvino", version, precision, share) \
            if hashes and all(hashes) else None
        model = self.cache.load(core, key, version, precision) if key else None
        if model is None:
            try:
                model = ov.convert_model(make_fwd().concrete_function())
            except MammoError:
                raise
            except Exception as err:  # noqa: BLE001 - a graph OpenVINO cannot convert
                self._fallback(f"OpenVINO cannot convert the models ({_first_line(err)})")
                return None
            if key:
                self.cache.store(ov, model, key, version, precision)
        try:
            compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
        except Exception as err:  # noqa: BLE001 - e.g. bf16 on a CPU without it
            self._fallback(f"OpenVINO cannot compile the models for this CPU at {precision} "
                           f"({_first_line(err)})")
            return None
        if len(compiled.outputs) != len(hashes):
            self._fallback(f"OpenVINO graph has {len(compiled.outputs)} outputs for "
                           f"{len(hashes)} models")
            return None
        return compiled


def add_engine_arguments(parser: Any, scan: bool = False) -> None:
    """``--engine`` and ``--precision`` (``mammo predict``, ``mammo scan``)."""
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="what runs the models: 'auto' (default: OpenVINO where it loads, else "
                             "Keras), 'keras' (the reference graph) or 'openvino'; the report names it")
    what = "the candidates' re-classification (the map: --map-precision)" if scan else "predictions"
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help=f"compute precision of {what} on OpenVINO (default {DEFAULT_PRECISION}, "
                             "chosen by measurement: docs/engines.md); Keras runs f32")
    if scan:
        parser.add_argument("--map-precision", choices=PRECISIONS, default=None,
                            help=f"compute precision of the map pass on OpenVINO (default {MAP_PRECISION}, "
                                 "chosen by measurement: docs/engines.md)")


def engine_settings(args: Any) -> EngineSettings:
    return EngineSettings(args.engine, args.precision)


_DEFAULT: Engine | None = None
_DEFAULT_LOCK = threading.Lock()


def reference() -> Engine:
    """The Keras engine (the reference: training, ensemble fitting, tests)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Engine(EngineSettings("keras"))
        return _DEFAULT


__all__ = [
    "DEFAULT_PRECISION",
    "ENGINES",
    "MAP_MEASURED",
    "MAP_PRECISION",
    "MEASURED",
    "PRECISIONS",
    "Engine",
    "EngineInfo",
    "EngineSettings",
    "Runner",
    "add_engine_arguments",
    "engine_settings",
    "openvino_module",
    "reference",
]
