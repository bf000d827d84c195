"""The models, shared by every tab of the viewer: one :class:`ModelService` owns the
``mammo_core.session.Session``, the one thread that runs TensorFlow
(:class:`~app.workers.SerialExecutor`: the models are loaded and called always from this thread)
and the *generation* of the models: a number bumped whenever the models change ("Choose models
folder"). Work started for one generation and finishing in another is dropped
(:meth:`ModelService.guarded`), so a prediction or a map computed with the old models is never
shown beside the new ones.

The patch controller (:mod:`app.controllers.patches`) and the mammogram controller
(:mod:`app.controllers.mammogram`) both start their model work here; neither owns the session.
Nothing here imports TensorFlow or Keras; tests drive it with a fake session.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QObject, pyqtSignal

from app.workers import SerialExecutor, Worker
from mammo_core.engine import EngineSettings
from mammo_core.labels import CLASS_NAMES
from mammo_core.session import Session

log = logging.getLogger(__name__)

INTERACTIVE = 10  # worker priority of what the user is looking at
BACKGROUND = 0  # run-all chunks, maps


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when the message is empty)."""
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    return msg or type(exc).__name__


class ModelsState(StrEnum):
    """Where the models are: one field instead of ready/loading flags."""

    IDLE = "idle"  # nothing asked yet
    LOADING = "loading"
    READY = "ready"  # at least one model loaded
    NONE = "none"  # no bundle in the models folder
    FAILED = "failed"  # bundles there, none could be loaded


class ModelService(QObject):
    """The session, the model thread and the generation guard (GUI thread signals)."""

    modelsChanging = pyqtSignal()  # a new generation starts: drop what the old models made
    modelsStateChanged = pyqtSignal(object)  # ModelsState
    loadProgress = pyqtSignal(int, int, str)  # done, total, model being loaded
    modelsLoaded = pyqtSignal(list, float)  # names loaded, seconds
    errorOccurred = pyqtSignal(str, str, str)  # message, title, traceback ("" if none)

    def __init__(self, models_dir: Path | None = None,
                 session_factory: Callable[[Path | None], Any] = Session,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.models_dir = Path(models_dir) if models_dir else None
        self._session_factory = session_factory
        self.session: Any = None
        self.state = ModelsState.IDLE
        self.available_models: list[Any] = []
        self.timings: dict[str, float] = {}
        self.generation = 0
        self._executor: SerialExecutor | None = SerialExecutor()
        self.engine = EngineSettings()  # what runs the models (mammo_core/engine), a setting

    # ------------------------------------------------------------------ generation guard
    def guarded(self, slot: Callable[..., Any]) -> Callable[..., None]:
        """``slot`` wrapped to do nothing once the models changed after this call."""
        generation = self.generation

        def call(*args: Any) -> None:
            if generation == self.generation:
                slot(*args)

        return call

    def current(self, generation: int) -> bool:
        return generation == self.generation

    def start(self, worker: Worker, priority: int, newest_first: bool = False) -> Worker:
        """Queue ``worker`` on the model thread."""
        if self._executor is None:
            raise RuntimeError("the viewer's model thread has been shut down")
        return worker.start(self._executor, priority, newest_first)

    def error(self, text: str, title: str, worker: Worker | None = None) -> None:
        self.errorOccurred.emit(text, title, (worker.traceback or "") if worker else "")

    # ------------------------------------------------------------------ models
    @property
    def models_ready(self) -> bool:
        return self.state is ModelsState.READY

    def ready_session(self) -> Any:
        """The session when its models are loaded, else None."""
        return self.session if self.models_ready else None

    def _set_state(self, state: ModelsState) -> None:
        self.state = state
        self.modelsStateChanged.emit(state)

    def start_models(self, models_dir: Path | None = None) -> None:
        """Read the bundle cards (fast, no TensorFlow) and load the models on the model
        thread. A new generation: everything computed with the previous models is dropped."""
        if models_dir is not None:
            self.models_dir = Path(models_dir)
        self.generation += 1
        self.modelsChanging.emit()
        try:
            self.session = self._session_factory(self.models_dir)
            if hasattr(self.session, "set_engine"):
                self.session.set_engine(self.engine)
            self.available_models = list(self.session.available())
        except Exception as exc:  # noqa: BLE001 - a bad folder is a message, not a crash
            self.session = None
            self.available_models = []
            self.error(f"Cannot read the models folder: {one_line(exc)}", "Models")
        if not self.available_models:
            self._set_state(ModelsState.NONE)
            return
        self._set_state(ModelsState.LOADING)
        t0 = time.perf_counter()
        w = Worker(self.session.load, callbacks="progress", name="load models")
        w.on_progress(self._on_load_progress)
        w.on_return(self.guarded(lambda failures: self._on_models_loaded(
            failures, time.perf_counter() - t0)))
        w.on_error(self.guarded(lambda exc: self._on_models_error(w, exc)))
        self.start(w, INTERACTIVE + 10)

    def set_engine(self, settings: EngineSettings) -> bool:
        """Run the models on another engine / precision from now on (reports name it): a new
        generation, so what the previous engine computed is dropped and asked again. Returns
        whether it changed."""
        if settings == self.engine:
            return False
        self.engine = settings
        if self.session is None or not hasattr(self.session, "set_engine"):
            return True
        self.generation += 1
        self.modelsChanging.emit()
        self.session.set_engine(settings)
        if self.models_ready:
            self.modelsLoaded.emit(self.loaded_models(), 0.0)
        return True

    def _on_load_progress(self, value: Any) -> None:
        try:
            done, total, name = value
        except (TypeError, ValueError):
            return
        self.loadProgress.emit(int(done), int(total), str(name))

    def _on_models_loaded(self, failures: Any, seconds: float) -> None:
        self.timings["models_loaded_s"] = seconds
        loaded = list(self.session.loaded) if self.session is not None else []
        failures = list(failures or [])
        if failures:
            self.error(f"{len(failures)} model bundle(s) not loaded:\n"
                       + "\n".join(str(f) for f in failures), "Models")
        if not loaded:
            self._set_state(ModelsState.FAILED)
            return
        self._set_state(ModelsState.READY)
        self.modelsLoaded.emit(loaded, seconds)

    def _on_models_error(self, worker: Worker, exc: BaseException) -> None:
        self._set_state(ModelsState.FAILED)
        self.error(f"Loading the models failed: {one_line(exc)}", "Models", worker)

    def loaded_models(self) -> list[str]:
        return list(self.session.loaded) if self.session is not None and self.models_ready else []

    def loaded_infos(self) -> list[Any]:
        """Cards of the loaded bundles (all available ones while none is loaded)."""
        loaded = set(self.loaded_models())
        return [m for m in self.available_models if m.name in loaded] or list(self.available_models)

    def classes_of(self, model: str) -> tuple[str, ...]:
        """The classes a model (or the ensemble) answers with."""
        for info in self.available_models:
            if info.name == model:
                return tuple(info.classes)
        return tuple(CLASS_NAMES)

    # ------------------------------------------------------------------ lifetime
    def busy(self) -> bool:
        return self._executor is not None and self._executor.busy()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the model thread (queued work dropped, the running call allowed to end)."""
        if self._executor is not None:
            self._executor.shutdown(timeout)
            self._executor = None
