"""Exceptions of mammo_core. Every message names the file and the problem in one line."""
from __future__ import annotations

from pathlib import Path

from mammo_core.safeio import shown


class MammoError(Exception):
    """Base class: a problem the user can act on (bad input, bad bundle, bad arguments).

    ``str(err)`` is a single line of the form ``"<path>: <problem>"`` when a path is known;
    control characters and undecodable bytes of either are shown escaped (``safeio.shown``), so
    a file name can neither break the line nor the output's encoding.
    """

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(f"{shown(self.path)}: {shown(problem)}" if self.path else shown(problem))


class PatchReadError(MammoError):
    """A patch or image file could not be read (missing, truncated, not an image, bad shape...)."""


class NotAPatchError(PatchReadError):
    """An image far larger than a 150 x 150 patch (a whole mammogram) offered as a patch."""


class DatasetError(MammoError):
    """A patch-array folder (CBIS-DDSM layout) or a source database is malformed."""


class BundleError(MammoError):
    """A model bundle is missing, malformed, or its hash does not match."""
