"""The Patch tab's state and work, without widgets: the prediction and heatmap caches, the
run-all job and report export, on the shared :class:`~app.service.ModelService` (the session,
the model thread and the generation guard). The window observes the typed signals and only
draws; tests drive this class with a fake session and no TensorFlow.

All model work goes through ``mammo_core.session.Session`` in :class:`~app.workers.Worker`\\ s
on the service's one model thread; reading files runs on the global ``QThreadPool``. Every
result of model work is wrapped in the service's generation guard; results from before a change
of models are dropped. Nothing here imports TensorFlow or Keras.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PyQt6.QtCore import QObject, QThreadPool, pyqtSignal

from app.service import BACKGROUND, INTERACTIVE, ModelService, ModelsState, one_line
from app.workers import Worker
from mammo_core.explain import colorize
from mammo_core.io import read_patches
from mammo_core.predictions import HeatKey, PatchPrediction, default_target
from mammo_core.session import Session

log = logging.getLogger(__name__)

RUN_ALL_CHUNK = 32
HEAT_CACHE_SIZE = 256


def key_of(patch: Any) -> str:
    """The patch's key (``source`` or ``source#index``, :attr:`mammo_core.io.Patch.key`)."""
    return patch.key


@dataclass
class RunAllJob:
    """Predicting every open patch that has no prediction yet, a chunk at a time."""

    todo: list[Any]  # patches
    generation: int
    pos: int = 0  # next index of todo to queue
    done: int = 0  # patches predicted (or found predicted meanwhile)
    worker: Worker | None = None
    cancelled: bool = False
    t0: float = field(default_factory=time.perf_counter)

    @property
    def total(self) -> int:
        return len(self.todo)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


class PatchController(QObject):
    """The Patch tab's model work on the shared service; reports through signals (GUI thread)."""

    modelsStateChanged = pyqtSignal(object)  # ModelsState
    loadProgress = pyqtSignal(int, int, str)  # done, total, model being loaded
    modelsLoaded = pyqtSignal(list, float)  # names loaded, seconds
    patchesRead = pyqtSignal(object)  # mammo_core.io.PatchCollection
    predictionsReady = pyqtSignal(dict)  # {patch key: PatchPrediction}
    predictionFailed = pyqtSignal(str, str)  # patch key, message
    heatmapReady = pyqtSignal(object)  # HeatKey (the map is in the cache)
    heatmapFailed = pyqtSignal(object, str)  # HeatKey, message
    runAllStarted = pyqtSignal(int)  # patches to predict
    runAllProgress = pyqtSignal(int, int)  # done, total
    runAllFinished = pyqtSignal(object)  # RunAllJob
    exportFinished = pyqtSignal(str)  # path written
    errorOccurred = pyqtSignal(str, str, str)  # message, title, traceback ("" if none)
    statusMessage = pyqtSignal(str, int)  # text, milliseconds (0: until replaced)

    def __init__(self, models_dir: Path | None = None,
                 session_factory: Callable[[Path | None], Any] = Session,
                 parent: QObject | None = None, service: ModelService | None = None):
        super().__init__(parent)
        self.service = service or ModelService(models_dir, session_factory, parent=self)
        self.predictions: dict[str, PatchPrediction] = {}
        self.heat_cache: dict[HeatKey, tuple[np.ndarray, np.ndarray]] = {}
        self.run_all_chunk = RUN_ALL_CHUNK
        self.job: RunAllJob | None = None
        self._io_pool = QThreadPool.globalInstance()
        self._pending_pred: set[str] = set()
        self._heat_workers: dict[HeatKey, Worker] = {}
        s = self.service
        s.modelsChanging.connect(self._drop_old_models)
        s.modelsStateChanged.connect(self.modelsStateChanged)
        s.loadProgress.connect(self.loadProgress)
        s.modelsLoaded.connect(self.modelsLoaded)
        s.errorOccurred.connect(self.errorOccurred)

    # ------------------------------------------------------------------ the shared service
    @property
    def session(self) -> Any:
        return self.service.session

    @property
    def state(self) -> ModelsState:
        return self.service.state

    @property
    def models_dir(self) -> Path | None:
        return self.service.models_dir

    @property
    def available_models(self) -> list[Any]:
        return self.service.available_models

    @property
    def timings(self) -> dict[str, float]:
        return self.service.timings

    @property
    def models_ready(self) -> bool:
        return self.service.models_ready

    def _guarded(self, slot: Callable[..., object]) -> Callable[..., None]:
        return self.service.guarded(slot)

    def _start(self, worker: Worker, priority: int, newest_first: bool = False) -> Worker:
        return self.service.start(worker, priority, newest_first)

    def _error(self, text: str, title: str, worker: Worker | None = None) -> None:
        self.service.error(text, title, worker)

    def start_models(self, models_dir: Path | None = None) -> None:
        """Load the models of ``models_dir`` (default: the current folder); everything
        computed with the previous models is dropped."""
        self.service.start_models(models_dir)

    def _drop_old_models(self) -> None:
        if self.job is not None:  # results of the old models are dropped: stop here
            self.cancel_run_all()
            self._finish_run_all()
        for w in self._heat_workers.values():
            w.cancel()
        self._heat_workers.clear()
        self._pending_pred.clear()
        self.heat_cache.clear()
        self.predictions.clear()

    def loaded_models(self) -> list[str]:
        return self.service.loaded_models()

    def loaded_infos(self) -> list[Any]:
        return self.service.loaded_infos()

    def classes_of(self, model: str) -> tuple[str, ...]:
        return self.service.classes_of(model)

    # ------------------------------------------------------------------ reading patches
    bits: int | None = None  # 16-bit PNG / TIFF / .npy files hold this many bits (None: 16)

    def set_bits(self, bits: int | None) -> bool:
        """How many bits 16-bit containers hold, for patches read from now on (DICOM uses its
        BitsStored). The same pixels then mean other intensities, so every prediction and
        heatmap computed so far is dropped. Returns whether it changed."""
        bits = None if not bits or int(bits) == 16 else int(bits)
        if bits is not None and not 1 <= bits <= 16:
            raise ValueError(f"bits must be from 1 to 16, got {bits}")
        if bits == self.bits:
            return False
        self.bits = bits
        self.predictions.clear()
        self.heat_cache.clear()
        return True

    def read(self, paths: Sequence[str | Path]) -> Worker:
        """Read files/folders/stacked arrays in a worker; ``patchesRead`` gets the collection."""
        names = [str(p) for p in paths]
        w = Worker(read_patches, names, recursive=False, bits=self.bits, name="read patches")
        w.on_return(self.patchesRead.emit)
        w.on_error(lambda exc: self._error(f"Could not open {', '.join(names)}: {one_line(exc)}",
                                           "Open", w))
        return w.start(self._io_pool)

    # ------------------------------------------------------------------ predictions
    def prediction(self, key: str) -> PatchPrediction | None:
        return self.predictions.get(key)

    def _store(self, items: dict[str, PatchPrediction]) -> None:
        if items:
            self.predictions.update(items)
            self.predictionsReady.emit(items)

    def request_prediction(self, patch: Any) -> bool:
        """Predict one patch (what the user looks at: before queued background work).
        Returns False when there is nothing to do (cached, already asked, no models)."""
        key = key_of(patch)
        if (key in self.predictions or key in self._pending_pred or self.session is None
                or not self.models_ready):
            return False
        self._pending_pred.add(key)
        w = Worker(self.session.predict, [patch], name="predict")
        w.on_return(self._guarded(lambda preds: self._on_single_prediction(key, preds)))
        w.on_error(self._guarded(lambda exc: self._on_prediction_error(w, patch, exc)))
        w.on_finish(self._guarded(lambda: self._pending_pred.discard(key)))
        self._start(w, INTERACTIVE, newest_first=True)
        return True

    def _on_single_prediction(self, key: str, preds: Any) -> None:
        if preds:
            self.timings.setdefault("first_prediction_s", time.perf_counter())
            self._store({key: preds[0]})

    def _on_prediction_error(self, worker: Worker, patch: Any, exc: BaseException) -> None:
        msg = f"{patch.source}: prediction failed: {one_line(exc)}"
        self.predictionFailed.emit(key_of(patch), msg)
        self._error(msg, "Prediction", worker)

    # ------------------------------------------------------------------ run all
    def run_all(self, patches: Sequence[Any]) -> RunAllJob | None:
        """Predict every patch without a prediction, a chunk at a time in the background.
        Returns the job (None when one is running or the models are not ready); a job with
        nothing to do finishes at once."""
        if not self.models_ready or self.job is not None:
            return None
        todo = [p for p in patches if key_of(p) not in self.predictions]
        job = RunAllJob(todo=todo, generation=self.service.generation)
        if not todo:
            self.runAllFinished.emit(job)
            return job
        self.job = job
        self.runAllStarted.emit(job.total)
        self._next_chunk()
        return job

    def _next_chunk(self) -> None:
        job = self.job
        if job is None:
            return
        # skip patches predicted meanwhile (e.g. the one being looked at)
        while job.pos < job.total and key_of(job.todo[job.pos]) in self.predictions:
            job.pos += 1
            job.done += 1
        if job.cancelled or job.pos >= job.total:
            self._finish_run_all()
            return
        chunk = job.todo[job.pos: job.pos + self.run_all_chunk]
        job.pos += len(chunk)
        w = Worker(self.session.predict, chunk, callbacks=True, name="run all")
        base = job.done
        w.on_progress(self._guarded(lambda v: self._on_chunk_progress(base, v)))
        w.on_return(self._guarded(lambda preds: self._on_chunk_done(chunk, preds)))
        w.on_error(self._guarded(lambda exc: self._on_chunk_error(w, exc)))
        job.worker = w
        self._start(w, BACKGROUND)

    def _on_chunk_progress(self, base: int, value: Any) -> None:
        if self.job is None:
            return
        try:
            done = int(value[0])
        except (TypeError, ValueError, IndexError):
            return
        self.runAllProgress.emit(base + done, self.job.total)

    def _on_chunk_done(self, chunk: list[Any], preds: Any) -> None:
        preds = list(preds or [])
        items = {key_of(p): pred for p, pred in zip(chunk, preds)}
        self._store(items)
        job = self.job
        if job is None:
            return
        job.done += len(items)
        self.runAllProgress.emit(job.done, job.total)
        if len(items) < len(chunk):  # the session stopped early: cancelled
            job.cancelled = True
        self._next_chunk()

    def _on_chunk_error(self, worker: Worker, exc: BaseException) -> None:
        self._error(f"Run all stopped: {one_line(exc)}", "Run all", worker)
        if self.job is not None:
            self.job.cancelled = True
            self._finish_run_all()

    def cancel_run_all(self) -> bool:
        """Ask the running job to stop after the batch being predicted; False if none runs."""
        job = self.job
        if job is None:
            return False
        job.cancelled = True
        if job.worker is not None:
            job.worker.cancel()
        return True

    def _finish_run_all(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            self.runAllFinished.emit(job)

    def run_all_active(self) -> bool:
        return self.job is not None

    # ------------------------------------------------------------------ heatmaps
    def heat_key(self, patch: Any, model: str, method: str, target: str | None) -> HeatKey | None:
        """The heatmap asked for, or None while it cannot be named (no models, or target
        ``None`` = the predicted class before the prediction is known)."""
        if not self.models_ready or not model:
            return None
        if target is None:
            pred = self.predictions.get(key_of(patch))
            out = pred.output(model) if pred is not None else None
            if out is None:
                return None
            target = default_target(out)
        return HeatKey(patch.sha256, model, method, target)

    def heatmap(self, key: HeatKey) -> tuple[np.ndarray, np.ndarray] | None:
        """(map in [0, 1], RGB colouring) from the cache, or None."""
        return self.heat_cache.get(key)

    def want_heatmap(self, patch: Any, key: HeatKey | None) -> None:
        """The heatmap the user looks at now (None: none). Queued work for any other heatmap
        is cancelled through its worker; this one is computed unless cached or on its way.
        ``heatmapReady(key)`` follows."""
        for k, w in self._heat_workers.items():
            if k != key:
                w.cancel()
        if key is None or key in self.heat_cache or self.session is None:
            return
        running = self._heat_workers.get(key)
        if running is not None and not running.is_cancelled():
            return
        session = self.session

        def compute(progress=None, cancel=None):
            if cancel is not None and cancel():  # the user moved on: skip
                return None
            heat = np.asarray(session.explain(patch, model=key.model, method=key.method,
                                              target=key.target), dtype=np.float32)

            return heat, np.asarray(colorize(heat), dtype=np.uint8)

        w = Worker(compute, callbacks=True, name="explain")
        w.on_return(self._guarded(lambda res: self._on_heatmap(key, res)))
        w.on_error(self._guarded(lambda exc: self._on_heatmap_error(w, patch, key, exc)))
        w.on_finish(self._guarded(lambda: self._heat_workers.get(key) is w
                                  and self._heat_workers.pop(key)))
        self._heat_workers[key] = w
        self._start(w, INTERACTIVE + 1, newest_first=True)

    def heat_pending(self, key: HeatKey) -> bool:
        w = self._heat_workers.get(key)
        return w is not None and not w.is_cancelled()

    def _on_heatmap(self, key: HeatKey, result: Any) -> None:
        if result is None:  # skipped as stale (asked again if wanted again)
            return
        self.heat_cache[key] = result
        if len(self.heat_cache) > HEAT_CACHE_SIZE:
            self.heat_cache.pop(next(iter(self.heat_cache)))
        self.heatmapReady.emit(key)

    def _on_heatmap_error(self, worker: Worker, patch: Any, key: HeatKey,
                          exc: BaseException) -> None:
        msg = f"{patch.source}: heatmap ({key.model}, {key.method}) failed: {one_line(exc)}"
        self.heatmapFailed.emit(key, msg)
        self._error(msg, "Grad-CAM", worker)

    # ------------------------------------------------------------------ export
    def export_problem(self, patches: Sequence[Any]) -> str | None:
        """Why a report of ``patches`` cannot be written now, or None."""
        if self.session is None or not self.models_ready:
            return "Export needs loaded models."
        if not patches:
            return "Nothing to export: no patch selected."
        return None

    def export(self, patches: Sequence[Any], path: Path, fmt: str,
               shown: tuple[Any, HeatKey] | None = None) -> Worker | None:
        """Write a PDF/CSV/JSON report of ``patches`` (predicting those without a prediction
        first); ``shown`` = (patch, heat key) of the heatmap on screen, which goes into the
        report when that patch is exported. ``exportFinished(path)`` follows."""
        patches = list(patches)
        problem = self.export_problem(patches)
        if problem:
            self._error(problem, "Export")
            return None
        path = Path(path)
        keys = [key_of(p) for p in patches]
        cached = [self.predictions.get(k) for k in keys]
        heat, heat_meta = {}, {}
        if shown is not None and shown[1] in self.heat_cache and key_of(shown[0]) in keys:
            patch, hkey = shown  # "ensemble" becomes the bundle's own name in the report
            heat[(key_of(patch), hkey.model)] = self.heat_cache[hkey][0]
            heat_meta[(key_of(patch), hkey.model)] = {"target": hkey.target, "method": hkey.method}
        session = self.session

        def work():
            preds = list(cached)
            missing = [i for i, p in enumerate(preds) if p is None]
            if missing:
                new = session.predict([patches[i] for i in missing])
                for i, p in zip(missing, new):
                    preds[i] = p
            return preds, session.export(path, fmt, patches, preds, heatmaps=heat or None,
                                         heatmap_meta=heat_meta or None)

        self.statusMessage.emit(f"Writing {path}…", 0)
        w = Worker(work, name="export")
        store = self._guarded(self._store)  # predictions of older models are not kept
        w.on_return(lambda res: self._on_exported(keys, res, store))
        w.on_error(lambda exc: self._error(f"{path}: report not written: {one_line(exc)}",
                                           "Export", w))
        return self._start(w, INTERACTIVE)

    def _on_exported(self, keys: list[str], result: Any, store: Callable[..., None]) -> None:
        preds, written = result
        store({k: p for k, p in zip(keys, preds) if p is not None})
        self.statusMessage.emit(f"Report saved: {written}", 8000)
        self.exportFinished.emit(str(written))

    # ------------------------------------------------------------------ lifetime
    def busy(self) -> bool:
        return self.service.busy()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the model thread (queued work dropped, the running call allowed to end)."""
        self.cancel_run_all()
        self.service.shutdown(timeout)
