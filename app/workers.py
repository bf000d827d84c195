"""Background work for the viewer: a small ``QRunnable`` worker in the style of superqt's
``thread_worker``.

A :class:`Worker` runs one callable in a ``QThreadPool`` and turns its outcome into signals on a
``QObject`` (:class:`WorkerSignals`) that lives in the GUI thread:

* ``returned(object)`` — the callable's return value,
* ``errored(object)`` — the exception it raised (never re-raised, never a crash),
* ``progress(object)`` — whatever the callable passed to its ``progress`` callback,
* ``finished()`` — always, last.

Callables that want to report progress or be cancellable are started with ``callbacks=True``;
they then receive ``progress=`` and ``cancel=`` keyword arguments (``callbacks="progress"``:
only ``progress=``) (``progress(*values)`` and a
``cancel()`` that returns True once :meth:`Worker.cancel` was called), which is exactly the shape
of ``Session.load(progress=...)`` and ``Session.predict(progress=..., cancel=...)``.

The viewer never touches TensorFlow in the GUI thread: every model call goes through a worker.
Model work runs on a :class:`SerialExecutor`: one long-lived *Python* thread taking workers
from a priority queue. Not a ``QThreadPool``: PyQt gives every ``QRunnable.run`` call a fresh
Python thread state and discards it afterwards, which frees TensorFlow's thread-local eager
context between calls and crashed (segfault in ``conv2d`` on the second model call, seen with
TF 2.21). File reading runs on the global ``QThreadPool``.
"""
from __future__ import annotations

import itertools
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

from PyQt6.QtCore import QObject, QRunnable, QThreadPool, pyqtSignal


class WorkerSignals(QObject):
    returned = pyqtSignal(object)
    errored = pyqtSignal(object)
    progress = pyqtSignal(object)
    finished = pyqtSignal()


# Workers stay referenced here until they have emitted ``finished`` (PyQt would otherwise
# garbage-collect the signal object while queued signals are still on their way).
_LIVE: set[Worker] = set()
_LIVE_LOCK = threading.Lock()


class Worker(QRunnable):
    """Run ``fn(*args, **kwargs)`` off the GUI thread; report through :attr:`signals`."""

    def __init__(self, fn: Callable[..., Any], *args: Any, callbacks: bool | str = False,
                 name: str = "", **kwargs: Any):
        super().__init__()
        self.setAutoDelete(False)  # Python owns the object (kept alive in _LIVE)
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.name = name or getattr(fn, "__name__", "work")
        self.signals = WorkerSignals()
        self._callbacks = callbacks
        self._cancel = threading.Event()
        self.traceback: str | None = None

    # --- connection helpers (chainable) -------------------------------------------------
    def on_return(self, slot: Callable[[Any], None]) -> Worker:
        self.signals.returned.connect(slot)
        return self

    def on_error(self, slot: Callable[[BaseException], None]) -> Worker:
        self.signals.errored.connect(slot)
        return self

    def on_progress(self, slot: Callable[[Any], None]) -> Worker:
        self.signals.progress.connect(slot)
        return self

    def on_finish(self, slot: Callable[[], None]) -> Worker:
        self.signals.finished.connect(slot)
        return self

    # --- cancellation ---------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def _emit_progress(self, *values: Any) -> None:
        self.signals.progress.emit(values if len(values) != 1 else values[0])

    # --- QRunnable ------------------------------------------------------------------------
    def run(self) -> None:  # runs in a pool thread
        kwargs = dict(self.kwargs)
        if self._callbacks:
            kwargs["progress"] = self._emit_progress
            if self._callbacks != "progress":
                kwargs["cancel"] = self.is_cancelled
        try:
            result = self.fn(*self.args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a signal
            self.traceback = traceback.format_exc()
            try:
                self.signals.errored.emit(exc)
            except RuntimeError:  # signal object already deleted (application closing)
                pass
        else:
            try:
                self.signals.returned.emit(result)
            except RuntimeError:
                pass
        finally:
            try:
                self.signals.finished.emit()
            except RuntimeError:
                pass

    def start(self, pool: QThreadPool | SerialExecutor | None = None,
              priority: int = 0, newest_first: bool = False) -> Worker:
        """Queue on ``pool`` (a QThreadPool or a SerialExecutor; default the global pool);
        a higher ``priority`` runs first among the queued."""
        # connected last, so the slots connected before start() run before the release
        self.signals.finished.connect(self._release)
        with _LIVE_LOCK:
            _LIVE.add(self)
        if isinstance(pool, SerialExecutor):
            pool.start(self, priority, newest_first)
        else:
            (pool or QThreadPool.globalInstance()).start(self, priority)
        return self

    def _release(self) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self)


class SerialExecutor:
    """One long-lived Python thread running workers one at a time, highest priority first.

    Used for everything that touches TensorFlow: the models are loaded and called always
    from this same thread, with a stable Python thread state.
    """

    _STOP = object()

    def __init__(self, name: str = "mammo-models"):
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._seq = itertools.count()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def start(self, worker: Worker, priority: int = 0, newest_first: bool = False) -> None:
        """Queue ``worker``; among equal priorities oldest first, or newest first (what the
        user looks at now goes before what they skipped past)."""
        seq = next(self._seq)
        self._queue.put((-priority, -seq if newest_first else seq, worker))

    def _loop(self) -> None:
        while True:
            _prio, _seq, worker = self._queue.get()
            if worker is self._STOP:
                return
            self._busy.set()
            try:
                worker.run()
            finally:
                self._busy.clear()

    def pending(self) -> int:
        return self._queue.qsize()

    def busy(self) -> bool:
        return self._busy.is_set() or not self._queue.empty()

    def shutdown(self, timeout: float = 60.0) -> bool:
        """Drop queued work (cancelling it), let the running job finish, stop the thread.
        Returns False if the thread is still running after ``timeout`` seconds."""
        while True:
            try:
                _p, _s, worker = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(worker, Worker):
                worker.cancel()
                worker._release()
        self._queue.put((float("inf"), next(self._seq), self._STOP))
        self._thread.join(timeout)
        return not self._thread.is_alive()


def run_in_pool(fn: Callable[..., Any], *args: Any, pool: QThreadPool | None = None,
                priority: int = 0, on_return=None, on_error=None, on_progress=None,
                on_finish=None, callbacks: bool = False, **kwargs: Any) -> Worker:
    """Create a :class:`Worker`, connect the given slots and start it."""
    worker = Worker(fn, *args, callbacks=callbacks, **kwargs)
    if on_return is not None:
        worker.on_return(on_return)
    if on_error is not None:
        worker.on_error(on_error)
    if on_progress is not None:
        worker.on_progress(on_progress)
    if on_finish is not None:
        worker.on_finish(on_finish)
    return worker.start(pool, priority)


def live_workers() -> int:
    """How many workers have been started and not finished (for tests and shutdown)."""
    with _LIVE_LOCK:
        return len(_LIVE)
