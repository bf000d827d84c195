"""Progress of long CLI work (``mammo predict``, ``mammo scan``) so a user can tell "slow" from
"stuck": on a terminal a tqdm bar with the count, the rate and the time left; when stderr is not
a terminal (a log file, a pipe, a batch job) one line every ``HEARTBEAT_S`` seconds with the
counts, the time so far and an estimate of the time left, written by a timer thread so that it
comes even while one batch takes long. ``MAMMO_HEARTBEAT_S`` overrides the interval.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

HEARTBEAT_S = 10.0


def heartbeat_interval() -> float:
    """``$MAMMO_HEARTBEAT_S`` when it is a finite number >= 0, else :data:`HEARTBEAT_S`."""
    try:
        v = float(os.environ.get("MAMMO_HEARTBEAT_S", HEARTBEAT_S))
    except ValueError:
        return HEARTBEAT_S
    return v if 0 <= v < 1e9 else HEARTBEAT_S


def _left(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """``with Progress(total, "predicting", "patch") as p: ... p.update_to(done)``.

    ``disable``: nothing at all (``--no-progress``). ``stream``: default ``sys.stderr``;
    ``tty``: force the bar (True) or the heartbeat (False), default: ``stream.isatty()``."""

    def __init__(self, total: int, desc: str, unit: str, disable: bool = False,
                 stream: TextIO | None = None, tty: bool | None = None,
                 every: float | None = None, prog: str = "mammo"):
        self.total, self.desc, self.unit, self.prog = int(total), desc, unit, prog
        self.done = 0
        self.disable = disable
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            try:
                tty = bool(self.stream.isatty())
            except (AttributeError, ValueError, OSError):
                tty = False
        self.tty = tty
        self.every = heartbeat_interval() if every is None else every
        self.t0 = time.monotonic()
        self._bar = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._beats = 0

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> Progress:
        if self.disable:
            return self
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.stream,
                             leave=False)
        else:
            self._thread = threading.Thread(target=self._beat, name="mammo-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        self.close(finished=exc_type is None)

    def close(self, finished: bool = True) -> None:
        """Stop; after long work that ``finished`` (no exception), one last line saying so."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            if finished and time.monotonic() - self.t0 >= self.every:  # long work: say it ended
                self._line(final=True)

    # ------------------------------------------------------------------ updates
    def update_to(self, done: int, total: int | None = None) -> None:
        with self._lock:
            if total is not None:
                self.total = int(total)
            self.done = int(done)
        if self._bar is not None:
            if total is not None:
                self._bar.total = self.total
            self._bar.update(self.done - self._bar.n)

    def set_desc(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description_str(desc)

    # ------------------------------------------------------------------ heartbeat
    def text(self, final: bool = False) -> str:
        """The heartbeat line (without the program prefix)."""
        with self._lock:
            done, total = self.done, self.total
        elapsed = time.monotonic() - self.t0
        units = self.unit if total == 1 else self.unit + ("es" if self.unit.endswith("ch") else "s")
        pct = f" ({100 * done / total:.0f} %)" if total > 0 else ""
        line = f"{self.desc}: {done:,} of {total:,} {units}{pct}, {_left(elapsed)} elapsed"
        if final:
            return line + ", done"
        if 0 < done < total:
            line += f", about {_left(elapsed / done * (total - done))} left"
        elif done == 0:
            line += ", still on the first batch"
        return line

    def _line(self, final: bool = False) -> None:
        try:
            self.stream.write(f"{self.prog}: {self.text(final)}\n")
            self.stream.flush()
        except (OSError, ValueError):  # the reader went away: the work goes on
            pass

    def _beat(self) -> None:
        while not self._stop.wait(max(self.every, 0.05)):
            self._beats += 1
            self._line()
