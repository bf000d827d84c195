"""One logging set-up for the ``mammo`` command, the training scripts and the viewer.

The library logs through ``logging.getLogger(__name__)`` and never configures logging itself;
the programs call :func:`configure` once. Messages go to stderr as ``prog: message`` (``INFO``
and up by default: "wrote ...", training progress, warnings, errors); with ``log_file``
everything from ``INFO`` up goes there too, with the time and, when a record carries
``extra={"details": traceback}``, the traceback. The library logs nothing at INFO that is not
meant for the user; chatter is DEBUG. Records of the ``quiet`` loggers (TensorFlow's, Keras',
Python warnings) go to the log file only, as do those of :data:`LOG_FILE_ONLY` (pydicom's
decoder tracebacks, pynetdicom's and dicomweb-client's failed connections) always.
:func:`divert_native_stderr` sends what C/C++ code writes to file descriptor 2 (TensorFlow's
start-up lines such as ``failed call to cuInit``, absl, Qt's native warnings) to the log file
as well, while Python's ``sys.stderr`` keeps the terminal.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

_TAG = "_mammo_handler"  # marks the handlers installed here (configure() replaces them)
#: Loggers whose records never reach the terminal, log file only: decoders that log their own
#: failure with a traceback (pydicom, for a corrupt JPEG 2000 frame) before the reader that
#: called them turns it into the one-line refusal the user sees.
#: pynetdicom / dicomweb-client log each failed association or request before `mammo send`
#: reports it in one line naming the node.
LOG_FILE_ONLY = ("pydicom", "pynetdicom", "dicomweb_client")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (tests and tools swap
    it), never to a stream closed since :func:`configure` ran."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class _OneLine(logging.Formatter):
    """The console's format: the message only, never a traceback (a record logged with
    ``exc_info`` or ``stack_info``, ours or a third-party library's such as pydicom's, shows its
    message and the exception's type and first line; the traceback goes to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            text = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        exc = saved[0][1] if saved[0] else None
        if exc is not None:
            first = (str(exc).splitlines() or [""])[0]
            text += f" ({type(exc).__name__}{': ' + first if first else ''})"
        return text


class _LogFile(logging.FileHandler):
    """A log file that never prints logging's own "--- Logging error ---" traceback on the
    terminal when the file cannot be written (a full or read-only disk)."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class _DetailsFormatter(logging.Formatter):
    """Appends a record's ``details`` (a traceback) below its message."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        details = str(getattr(record, "details", "") or "").rstrip()
        return f"{text}\n{details}" if details else text


class _Quiet(logging.Filter):
    """Drops records of the given loggers (and their children) from a handler."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = tuple(names)

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(record.name == n or record.name.startswith(n + ".") for n in self.names)


def configure(prog: str, level: int = logging.INFO, log_file: Path | str | None = None,
              stream: TextIO | None = None, quiet: Sequence[str] = (),
              verbose: bool | None = None) -> Path | None:
    """Route the project's log records: ``prog: message`` to ``stream`` (default stderr) from
    ``level`` up (INFO: what the programs tell their user; ``verbose=False`` means WARNING),
    and everything from INFO up, with tracebacks, to ``log_file`` (its folder is created; a
    file that cannot be opened is reported on stderr and skipped). Records of the ``quiet``
    loggers reach the log file only (the console when there is no log file). Calling it again
    replaces what an earlier call installed. Returns the log file used, or None."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _TAG, False)]:
        root.removeHandler(h)
        h.close()
    console = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    if verbose is not None:
        level = logging.INFO if verbose else logging.WARNING
    console.setLevel(level)
    console.setFormatter(_OneLine(f"{prog}: %(message)s"))
    setattr(console, _TAG, True)
    console.addFilter(_Quiet(LOG_FILE_ONLY))
    root.addHandler(console)
    root.setLevel(logging.INFO)
    used = None
    if log_file is not None:
        path = Path(log_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = _LogFile(path, encoding="utf-8")
        except OSError as exc:
            logging.getLogger(__name__).warning("%s: cannot write the log file (%s)", path,
                                                exc.strerror or exc)
        else:
            handler.setLevel(logging.INFO)
            handler.setFormatter(_DetailsFormatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s"))
            setattr(handler, _TAG, True)
            root.addHandler(handler)
            used = path
            if quiet:
                console.addFilter(_Quiet(quiet))
    # third-party chatter stays below warnings
    for name in ("matplotlib", "PIL", "h5py", "absl", "highdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return used


def divert_native_stderr(log_file: Path | str) -> bool:
    """Point file descriptor 2 at ``log_file`` (appending) so that native libraries' messages
    land there, and rebind ``sys.stderr`` (and logging handlers writing to it) to a copy of the
    old descriptor, so Python's own messages still reach the terminal. Returns False (and
    changes nothing) when the file cannot be opened or descriptor 2 cannot be duplicated."""
    try:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return False
    old_stream = sys.stderr
    try:
        if old_stream is not None:
            old_stream.flush()
        keep = os.dup(2)
        os.dup2(fd, 2)
    except OSError:
        os.close(fd)
        return False
    os.close(fd)
    new = os.fdopen(keep, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    sys.stderr = new
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) \
                and h.stream is old_stream:
            h.setStream(new)
    return True


__all__ = ["configure", "divert_native_stderr"]
