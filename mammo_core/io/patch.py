"""What the readers return: :class:`Patch` (one 150 x 150 patch and where it came from),
:class:`ReadFailure` (a file that could not be read, and why) and :class:`PatchCollection`,
plus the names of the CBIS-DDSM patch-array files and the small helpers the readers share.

Research use only — not a medical device.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from mammo_core.io.source import SourceRef
from mammo_core.predictions import patch_key

#: The splits of a CBIS-DDSM patch-array folder, in reading order.
SPLIT_NAMES = ("train", "public_test", "private_test")
#: Splits whose labels file must be present when the tensor is.
LABELLED_SPLITS = ("train", "public_test")
TENSOR_SUFFIX = "_tensor.npy"
LABELS_SUFFIX = "_labels.npy"


def split_of(source: str | Path, index: int | None) -> str:
    """The split a row of a patch array belongs to (``train`` for ``train_tensor.npy``), from
    the file's name; ``""`` for anything else."""
    name = Path(str(source)).name
    if index is None or not name.endswith(TENSOR_SUFFIX):
        return ""
    return name[: -len(TENSOR_SUFFIX)]


def container_bits(dtype: np.dtype) -> int | None:
    """8 for uint8, 16 for uint16, None for float (already [0, 1])."""
    return dtype.itemsize * 8 if dtype.kind == "u" else None


def short_problem(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), for a one-line error."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return msg[:200]


def readonly(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only array (a read-only view when it was writeable)."""
    a = np.asarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Patch:
    """One 150 x 150 patch and where it came from.

    ``pixels`` is (150, 150) in the file's native dtype (uint8 / uint16; float only from .npy),
    read-only. ``source`` is the file path as given; ``index`` the row of a stacked array or the
    frame of a multi-frame DICOM (``None`` for a single image); ``label`` the 0-4 label when a
    labels file gave one; ``original_shape`` the (height, width) before resizing to 150 x 150;
    ``bits`` the bit depth the model input is scaled by (``pixels / (2**bits - 1)``): BitsStored
    for DICOM, the container depth (8 / 16) for other files unless ``bits=`` overrode it, and
    ``None`` for float pixels (already in [0, 1]). Left out, it follows the dtype.
    ``split`` the split of a patch array (``train`` for a row of ``train_tensor.npy``; ``""``
    otherwise; derived from the file name when not given). ``source_ref`` the source image's
    identifiers (:class:`~mammo_core.io.source.SourceRef`: DICOM UIDs, frame, the window a
    patch was cut from), set by the DICOM reader and the window cutter, else ``None``.
    ``key`` names the patch in reports,
    heatmap mappings and the viewer. Patches compare by identity; use ``sha256`` to compare
    pixel content.
    """

    pixels: np.ndarray
    source: str
    index: int | None = None
    label: int | None = None
    original_shape: tuple[int, ...] | None = None
    split: str | None = None
    bits: int | None = None
    source_ref: SourceRef | None = None

    def __post_init__(self) -> None:
        if self.split is None:
            object.__setattr__(self, "split", split_of(self.source, self.index))
        if self.bits is None:
            object.__setattr__(self, "bits", container_bits(np.asarray(self.pixels).dtype))

    @property
    def key(self) -> str:
        """``source`` or ``source#index`` (:func:`mammo_core.predictions.patch_key`)."""
        return patch_key(self.source, self.index)

    @cached_property
    def sha256(self) -> str:
        """sha256 hex digest of the pixel bytes (C order)."""
        return hashlib.sha256(np.ascontiguousarray(self.pixels).tobytes()).hexdigest()

    @property
    def name(self) -> str:
        """A short display name: file name, plus ``[index]`` for rows of a stack."""
        base = Path(self.source).name
        return base if self.index is None else f"{base}[{self.index}]"


@dataclass(frozen=True)
class ReadFailure:
    """A file (or labels file) that could not be read, and why (one line, without the path)."""

    source: str
    error: str
    whole_image: bool = False  # far larger than a patch: open it as a whole mammogram instead

    def __str__(self) -> str:
        return f"{self.source}: {self.error}"


@dataclass
class PatchCollection:
    """What ``read_patches`` returns: the patches that loaded and the files that did not."""

    patches: list[Patch] = field(default_factory=list)
    errors: list[ReadFailure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.patches)

    def __iter__(self):
        return iter(self.patches)

