"""One logging set-up for the ``mammo`` command, the training scripts and the viewer.

The library logs through ``logging.getLogger(__name__)`` and never configures logging itself;
the programs call :func:`configure` once. Messages go to stderr as ``prog: message`` (warnings
and up by default; ``INFO`` with ``verbose``); with ``log_file`` everything from ``INFO`` up goes
there too, with the time and, when a record carries ``extra={"details": traceback}``, the
traceback.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

_TAG = "_mammo_handler"  # marks the handlers installed here (configure() replaces them)


class _DetailsFormatter(logging.Formatter):
    """Appends a record's ``details`` (a traceback) below its message."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        details = str(getattr(record, "details", "") or "").rstrip()
        return f"{text}\n{details}" if details else text


def configure(prog: str, verbose: bool = False, log_file: Path | str | None = None,
              stream: TextIO | None = None) -> Path | None:
    """Route the project's log records: ``prog: message`` to ``stream`` (default stderr) from
    WARNING up (INFO up when ``verbose``), and everything from INFO up, with tracebacks, to
    ``log_file`` (its folder is created; a file that cannot be opened is reported on stderr and
    skipped). Calling it again replaces what an earlier call installed. Returns the log file
    used, or None."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _TAG, False)]:
        root.removeHandler(h)
        h.close()
    console = logging.StreamHandler(stream if stream is not None else sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    setattr(console, _TAG, True)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    used = None
    if log_file is not None:
        path = Path(log_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
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
    # third-party chatter stays below warnings
    for name in ("matplotlib", "PIL", "h5py", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return used


__all__ = ["configure"]
