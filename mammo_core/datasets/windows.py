"""Window geometry shared by the dataset builders: lesion windows, tissue fractions, the
adjacent baseline window, and cutting a window to a 150 x 150 patch.

Pixel-index convention (used everywhere here and written down in the README):
a window is ``Box(top, left, height, width)`` covering array rows ``top .. top + height - 1``
and columns ``left .. left + width - 1`` (Python slice ``img[top:top+height, left:left+width]``).
A square of side ``s`` "centred" on pixel ``(row, col)`` starts at ``top = row - s // 2``,
``left = col - s // 2``. For an even side (every mini-MIAS side: 2 * RADIUS, 96 and 1024 are
even) the centre pixel is therefore the first pixel of the lower half: it sits at offset
``s // 2`` inside the window, with ``s // 2`` pixels above/left of it and ``s // 2 - 1`` below/
right of it. A window that leaves the image is shifted back inside (``top`` clipped to
``0 .. H - s``), never shrunk.

Tissue: a pixel is breast tissue when its value is above ``20 / 255`` of the image's nominal
full scale (8-bit: value > 20, exactly reference protocol v1; 16-bit: value > 5140; images
whose maximum fits 10/12/14 bits use that bit depth's full scale). Fractions are compared as
integer pixel counts, so ties are exact.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mammo_core.contract import PATCH_SIZE
from mammo_core.errors import DatasetError

PATCH_SIDE = PATCH_SIZE
#: Smallest window side of reference patch protocol v1 (pixels).
MIN_WINDOW_SIDE = 96
TISSUE_LEVEL_8BIT = 20
MIN_LESION_TISSUE = 0.5
MIN_BASELINE_TISSUE = 0.9
# Order of the baseline candidates; ties in tissue fraction go to the earlier one.
CANDIDATE_ORDER: tuple[str, ...] = ("left", "right", "above", "below")


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


def tissue_threshold(image: np.ndarray) -> float:
    """Pixels strictly above this value count as breast tissue (8-bit: 20)."""
    return TISSUE_LEVEL_8BIT * full_scale(image) / 255.0


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


def candidate_boxes(box: Box) -> dict[str, Box]:
    """The four windows of the same size touching ``box``'s edges, in CANDIDATE_ORDER."""
    return {
        "left": Box(box.top, box.left - box.width, box.height, box.width),
        "right": Box(box.top, box.left + box.width, box.height, box.width),
        "above": Box(box.top - box.height, box.left, box.height, box.width),
        "below": Box(box.top + box.height, box.left, box.height, box.width),
    }


@dataclass(frozen=True)
class BaselineChoice:
    box: Box | None
    side: str | None
    tissue_fraction: float
    # every candidate: name -> (inside the image, tissue fraction or None when outside)
    candidates: dict


def choose_baseline(image: np.ndarray, box: Box, threshold: float,
                    min_fraction: float = MIN_BASELINE_TISSUE) -> BaselineChoice:
    """The adjacent window with the largest tissue fraction among those wholly inside the image
    with at least ``min_fraction`` tissue; ties go to the earlier of left, right, above, below.
    ``box`` is None when no candidate qualifies."""
    best: tuple[int, str, Box] | None = None
    cands: dict[str, tuple[bool, float | None]] = {}
    need = min_fraction * box.area
    for name, cand in candidate_boxes(box).items():
        if not cand.inside(image.shape):
            cands[name] = (False, None)
            continue
        n = tissue_count(image, cand, threshold)
        cands[name] = (True, n / cand.area)
        if n >= need and (best is None or n > best[0]):
            best = (n, name, cand)
    if best is None:
        return BaselineChoice(None, None, 0.0, cands)
    return BaselineChoice(best[2], best[1], best[0] / box.area, cands)


def cut_patch(image: np.ndarray, box: Box, side: int = PATCH_SIDE) -> np.ndarray:
    """The window resized to ``side`` x ``side`` with OpenCV nearest-neighbour (native dtype)."""
    import cv2

    win = np.ascontiguousarray(box.slice(image))
    if win.shape[0] == side and win.shape[1] == side:
        return win.copy()
    return cv2.resize(win, (side, side), interpolation=cv2.INTER_NEAREST)


# ------------------------------------------------------------------ the one cutting code path
# Reference patch protocol v1 as one function chain, used by the mini-MIAS builder, the viewer's
# region tool and ``mammo scan``: point (+ radius) or box -> window -> 150 x 150 uint16 patch.

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


def cut_window(image: np.ndarray, box: Box, scale_from: int | None = None) -> np.ndarray:
    """The training data's patch of ``box``: the window resized to 150 x 150 with
    ``cv2.INTER_NEAREST`` and scaled to uint16 from the image's full scale (8-bit: x 257).
    Pass ``scale_from=full_scale(image)`` when cutting many windows of one big image."""
    if image.ndim != 2 or image.dtype.kind not in "ui":
        raise DatasetError(f"expected a 2-D integer image, got shape {image.shape} {image.dtype}")
    fs = full_scale(image) if scale_from is None else int(scale_from)
    return to_uint16(cut_patch(image, box), fs)


def to_uint16(patch: np.ndarray, scale_from: int) -> np.ndarray:
    """Scale a patch from full scale ``scale_from`` to 16 bits: ``round(v * 65535 / scale_from)``
    (8-bit: exactly ``v * 257``, as protocol v1 says)."""
    if scale_from == 255:
        return patch.astype(np.uint16) * np.uint16(257)
    if scale_from == 65535:
        return patch.astype(np.uint16)
    return np.round(patch.astype(np.float64) * (65535.0 / scale_from)).astype(np.uint16)


def thumbnail(image: np.ndarray, longest: int = PATCH_SIDE) -> tuple[np.ndarray, float]:
    """An 8-bit thumbnail whose longer side is ``longest`` and the factor image -> thumbnail."""
    import cv2

    f = longest / max(image.shape[:2])
    small = cv2.resize(image, (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f))),
                       interpolation=cv2.INTER_AREA)
    fs = full_scale(image) if image.dtype.kind in "ui" else 1
    return np.clip(small.astype(np.float64) * (255.0 / fs), 0, 255).astype(np.uint8), f


def random_tissue_windows(image: np.ndarray, sides: Sequence[int], k: int, rng: np.random.Generator,
                          exclude: Sequence[Box] = (), threshold: float | None = None,
                          min_fraction: float = MIN_BASELINE_TISSUE, tries: int = 200) -> list[Box]:
    """Up to ``k`` square windows of healthy-looking tissue placed at random in ``image``.

    Each window's side is drawn from ``sides`` (e.g. the protocol sides of the lesion windows,
    so extra baselines have the lesions' scale), capped to the image; it lies wholly inside the
    image, holds at least ``min_fraction`` tissue (the protocol's baseline rule, 90 %), and
    overlaps neither a box in ``exclude`` (regions around lesions) nor another chosen window.
    Fewer than ``k`` come back when ``tries`` random placements per window find none.
    """
    if threshold is None:
        threshold = tissue_threshold(image)
    h, w = int(image.shape[0]), int(image.shape[1])
    sides = [int(s) for s in sides]
    chosen: list[Box] = []
    if not sides or k <= 0:
        return chosen
    for _ in range(int(k)):
        for _ in range(int(tries)):
            side = max(1, min(sides[int(rng.integers(len(sides)))], h, w))
            box = Box(int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)), side, side)
            if any(box.overlaps(e) for e in exclude) or any(box.overlaps(c) for c in chosen):
                continue
            if tissue_count(image, box, threshold) >= min_fraction * box.area:
                chosen.append(box)
                break
    return chosen
