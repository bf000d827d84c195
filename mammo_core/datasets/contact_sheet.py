"""Contact sheets: one PNG per class showing what a builder cut, so a person can check it.

Each cell: a thumbnail of the whole mammogram with the abnormality window (red) and the
baseline window (green), then the baseline patch and the abnormality patch (150 x 150), with a
caption above. Drawn with OpenCV (no matplotlib needed); written atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_core import DISCLAIMER
from mammo_core.atomic import atomic_path
from mammo_core.protocol import PATCH_SIDE, Box, full_scale

CAPTION_H = 20
GAP = 6
PAIRS_PER_ROW = 2
MAX_ENTRIES = 80


@dataclass(frozen=True)
class SheetEntry:
    thumb: np.ndarray          # uint8 2-D thumbnail of the whole mammogram
    factor: float              # image pixel -> thumbnail pixel
    lesion_box: Box
    baseline_box: Box
    baseline: np.ndarray       # (150, 150) patch
    lesion: np.ndarray         # (150, 150) patch
    caption: str


def _to8(patch: np.ndarray) -> np.ndarray:
    fs = full_scale(patch)
    return np.clip(patch.astype(np.float64) * (255.0 / fs), 0, 255).astype(np.uint8)


def _rect(img: np.ndarray, box: Box, f: float, colour) -> None:
    import cv2

    p1 = (int(box.left * f), int(box.top * f))
    p2 = (max(p1[0] + 1, round(box.right * f) - 1), max(p1[1] + 1, round(box.bottom * f) - 1))
    cv2.rectangle(img, p1, p2, colour, 1)


def render_sheet(entries: list[SheetEntry], title: str) -> np.ndarray:
    """The sheet as a BGR uint8 image (at most MAX_ENTRIES cells)."""
    import cv2

    shown = entries[:MAX_ENTRIES]
    cell_w = 3 * PATCH_SIDE + 2 * GAP
    cell_h = CAPTION_H + PATCH_SIDE
    cols = PAIRS_PER_ROW
    rows = max(1, -(-len(shown) // cols))
    header = 44
    width = cols * cell_w + (cols + 1) * 2 * GAP
    height = header + rows * (cell_h + 2 * GAP) + GAP
    sheet = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    more = f" (first {MAX_ENTRIES} of {len(entries)})" if len(entries) > MAX_ENTRIES else ""
    cv2.putText(sheet, f"{title}: {len(entries)} pairs{more}", (2 * GAP, 18), font, 0.55,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(sheet, "mammogram (red = abnormality window, green = baseline) | baseline patch | "
                f"abnormality patch -- {DISCLAIMER}", (2 * GAP, 36), font, 0.4, (60, 60, 60), 1,
                cv2.LINE_AA)
    for k, e in enumerate(shown):
        r, c = divmod(k, cols)
        x0 = 2 * GAP + c * (cell_w + 2 * GAP)
        y0 = header + r * (cell_h + 2 * GAP)
        cv2.putText(sheet, e.caption[:70], (x0, y0 + 14), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        y = y0 + CAPTION_H
        th = cv2.cvtColor(e.thumb, cv2.COLOR_GRAY2BGR)
        _rect(th, e.baseline_box, e.factor, (0, 170, 0))
        _rect(th, e.lesion_box, e.factor, (0, 0, 230))
        sheet[y:y + th.shape[0], x0:x0 + th.shape[1]] = th[:PATCH_SIDE, :PATCH_SIDE]
        for j, patch in enumerate((e.baseline, e.lesion)):
            xx = x0 + (j + 1) * (PATCH_SIDE + GAP)
            sheet[y:y + PATCH_SIDE, xx:xx + PATCH_SIDE] = cv2.cvtColor(_to8(patch), cv2.COLOR_GRAY2BGR)
    return sheet


def write_sheet(path: str | Path, entries: list[SheetEntry], title: str) -> Path:
    import cv2

    img = render_sheet(entries, title)
    path = Path(path)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"{path}: OpenCV could not write the PNG")
    return path
