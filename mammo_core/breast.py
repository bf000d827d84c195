"""The breast in a whole mammogram: tissue mask (protocol level or Otsu, largest component, holes
filled), the chest-wall side and the pectoral muscle. Used by the abnormality map
(:mod:`mammo_core.scan`) and the study view. Research use only — not a medical device."""
from __future__ import annotations

import numpy as np

from mammo_core.protocol import TISSUE_LEVEL, full_scale

MASK_LONGEST = 512


def _small(image: np.ndarray, fs: int | None = None) -> tuple[np.ndarray, float]:
    import cv2

    f = min(1.0, MASK_LONGEST / max(image.shape))
    unit: np.ndarray = image.astype(np.float32) / float(fs or full_scale(image))
    if f < 1.0:
        unit = cv2.resize(unit, (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f))),
                          interpolation=cv2.INTER_AREA)
    return unit, f


def _largest_component(mask: np.ndarray) -> np.ndarray:
    import cv2

    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return lab == best


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    import cv2

    inv = (~mask).astype(np.uint8)
    _, lab = cv2.connectedComponents(inv, connectivity=4)
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))) - {0}
    holes = (lab > 0) & ~np.isin(lab, list(border))
    return mask | holes


def chest_wall_side(mask: np.ndarray) -> str:
    """'left' or 'right': the image edge the breast rests on (more tissue in that half)."""
    w = mask.shape[1]
    return "left" if mask[:, : w // 2].sum() >= mask[:, w - w // 2:].sum() else "right"


def pectoral_mask(unit: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """The pectoral muscle where it can be found (MLO views): the bright connected region in
    the upper chest-wall corner of the breast's bounding box; empty when nothing plausible is
    there (CC views)."""
    out = np.zeros_like(breast)
    if not breast.any():
        return out
    rows = np.flatnonzero(breast.any(axis=1))
    cols = np.flatnonzero(breast.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    out[r0:r1, c0:c1] = _pectoral_in_box(unit[r0:r1, c0:c1], breast[r0:r1, c0:c1])
    return out


def _pectoral_in_box(unit: np.ndarray, breast: np.ndarray) -> np.ndarray:
    import cv2

    h, w = breast.shape
    if h < 8 or w < 8:
        return np.zeros_like(breast)
    side = chest_wall_side(breast)
    vals = unit[breast]
    lo, hi = float(np.percentile(vals, 1)), float(np.percentile(vals, 99.5))
    if hi - lo < 1e-6:
        return np.zeros_like(breast)
    u8 = np.clip((unit - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    region = np.zeros_like(breast)
    region[: int(0.6 * h), : w // 2] = True
    if side == "right":
        region = region[:, ::-1]
    sel = breast & region
    if sel.sum() < 50:
        return np.zeros_like(breast)
    thr, _ = cv2.threshold(u8[sel].reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = sel & (u8 > thr)
    bright = cv2.morphologyEx(bright.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)) > 0
    n, lab = cv2.connectedComponents(bright.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(breast)
    # a component touching both the top rows and the chest-wall columns
    corner_rows = lab[: max(2, h // 20)]
    wall = lab[:, :3] if side == "left" else lab[:, w - 3:]
    top_ids = set(np.unique(corner_rows)) - {0}
    wall_ids = set(np.unique(wall)) - {0}
    ids = top_ids & wall_ids
    if not ids:
        return np.zeros_like(breast)
    areas = {i: int((lab == i).sum()) for i in ids}
    best = max(areas, key=areas.get)
    comp = lab == best
    if areas[best] > 0.35 * breast.sum():
        return np.zeros_like(breast)
    # a muscle gets narrower going down: its width in the lower half of its rows is smaller
    rows = np.flatnonzero(comp.any(axis=1))
    if rows.size < 4:
        return np.zeros_like(breast)
    widths = comp[rows].sum(axis=1)
    half = rows.size // 2
    if widths[half:].mean() > widths[:half].mean():
        return np.zeros_like(breast)
    return _fill_holes(comp)


def tissue_mask(image: np.ndarray, drop_pectoral: bool = True,
                level: str = "otsu", fs: int | None = None) -> tuple[np.ndarray, float]:
    """(breast mask, scale) with the mask at ``scale`` x the image size (longest side <= 512).
    ``level``: "protocol" (20/255 of full scale, the builders' tissue rule) or "otsu" (Otsu's
    threshold of the shrunk image, never below the protocol level: film background is often
    brighter than 20/255, and the skin line's dim margin is left out). ``fs``: the image's full
    scale (``Mammogram.full_scale``, from its true bit depth); default: guessed from its maximum."""
    import cv2

    fs = fs or full_scale(image)
    unit, f = _small(image, fs)
    lv = TISSUE_LEVEL
    if level == "otsu":
        u8 = np.clip(unit * 255, 0, 255).astype(np.uint8)
        t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        lv = max(lv, float(t) / 255.0)
    m = unit > lv
    k = max(3, round(min(m.shape) / 100) | 1)
    m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8)) > 0
    m = _fill_holes(_largest_component(m))
    if drop_pectoral:
        m = m & ~pectoral_mask(unit, m)
        m = _largest_component(m) if m.any() else m
    return m, f
