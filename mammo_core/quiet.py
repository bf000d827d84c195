"""Keep native libraries' log lines (TensorFlow / XLA / absl start-up noise such as
``failed call to cuInit`` or ``oneDNN custom operations are on``) off the terminal, so the
tool's own one-line messages are not buried.

``divert_native_stderr()`` points file descriptor 2, which C++ code writes to directly, at a log
file, and gives Python's ``sys.stderr`` a duplicate of the original descriptor: every message
the tool prints still reaches the terminal, the native lines go to the log
(``$MAMMO_NATIVE_LOG``, default ``~/.cache/mammo/native.log``). It does nothing when
``sys.stderr`` is not the process's own (under test capture) or was already diverted.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_DIVERTED: Path | None = None


def native_log_path() -> Path:
    env = os.environ.get("MAMMO_NATIVE_LOG")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mammo" / "native.log"


def divert_native_stderr(log_path: str | Path | None = None) -> Path | None:
    """Send fd 2 to ``log_path`` (appending) and keep ``sys.stderr`` on the terminal. Returns
    the log path, or None when nothing was changed."""
    global _DIVERTED
    if _DIVERTED is not None:
        return _DIVERTED
    if sys.stderr is not sys.__stderr__:
        return None
    try:
        if sys.stderr.fileno() != 2:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    path = Path(log_path) if log_path is not None else native_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        path = Path(os.devnull)
        log_fd = os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    keep = os.dup(2)
    os.set_inheritable(keep, False)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = os.fdopen(keep, "w", buffering=1, encoding=sys.__stderr__.encoding or "utf-8",
                           errors="backslashreplace")
    sys.__stderr__ = sys.stderr
    _DIVERTED = path
    return path
