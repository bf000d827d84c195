"""The runtime protocol: how a window is placed and cut (protocol v1), what counts as breast
tissue, and how a distribution becomes a call. The dataset builders, ``mammo scan``, the
viewer's region tool, the explanations and the ensemble import these from here, so what the
models were trained on and what they are shown at inference are defined once.

Window geometry (reference patch protocol v1)
    A window is ``Box(top, left, height, width)`` covering array rows ``top .. top + height - 1``
    and columns ``left .. left + width - 1`` (Python slice ``img[top:top+height, left:left+width]``),
    origin at the top-left corner of the image as stored. A square of side ``s`` "centred" on
    pixel ``(row, col)`` starts at ``top = row - s // 2``, ``left = col - s // 2``: for an even
    side the centre pixel is the first pixel of the lower half (``s // 2`` pixels above / left
    of it, ``s // 2 - 1`` below / right). A window that leaves the image is shifted back inside
    (``top`` clipped to ``0 .. H - s``), never shrunk. A lesion of radius ``r`` gets a square of
    side ``min(max(2r, 96), min(H, W))`` (:func:`point_window`); a drawn box is its centre and
    half its longer side (:func:`box_window`). :func:`cut_window` resizes the window to
    150 x 150 with ``cv2.INTER_NEAREST`` and scales it to uint16 from the image's full scale
    (8-bit: x 257); :func:`window_patch` makes it a :class:`~mammo_core.io.Patch` that keeps
    its source's identifiers and the window (``SourceRef.window``).

Tissue
    A pixel is breast tissue when its value is above ``TISSUE_LEVEL_8BIT / 255`` (20 / 255) of
    the image's full scale (8-bit: value > 20; 16-bit: > 5140; :func:`tissue_threshold`), on
    the model-input scale [0, 1] above :data:`TISSUE_LEVEL`. A lesion window needs
    ``MIN_LESION_TISSUE`` (50 %) tissue, a baseline window ``MIN_BASELINE_TISSUE`` (90 %);
    fractions are compared as integer pixel counts, so ties are exact.

The call
    ``baseline`` (normal tissue) when P(baseline) >= :data:`CALL_BASELINE_AT` (50 %),
    otherwise the most likely abnormal class (:func:`call_index`, :func:`call_of`);
    :data:`CALL_RULE` says it in words, from the same constant. The ensemble, ``mammo scan``
    and every report use it.

Research use only — not a medical device.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mammo_core.contract import PATCH_SIZE
from mammo_core.errors import DatasetError
from mammo_core.io.patch import Patch
from mammo_core.io.source import SourceRef

PROTOCOL_VERSION = 1
PATCH_SIDE = PATCH_SIZE
#: Smallest window side of reference patch protocol v1 (pixels).
MIN_WINDOW_SIDE = 96
#: Tissue level on the 8-bit scale: a pixel above 20 / 255 of the full scale is breast tissue.
TISSUE_LEVEL_8BIT = 20
#: The same level on the model-input scale [0, 1].
TISSUE_LEVEL = TISSUE_LEVEL_8BIT / 255.0
#: Tissue fraction a lesion window needs (protocol v1), and a baseline window.
MIN_LESION_TISSUE = 0.5
MIN_BASELINE_TISSUE = 0.9

#: The call is ``baseline`` when P(baseline) is at least this.
CALL_BASELINE_AT = 0.5
CALL_RULE = (f"call = normal tissue (baseline) when P(baseline) >= {CALL_BASELINE_AT * 100:g} %, "
             "otherwise the most likely of the four abnormal classes (so the call can differ from "
             "the longest bar)")
BASELINE_CLASS = "baseline"


# --------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class Box:
    """A window ``img[top:top+height, left:left+width]``."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:  # exclusive
        return self.top + self.height

    @property
    def right(self) -> int:  # exclusive
        return self.left + self.width

    def inside(self, shape: Sequence[int]) -> bool:
        h, w = int(shape[0]), int(shape[1])
        return self.top >= 0 and self.left >= 0 and self.bottom <= h and self.right <= w

    def overlaps(self, other: Box) -> bool:
        return not (self.bottom <= other.top or other.bottom <= self.top
                    or self.right <= other.left or other.right <= self.left)

    def slice(self, img: np.ndarray) -> np.ndarray:
        return img[self.top:self.bottom, self.left:self.right]

    @property
    def area(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class Jitter:
    """A small change of a protocol window for augmentation ("jittered crops").

    ``dx`` moves the centre right and ``dy`` moves it down (array rows, pixels); ``scale``
    multiplies the window side (then it is capped to the image and shifted inside as usual).
    """

    dx: int = 0
    dy: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (self.scale > 0):
            raise ValueError(f"jitter scale must be > 0, got {self.scale}")

    def describe(self) -> str:
        return f"dx={self.dx};dy={self.dy};scale={self.scale:.4f}"


def full_scale(image: np.ndarray) -> int:
    """Nominal full-scale value of an image: 255 for uint8; for wider integers the smallest of
    2**b - 1 (b = 10, 12, 14, 16) that holds the image's maximum."""
    if image.dtype == np.uint8:
        return 255
    if image.dtype.kind not in "ui":
        raise DatasetError(f"expected an integer image, got dtype {image.dtype}")
    top = int(image.max()) if image.size else 0
    for bits in (10, 12, 14, 16):
        if top <= (1 << bits) - 1:
            return (1 << bits) - 1
    raise DatasetError(f"image values up to {top} do not fit 16 bits")


def tissue_threshold(image: np.ndarray, scale_from: int | None = None) -> float:
    """Pixels strictly above this value count as breast tissue (8-bit: 20); ``scale_from`` is
    the image's full scale when known (``Mammogram.full_scale``), else :func:`full_scale`."""
    fs = full_scale(image) if scale_from is None else int(scale_from)
    return TISSUE_LEVEL_8BIT * fs / 255.0


def tissue_count(image: np.ndarray, box: Box, threshold: float) -> int:
    return int(np.count_nonzero(box.slice(image) > threshold))


def centred_square(row: int, col: int, side: int, shape: Sequence[int],
                   jitter: Jitter | None = None) -> Box:
    """Square of ``side`` centred on ``(row, col)`` (``top = row - side // 2``), shifted back
    inside an image of ``shape``, never shrunk. ``side`` is first capped to the image's smaller
    dimension. With ``jitter`` the centre moves by ``(dy, dx)`` and the side is scaled."""
    h, w = int(shape[0]), int(shape[1])
    if jitter is not None:
        row, col = row + int(jitter.dy), col + int(jitter.dx)
        side = round(side * jitter.scale)
    side = max(1, min(int(side), h, w))
    top = min(max(row - side // 2, 0), h - side)
    left = min(max(col - side // 2, 0), w - side)
    return Box(top, left, side, side)


def window_side(radius: float, shape: Sequence[int]) -> int:
    """Protocol v1 side for a lesion of ``radius`` pixels: ``min(max(2 * r, 96), min(H, W))``."""
    return min(max(2 * round(radius), MIN_WINDOW_SIDE), int(shape[0]), int(shape[1]))


def point_window(row: int, col: int, radius: float, shape: Sequence[int],
                 jitter: Jitter | None = None) -> Box:
    """The protocol v1 window of a lesion at array ``(row, col)`` with ``radius`` pixels: a
    square of side ``max(2r, 96)`` (capped to the image) centred there, shifted inside."""
    return centred_square(int(row), int(col), window_side(radius, shape), shape, jitter)


def box_window(box: Box, shape: Sequence[int]) -> Box:
    """The protocol v1 window of a box drawn around a lesion: the box's centre
    (``top + height // 2``, ``left + width // 2``) and radius ``max(height, width) / 2``, so
    the box ``(row - r, col - r, 2r, 2r)`` gives exactly ``point_window(row, col, r)``."""
    radius = max(int(box.height), int(box.width)) / 2.0
    return point_window(box.top + box.height // 2, box.left + box.width // 2, radius, shape)


def cut_patch(image: np.ndarray, box: Box, side: int = PATCH_SIDE) -> np.ndarray:
    """The window resized to ``side`` x ``side`` with OpenCV nearest-neighbour (native dtype)."""
    import cv2

    win = np.ascontiguousarray(box.slice(image))
    if win.shape[0] == side and win.shape[1] == side:
        return win.copy()
    return cv2.resize(win, (side, side), interpolation=cv2.INTER_NEAREST)


def to_uint16(patch: np.ndarray, scale_from: int) -> np.ndarray:
    """Scale a patch from full scale ``scale_from`` to 16 bits: ``round(v * 65535 / scale_from)``
    (8-bit: exactly ``v * 257``, as protocol v1 says)."""
    if scale_from == 255:
        return patch.astype(np.uint16) * np.uint16(257)
    if scale_from == 65535:
        return patch.astype(np.uint16)
    return np.round(patch.astype(np.float64) * (65535.0 / scale_from)).astype(np.uint16)


def cut_window(image: np.ndarray, box: Box, scale_from: int | None = None) -> np.ndarray:
    """The training data's patch of ``box``: the window resized to 150 x 150 with
    ``cv2.INTER_NEAREST`` and scaled to uint16 from the image's full scale (8-bit: x 257).
    Pass ``scale_from=full_scale(image)`` when cutting many windows of one big image."""
    if image.ndim != 2 or image.dtype.kind not in "ui":
        raise DatasetError(f"expected a 2-D integer image, got shape {image.shape} {image.dtype}")
    fs = full_scale(image) if scale_from is None else int(scale_from)
    return to_uint16(cut_patch(image, box), fs)


def window_ref(source: str, ref: SourceRef | None, box: Box) -> SourceRef:
    """The identifiers of a patch cut from ``box`` of the image ``source`` (``ref``: the
    image's own, e.g. ``Mammogram.source_ref``), with the window ``(top, left, side)``."""
    base = ref if ref is not None else SourceRef.of_file(source)
    return base.with_window(box.top, box.left, max(box.height, box.width))


def window_patch(image: np.ndarray, box: Box, source: str, ref: SourceRef | None = None,
                 scale_from: int | None = None, pixels: np.ndarray | None = None) -> Patch:
    """The :class:`~mammo_core.io.Patch` of ``box``: :func:`cut_window`'s pixels (or
    ``pixels`` already cut that way), the window's size as ``original_shape`` and the source's
    identifiers with the window (:func:`window_ref`)."""
    cut = cut_window(image, box, scale_from) if pixels is None else pixels
    return Patch(cut, source, None, None, (box.height, box.width),
                 source_ref=window_ref(source, ref, box))


# --------------------------------------------------------------------------- the call
def call_index(p: np.ndarray) -> np.ndarray:
    """The call of distributions ``p`` (N, K) whose column 0 is ``baseline``: 0 where
    P(baseline) >= :data:`CALL_BASELINE_AT`, otherwise ``1 +`` the most likely other column."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (N, K >= 2) with baseline first, got {p.shape}")
    abnormal = 1 + p[:, 1:].argmax(axis=1)
    return np.where(p[:, 0] >= CALL_BASELINE_AT, 0, abnormal).astype(np.int64)


def calls_baseline(p_baseline: float) -> bool:
    """Whether P(baseline) = ``p_baseline`` is called normal tissue."""
    return float(p_baseline) >= CALL_BASELINE_AT


def call_of(probabilities: Mapping[str, float]) -> str:
    """The call of one distribution by class name: ``baseline`` when it has that class and
    :func:`calls_baseline` says so, otherwise the most likely other class (a distribution
    without baseline: its most likely class)."""
    if not probabilities:
        raise ValueError("no probabilities to call")
    if BASELINE_CLASS in probabilities and calls_baseline(probabilities[BASELINE_CLASS]):
        return BASELINE_CLASS
    rest = {k: v for k, v in probabilities.items() if k != BASELINE_CLASS} or dict(probabilities)
    return max(rest, key=lambda k: rest[k])
