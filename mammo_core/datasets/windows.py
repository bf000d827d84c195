"""Window choices of the dataset builders: the adjacent baseline window of a lesion, extra
baseline windows placed at random in healthy tissue, and thumbnails for the contact sheets.

The geometry itself (``Box``, protocol v1 windows, cutting, the tissue level) is the runtime
protocol, :mod:`mammo_core.protocol`, shared with ``mammo scan`` and the viewer.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mammo_core.protocol import (
    MIN_BASELINE_TISSUE,
    PATCH_SIDE,
    Box,
    full_scale,
    tissue_count,
    tissue_threshold,
)

# Order of the baseline candidates; ties in tissue fraction go to the earlier one.
CANDIDATE_ORDER: tuple[str, ...] = ("left", "right", "above", "below")


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
