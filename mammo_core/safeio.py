"""Reading untrusted files without being stalled, flooded or fooled by them.

* Only regular files are read. A file is opened with ``O_NONBLOCK`` and checked with ``fstat``
  on the open descriptor, so a FIFO named ``.png`` or a symlink to ``/dev/zero`` is refused at
  once (``"not a regular file (a FIFO)"``) instead of blocking or streaming forever.
* Bytes read are capped: ``MAMMO_MAX_FILE_BYTES`` (default 2 GiB) for whole-file reads, and
  the callers pass smaller caps for small files (cards, manifests, CSVs).
* Image size is capped in pixels before decoding: ``MAMMO_MAX_PIXELS`` (default 100 000 000,
  about a 10 000 x 10 000 image; mammograms are at most ~ 4 000 x 5 000).
* ``shown(text)`` makes any file name safe to print on one line: bytes that are not valid
  UTF-8 (Python keeps them as surrogate escapes) become ``\\xNN`` and control characters
  (newline, tab, ESC ...) their backslash escapes, so a name cannot forge an output line.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

DEFAULT_MAX_FILE_BYTES = 2 << 30
DEFAULT_MAX_PIXELS = 100_000_000
SMALL_FILE_BYTES = 64 << 20  # cards, manifests, CSVs, JSON


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        return default
    return value if value > 0 else default


def max_file_bytes() -> int:
    """The cap on bytes read from one file (``$MAMMO_MAX_FILE_BYTES``, default 2 GiB)."""
    return _env_int("MAMMO_MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES)


def max_pixels() -> int:
    """The cap on pixels (width x height) of one image (``$MAMMO_MAX_PIXELS``, default 100 M)."""
    return _env_int("MAMMO_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def pixel_limit_problem(height: int, width: int, frames: int = 1) -> str | None:
    """``None`` when an image of this size may be decoded, else the one-line reason."""
    limit = max_pixels()
    n = int(height) * int(width)
    if n > limit:
        return (f"image of {int(width)} x {int(height)} = {n:,} pixels exceeds the limit of {limit:,} "
                "pixels (set MAMMO_MAX_PIXELS to raise it)")
    if frames > 1 and n * int(frames) > 16 * limit:
        return (f"{int(frames)} frames of {int(width)} x {int(height)} pixels exceed the limit of "
                f"{16 * limit:,} pixels per file (set MAMMO_MAX_PIXELS to raise it)")
    return None


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


class UnsafeFile(OSError):
    """A path that is not a readable regular file, or too big; ``str()`` is the one-line reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def missing_reason(path: str | Path) -> str:
    """Why ``path`` cannot be found: a symlink loop, a dangling symlink, or no such file."""
    p = os.fspath(path)
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (too many levels of symbolic links)"
        if os.path.islink(p):
            return f"broken symlink (its target {shown(os.readlink(p))} does not exist)"
        if exc.errno == errno.ENOTDIR:
            return "no such file (a part of the path is not a folder)"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"cannot open file: {exc.strerror}"
        return "no such file or folder"
    return "exists"


def open_regular(path: str | Path) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only without blocking and check it is a regular file.

    Returns ``(fd, stat)``; raises :class:`UnsafeFile` with a one-line reason otherwise.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFile(missing_reason(path)) from None
        if exc.errno == errno.EISDIR:
            raise UnsafeFile("not a regular file (a folder)") from None
        if exc.errno == errno.ENXIO:
            raise UnsafeFile("not a regular file (a socket or device without a reader)") from None
        raise UnsafeFile(f"cannot open file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"not a regular file ({kind_of(st.st_mode)})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file, at most ``limit`` (default :func:`max_file_bytes`)."""
    limit = max_file_bytes() if limit is None else min(limit, max_file_bytes())
    fd, st = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > limit:
            raise UnsafeFile(f"file is larger than the limit of {limit:,} bytes ({st.st_size:,} bytes; "
                             "set MAMMO_MAX_FILE_BYTES to raise it)")
        data = fh.read(limit + 1)
    if len(data) > limit:  # grew while we read
        raise UnsafeFile(f"file is larger than the limit of {limit:,} bytes (set MAMMO_MAX_FILE_BYTES "
                         "to raise it)")
    return data


def read_head(path: str | Path, n: int) -> bytes | None:
    """The first ``n`` bytes of a regular file; ``None`` when it is not one or cannot be read."""
    try:
        fd, _ = open_regular(path)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        try:
            return fh.read(n)
        except OSError:
            return None


def is_regular(path: str | Path) -> bool:
    """True for an existing regular file (symlinks followed); never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b", "\x00": "\\x00"}


def shown(text: object) -> str:
    """``text`` (a path or message) as one printable, valid UTF-8 line: undecodable bytes of a
    file name become ``\\xNN``, control characters their escapes."""
    s = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    if isinstance(s, bytes):
        s = s.decode("utf-8", "backslashreplace")
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in s):  # surrogate-escaped bytes of a file name
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # other lone surrogates
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    if any(ord(c) < 32 or ord(c) == 127 for c in s):
        s = "".join(_CONTROL.get(c, f"\\x{ord(c):02x}") if (ord(c) < 32 or ord(c) == 127) else c for c in s)
    return s
