"""Atomic file writes: write to a temporary file beside the target, then rename over it.

Nothing half-written is ever left at the target path, even if the writer fails midway.

* A target that exists and is not a regular file (``/dev/null``, ``/dev/stdout``, a FIFO, a
  terminal) is *written through*: the finished bytes are copied into it instead of replacing
  it (renaming over ``/dev/null`` as root would turn it into a regular file). A FIFO without a
  reader is refused instead of blocking. Paths under ``/dev/`` and ``/proc/`` always write through.
* A symlink to a regular file replaces the file it points to; the link stays.
* Temporary files are named ``.<name>.tmp-<pid>-<random>``; a writer killed by SIGKILL leaves
  one behind, and the next write beside it removes those whose process is gone.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[^/]*$")


_FD_PATH = re.compile(r"^/(?:dev/fd|proc/self/fd)/(\d+)$")
_STD_PATHS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _link_chain(target: str | Path) -> list[str]:
    """``target`` and every path its symlinks lead through (absolute, at most 40 hops)."""
    chain = [os.path.abspath(os.fspath(target))]
    for _ in range(40):
        cur = chain[-1]
        try:
            nxt = os.readlink(cur)
        except OSError:
            break
        chain.append(os.path.abspath(os.path.join(os.path.dirname(cur), nxt)))
    return chain


def standard_fd(target: str | Path) -> int | None:
    """The open descriptor ``target`` names (``/dev/stdout`` -> 1, ``/dev/fd/N``,
    ``/proc/self/fd/N``), directly or through symlinks; None otherwise."""
    for hop in _link_chain(target):
        if hop in _STD_PATHS:
            return _STD_PATHS[hop]
        m = _FD_PATH.match(hop)
        if m:
            return int(m.group(1))
    return None


def write_through(target: str | Path) -> bool:
    """True when ``target`` must be written into rather than replaced: it exists and is not a
    regular file or folder (device, FIFO, terminal), or it (or a symlink on the way) lies
    under ``/dev/`` or ``/proc/``."""
    if any(hop.startswith(("/dev/", "/proc/")) for hop in _link_chain(target)):
        return True
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def clean_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove ``.<name>.tmp-<pid>-*`` files in ``folder`` left by writers that no longer run
    (killed by SIGKILL or a power cut); ``name`` limits it to one target. Returns the removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        m = _TMP_RE.match(e.name)
        if not m or (name is not None and m.group("name") != name):
            continue
        if _pid_alive(int(m.group("pid"))):
            continue
        try:
            if e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


def _copy_into(src: Path, target: str | Path) -> None:
    """Copy ``src``'s bytes into an existing non-regular ``target`` (device, FIFO, terminal);
    ``/dev/stdout`` and friends are written on the process's own descriptor (appending where
    it stands, as a shell redirection expects)."""
    fd_no = standard_fd(target)
    if fd_no is not None:
        import sys

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with open(src, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 16), b""):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd_no, view):]
        return
    flags = os.O_WRONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OSError(errno.ENXIO, "FIFO has no reader", os.fspath(target)) from None
        raise
    try:
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "wb", closefd=False) as out, open(src, "rb") as fh:
            shutil.copyfileobj(fh, out)
            out.flush()
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``.

    For writers that need a file name (``model.save``, ``fig.savefig``, ``np.save``).
    ``suffix`` defaults to the target's own suffix so format detection by extension works.
    A special-file target (see :func:`write_through`) gets the bytes copied into it instead.
    """
    target = Path(target)
    through = write_through(target)
    if not through and target.is_symlink():
        target = Path(os.path.realpath(target))  # replace the file, keep the link
    if through:
        tmp_dir = None  # the system's temp folder: nothing is created beside a device
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(target.parent, target.name)
        tmp_dir = target.parent
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.tmp-{os.getpid()}-", suffix=target.suffix if suffix is None else suffix,
        dir=tmp_dir,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        if through:
            _copy_into(tmp_path, target)
            tmp_path.unlink()
        else:
            os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(target: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open()`` that writes to a temporary file and renames it over ``target`` on success."""
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_open(target, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_open(target, "wb") as fh:
        fh.write(data)
