"""Abnormality map of a whole mammogram: a sliding protocol-v1 window over the breast only,
batched through the ensemble's P(abnormal), and a ranked list of candidate regions.

Steps (``scan_mammogram``):

1. **Tissue mask** (``mammo_core.breast.tissue_mask``), on a copy shrunk to at most 512 px (INTER_AREA): pixels
   above the protocol's tissue level (20/255 of full scale), opened to cut thin bridges,
   largest connected component only (drops film labels and markers), holes filled; then the
   pectoral muscle is dropped where it can be found (``mammo_core.breast.pectoral_mask``: the bright region in the
   upper corner on the chest-wall side, kept only when it touches both the top edge and the
   chest-wall edge and covers less than 35 % of the breast).
2. **Windows**: squares of side ``window_mm`` (default: the training data's median lesion
   window, 96 px x 0.2 mm = 19.2 mm on mini-MIAS, see ``DEFAULT_WINDOW_MM``) converted to
   pixels with the image's pixel spacing, centred on a grid of stride ``stride_fraction`` x
   side; a window is scored when at least ``min_tissue`` of it is breast (the protocol's
   rule for lesion windows is 50 %; the default here is 90 %, the protocol's baseline-window
   rule, because windows with background in them are out of the training data's range and the
   models call them abnormal). Each is cut by :func:`mammo_core.protocol.cut_window`, the code the builders
   use, so the map sees the pixels the training data had.
3. **P(abnormal)** per window through ``Session.p_abnormal`` (the ensemble's 1 - P(baseline)).
   Default map members: the fastest member that estimates P(baseline), one view per window;
   ``members="all"`` with ``map_tta="card"`` gives the ensemble's exact value. The members
   used, the TTA and whether that is exact are stated in the result. This pass is most of a
   scan's time (one VGG16 block-4 trunk per window with the bundled models). ``map_mode``
   says how P(abnormal) per window is obtained: ``windowed`` (each window cut and run alone)
   or ``dense`` (:mod:`mammo_core.dense_map`: the member's trunk once over the rescaled image,
   each window's pooled features read from it, the member's head; approximate, several times
   faster; pooled-head members and one view only, else the windowed map with the reason in
   ``map_mode_note``). Everything else (windows, tissue rule, map, candidates, their
   re-classification) is the same code for both.
4. **Map**: float32, one value per ``stride x stride`` cell (the downsampling factor is the
   stride in pixels): the mean P(abnormal) of the scored windows covering the cell; NaN where
   no window was scored.
5. **Candidates**: windows ranked by the map's P(abnormal), greedy non-maximum suppression (a
   window overlapping a better one by IoU > ``nms_iou`` is dropped), the best
   ``top_k x rescore`` re-classified with every loaded model and the ensemble
   (``Session.predict``: the members' identical VGG16 trunks run once per view for all of
   them, :mod:`mammo_core.forward`, exact), ranked by that P(abnormal), the best ``top_k`` kept. ``x``, ``y``
   are the window centre in source pixels (column, row), origin at the
   top-left corner of the image as stored.

Research use only — not a medical device.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mammo_core import DISCLAIMER, dense_map
from mammo_core.breast import tissue_mask
from mammo_core.dense_map import NotDense
from mammo_core.engine import MAP_MEASURED, MAP_PRECISION, PRECISIONS
from mammo_core.errors import MammoError
from mammo_core.io import SourceRef
from mammo_core.protocol import (
    MIN_BASELINE_TISSUE,
    Box,
    call_of,
    centred_square,
    cut_window,
    full_scale,
    window_patch,
    window_ref,
)

if TYPE_CHECKING:  # pragma: no cover
    from mammo_core.mammogram import Mammogram
    from mammo_core.session import Session

log = logging.getLogger(__name__)

CANDIDATES_SCHEMA = "mammo.candidates/1"
#: How P(abnormal) per window is obtained: "windowed" (each window cut, resized to 150 x 150
#: and run through the map's members) or "dense" (the member's trunk once over the rescaled
#: image, each window pooled from it: :mod:`mammo_core.dense_map`; pooled-head members and one
#: view only, else the windowed map with a note).
MAP_MODES = ("dense", "windowed")
#: Default "windowed". "dense" is 6.0x faster for the map pass and its candidates hit top-3
#: 13 / 20 vs 12 / 20 windowed in one run on 17 dev images, but its per-window values correlate
#: weakly with the windowed P(abnormal) (median 0.16 per image, mean |dp| 0.68): the map shown
#: (colour bar "P(abnormal)") would not be the models' probability, and with 30 windows
#: re-classified exactly per image the hit rate says little about the map itself. Lead's
#: decision, docs/whole_mammograms.md.
DEFAULT_MAP_MODE = "windowed"
#: Median protocol-v1 lesion window of the training data (mini-MIAS, the bundled models' data):
#: 96 px at 200 µm. Checked against Info.txt by tests/test_scan.py (marker ``shared``).
DEFAULT_WINDOW_MM = 19.2
#: Smallest window side (pixels) and most windows one scan may score: a 1-px-high image or a
#: stride of one pixel over a big image would otherwise run for hours (refused, with the fix).
MIN_WINDOW_PX = 8
MAX_WINDOWS = 250_000
#: Longest a scan of one image may take by default (minutes): the time is estimated from the
#: windows to score x the seconds per window measured on this machine and engine (the faster
#: of the first two batches: the first one includes the engine's warm-up), and an image over
#: the limit is refused after those two batches with the estimate (``ScanSettings.max_minutes``,
#: ``mammo scan --max-minutes``). Issue 26's attack measured ~55 ms per window with the bundled
#: models on a CPU (171,396 windows: about 2.6 h).
DEFAULT_MAX_MINUTES = 30.0


@dataclass(frozen=True)
class ScanSettings:
    window_mm: float = DEFAULT_WINDOW_MM
    stride_fraction: float = 0.25
    batch_size: int = 64
    top_k: int = 10
    nms_iou: float = 0.2
    # map members: "fastest" (the smallest P(baseline) member; default, an approximation of the
    # ensemble's P(abnormal), stated), "all" (every P(baseline) member: exact), or names
    members: tuple[str, ...] | str = "fastest"
    # test-time augmentation of the map pass: "none" (one view per window; default, 8x cheaper
    # than the cards' dihedral8, an approximation, stated) or "card" (as each card says: exact)
    map_tta: str = "none"
    min_tissue: float = MIN_BASELINE_TISSUE      # breast fraction a scored window needs
    rescore: int = 3                             # re-classify top_k x rescore windows after NMS
    mask_level: str = "otsu"                     # tissue mask threshold: "otsu" or "protocol"
    drop_pectoral: bool = True
    window_px: int | None = None                 # overrides window_mm (no spacing needed)
    max_minutes: float = DEFAULT_MAX_MINUTES     # refuse an image estimated to take longer
    # compute precision of the map pass on a compiled engine (None: MAP_PRECISION, chosen by
    # measurement, docs/engines.md); candidates use the session's engine precision
    map_precision: str | None = None
    map_mode: str = DEFAULT_MAP_MODE             # "dense" | "windowed" (MAP_MODES)

    def __post_init__(self) -> None:
        if self.map_mode not in MAP_MODES:
            raise MammoError(f"map mode must be one of {', '.join(MAP_MODES)}, got {self.map_mode!r}")
        if not (self.window_mm > 0 and np.isfinite(self.window_mm)):
            raise MammoError(f"window side must be a finite number > 0 mm, got {self.window_mm}")
        if not (0 < self.stride_fraction <= 1):
            raise MammoError(f"stride fraction must be in (0, 1], got {self.stride_fraction}")
        if self.batch_size < 1 or self.top_k < 0:
            raise MammoError("batch size must be >= 1 and top-k >= 0")
        if isinstance(self.members, str) and self.members not in ("fastest", "all"):
            raise MammoError(f"map members must be 'fastest', 'all' or names, got {self.members!r}")
        if self.map_tta not in ("none", "card"):
            raise MammoError(f"map TTA must be 'none' or 'card', got {self.map_tta!r}")
        if not isinstance(self.members, str) and not self.members:
            raise MammoError("map members: no model named")
        if not (0 <= self.min_tissue <= 1):
            raise MammoError(f"minimum tissue fraction must be in [0, 1], got {self.min_tissue}")
        if not (np.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise MammoError(f"time limit must be a finite number of minutes > 0, got {self.max_minutes}")
        if self.map_precision is not None and self.map_precision not in PRECISIONS:
            raise MammoError(f"map precision must be one of {', '.join(PRECISIONS)}, got {self.map_precision!r}")
        if self.window_px is not None and self.window_px < MIN_WINDOW_PX:
            raise MammoError(f"window side must be at least {MIN_WINDOW_PX} px, got {self.window_px}")


@dataclass(frozen=True)
class Candidate:
    x: int                      # window centre, column (source pixels, origin top-left)
    y: int                      # window centre, row
    side: int                   # window side (source pixels)
    p_abnormal: float           # the ensemble's (or the models') P(abnormal), all members
    p_map: float                # P(abnormal) from the map's members
    call: str
    probabilities: dict[str, float]
    box: Box = field(repr=False)
    source_ref: SourceRef | None = field(default=None, repr=False)  # the image's UIDs + window
    conformal: tuple[str, ...] | None = None  # the call's conformal set (None: no ensemble set)
    level: float | None = None
    warnings: tuple[str, ...] = ()  # OOD warnings of the window (mammo_core.ood)

    def to_json(self) -> dict:
        out = {"x": self.x, "y": self.y, "side": self.side, "p_abnormal": round(self.p_abnormal, 6),
               "p_map": round(self.p_map, 6), "call": self.call,
               "conformal_set": None if self.conformal is None else list(self.conformal),
               "conformal_level": self.level, "warnings": list(self.warnings),
               "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
               "box": {"top": self.box.top, "left": self.box.left, "height": self.box.height,
                       "width": self.box.width}}
        if self.source_ref is not None:
            out["source_ref"] = self.source_ref.to_json()
        return out


@dataclass
class ScanResult:
    source: str
    shape: tuple[int, int]
    window_px: int
    stride_px: int
    centres: np.ndarray          # (N, 2) int rows, cols of the scored windows
    p_abnormal: np.ndarray       # (N,) P(abnormal) of the map's members
    map: np.ndarray              # float32 (ceil(H / stride), ceil(W / stride)), NaN = not scored
    mask: np.ndarray             # bool tissue mask at mask_scale
    mask_scale: float            # mask pixels per source pixel
    candidates: list[Candidate]
    members: list[str]
    exact: bool                  # True when the map's members give the ensemble's exact P(abnormal)
    complete: bool               # False when cancelled
    seconds: float
    spacing_mm: float | None
    spacing_source: str
    settings: ScanSettings
    # the test-time augmentation each map member ran with (``Session.tta_of`` under "card")
    member_tta: dict[str, str] = field(default_factory=dict)
    # what computed the map and the candidates (mammo_core.engine.EngineInfo.to_json)
    map_engine: dict | None = None
    engine: dict | None = None
    coverage: np.ndarray | None = None  # windows covering each map cell (the map's shape)
    map_mode: str = "windowed"          # how P(abnormal) per window was obtained (MAP_MODES)
    map_mode_note: str = ""             # how the dense map differs, or why it was not used

    def mode_text(self) -> str:
        """``"dense map"``, ``"windowed map"`` or ``"windowed map (why not dense)"`` (the full
        note is ``map_mode_note``, in the JSON), plus the engine, precision and measured
        deviation when the map ran below f32."""
        eng = self.map_engine if isinstance(self.map_engine, dict) else {}
        low = (f" on {eng.get('name')} {eng.get('precision')} ({eng.get('deviation')})"
               if eng.get("precision") not in (None, "f32") and eng.get("deviation") else "")
        if self.map_mode == "windowed" and self.map_mode_note:
            return f"windowed map ({self.map_mode_note}){low}"
        return f"{self.map_mode} map{low}"
    def unscanned_mm(self) -> float | None:
        """How far (95th percentile, mm; px when the spacing is unknown) breast tissue reaches
        beyond the scanned cells: the band along the skin line no window covered."""
        return unscanned_band(self.map, self.mask, self.mask_scale, self.stride_px, self.spacing_mm)

    def members_text(self) -> str:
        """The map's members with the TTA each ran with: ``"a (TTA none), b (TTA dihedral8)"``."""
        return ", ".join(f"{m} (TTA {self.member_tta.get(m, '?')})" for m in self.members)

    def candidates_json(self) -> dict:
        return {
            "schema": CANDIDATES_SCHEMA,
            "source": self.source,
            "disclaimer": DISCLAIMER,
            "coordinates": "x, y = window centre (column, row) in source pixels, origin at the "
                           "top-left corner of the image as stored",
            "image": {"height": self.shape[0], "width": self.shape[1],
                      "pixel_spacing_mm": self.spacing_mm, "spacing_source": self.spacing_source},
            "window": {"side_px": self.window_px, "stride_px": self.stride_px,
                       "side_mm": None if self.spacing_mm is None else round(self.window_px * self.spacing_mm, 3),
                       "protocol": "reference patch protocol v1 window -> 150 x 150 INTER_NEAREST"},
            "map": {"downsampling": self.stride_px, "members": self.members, "exact": self.exact,
                    "tta": self.settings.map_tta, "member_tta": dict(self.member_tta),
                    "windows": len(self.p_abnormal), "complete": self.complete,
                    "mode": self.map_mode, "mode_requested": self.settings.map_mode,
                    "mode_note": self.map_mode_note,
                    "engine": self.map_engine,
                    "unscanned_band": {"outer": None if (u := self.unscanned_mm()) is None else round(u, 1),
                                       "unit": "mm" if self.spacing_mm else "px",
                                       "what": "95th percentile distance of breast tissue that no "
                                               "window scored to the scanned area (along the skin line)"}},
            "engine": self.engine,
            "candidates": [c.to_json() for c in self.candidates],
        }


# --------------------------------------------------------------------------- windows
def window_grid(shape: Sequence[int], side: int, stride: int) -> np.ndarray:
    """Centres (row, col) of a grid of windows of ``side`` covering the image at ``stride``."""
    h, w = int(shape[0]), int(shape[1])

    def axis(n: int) -> np.ndarray:
        if side >= n:
            return np.array([n // 2])
        c = np.arange(side // 2, n - side + side // 2 + 1, stride)
        last = n - side + side // 2
        if c[-1] != last:
            c = np.append(c, last)
        return c
    rr, cc = np.meshgrid(axis(h), axis(w), indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.int64)


def _tissue_fraction(mask: np.ndarray, f: float, boxes: Sequence[Box]) -> np.ndarray:
    ii = np.pad(mask.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = mask.shape
    out = np.empty(len(boxes))
    for i, b in enumerate(boxes):
        t, l_ = min(h, int(b.top * f)), min(w, int(b.left * f))
        bt, r = min(h, max(t + 1, round(b.bottom * f))), min(w, max(l_ + 1, round(b.right * f)))
        area = max(1, (bt - t) * (r - l_))
        out[i] = (ii[bt, r] - ii[t, r] - ii[bt, l_] + ii[t, l_]) / area
    return out


def iou(a: Box, b: Box) -> float:
    t, l_ = max(a.top, b.top), max(a.left, b.left)
    bt, r = min(a.bottom, b.bottom), min(a.right, b.right)
    inter = max(0, bt - t) * max(0, r - l_)
    return inter / float(a.area + b.area - inter) if inter else 0.0


def nms(boxes: Sequence[Box], scores: np.ndarray, max_iou: float, k: int) -> list[int]:
    """Indices of the best ``k`` boxes after greedy non-maximum suppression."""
    keep: list[int] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if all(iou(boxes[i], boxes[j]) <= max_iou for j in keep):
            keep.append(int(i))
            if len(keep) >= k:
                break
    return keep


def window_side_px(mammo: Mammogram, settings: ScanSettings) -> int:
    """The window side in source pixels. Refused (``MammoError`` naming the file) when the pixel
    size is unknown, when the side would be under ``MIN_WINDOW_PX`` or larger than the image:
    shrinking the window to fit would change the scale the models were trained at."""
    if settings.window_px is not None:
        side = float(settings.window_px)
        how = f"the {settings.window_px} px window"
    else:
        if mammo.mm_per_pixel is None:
            why = mammo.spacing_source if mammo.spacing_source.startswith("unknown (") else (
                "pixel size unknown (no DICOM PixelSpacing / ImagerPixelSpacing, not mini-MIAS)")
            raise MammoError(f"{why}: pass the pixel spacing (--pixel-spacing MM) or the window "
                             "side in pixels (--window-px)", mammo.source)
        side = settings.window_mm / mammo.mm_per_pixel
        how = f"a {settings.window_mm:g} mm window at {mammo.mm_per_pixel:g} mm per pixel"
    if not np.isfinite(side) or side < MIN_WINDOW_PX - 0.5:
        raise MammoError(f"{how} is under {MIN_WINDOW_PX} px: check the pixel size and the "
                         "window side", mammo.source)
    h, w = mammo.shape
    if round(side) > min(h, w):
        raise MammoError(f"image of {w} x {h} px is smaller than {how} ({round(side)} px): "
                         "nothing to scan at the training data's scale", mammo.source)
    return round(side)


# --------------------------------------------------------------------------- cost
@dataclass
class CostGuard:
    """Refuses a scan estimated to take longer than ``max_minutes``: windows x the seconds per
    window measured on this machine and engine (the fastest batch so far; the first batch
    includes the engine's warm-up, so nothing is refused before a second one was timed)."""

    windows: int
    max_minutes: float
    source: str
    per_window: float = float("inf")
    batches: int = 0
    unit: str = "window"   # what is counted (the dense map counts trunk tiles)

    def estimate_s(self) -> float:
        return self.windows * self.per_window

    def after_batch(self, done: int, size: int, seconds: float) -> None:
        self.batches += 1
        self.per_window = min(self.per_window, max(seconds, 1e-9) / max(1, size))
        est = self.estimate_s()
        if self.batches >= 2 and done < self.windows and est > 60.0 * self.max_minutes:
            allow = math.ceil(est / 60.0 * 1.2)
            raise MammoError(
                f"scanning it would take about {_duration(est)} ({self.windows:,} {self.unit}s at "
                f"{self.per_window * 1e3:.1f} ms each, measured here), over the "
                f"{self.max_minutes:g} min limit: allow it with --max-minutes {allow}, or use a "
                "larger --stride or window", self.source)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"


# --------------------------------------------------------------------------- the scan
def scan_mammogram(mammo: Mammogram, session: Session, settings: ScanSettings = ScanSettings(),
                   progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> ScanResult:
    """Map P(abnormal) over the breast of ``mammo`` and rank candidate regions (module doc).
    ``progress(done, total)`` after each batch of windows; ``cancel()`` True stops early (the
    result then has ``complete=False`` and covers the windows done)."""
    t0 = time.perf_counter()
    image = mammo.pixels
    side = window_side_px(mammo, settings)
    stride = max(1, round(side * settings.stride_fraction))
    n_grid = ((max(0, image.shape[0] - side) // stride + 2)
              * (max(0, image.shape[1] - side) // stride + 2))
    if n_grid > MAX_WINDOWS:
        raise MammoError(f"{n_grid:,} windows of {side} px at a stride of {stride} px exceed the "
                         f"{MAX_WINDOWS:,} one scan may score: use a larger stride or window",
                         mammo.source)
    fs = mammo.full_scale
    mask, f = tissue_mask(image, settings.drop_pectoral, settings.mask_level, fs)
    centres = window_grid(image.shape, side, stride)
    boxes = [centred_square(int(r), int(c), side, image.shape) for r, c in centres]
    frac = _tissue_fraction(mask, f, boxes)
    keep = np.flatnonzero(frac >= settings.min_tissue)
    centres = centres[keep]
    boxes = [boxes[i] for i in keep]
    all_members = session.abnormal_members()
    if settings.members == "all":
        members = all_members
    elif settings.members == "fastest":
        members = all_members[:1]
    else:
        members = list(settings.members)
    exact = set(members) == set(all_members) and (
        settings.map_tta == "card" or all(session.tta_of(m) == "none" for m in members))
    n = len(boxes)
    if n == 0:
        raise MammoError(f"no breast found: no window of {side} px is at least "
                         f"{settings.min_tissue:.0%} breast tissue (tissue mask "
                         f"{'empty' if not mask.any() else 'smaller than one window'}); check the "
                         "image, its bit depth (--bits) and --min-tissue / --window-px", mammo.source)
    mode, note, map_engine = "windowed", "", None
    p = np.empty(0)
    done, complete = 0, True
    if settings.map_mode == "dense":
        try:
            got = _dense_pass(image, boxes, side, session, members, settings, progress, cancel, fs,
                              mammo.source)
        except NotDense as err:
            note = f"dense map not possible: {err.problem}"
        except MammoError:
            raise  # the time limit, as for the windowed map
        except Exception as err:  # noqa: BLE001 - any fault of the dense pass: the windowed map
            note = f"dense map failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            log.warning("%s; using the windowed map", note)
        else:
            mode = "dense"
            idx, p, complete, note = got
            done = len(idx)
            centres = centres[idx]
            boxes = [boxes[i] for i in idx]
            eng = session.engine.settings.engine
            map_engine = session.engine.reference_info(
                "" if eng == "keras" else "the dense map's trunk runs on Keras/TensorFlow").to_json()
    if mode == "windowed":
        p, done, complete = _windowed_pass(image, boxes, session, members, settings, progress,
                                           cancel, fs, mammo.source)
    if not np.all(np.isfinite(p[:done])):  # never a NaN in a map or a report
        raise MammoError(f"the map's members gave a non-finite P(abnormal) for "
                         f"{int(np.sum(~np.isfinite(p[:done])))} of {done} windows", mammo.source)
    p = p[:done]
    centres = centres[:done]
    boxes = boxes[:done]
    exact = exact and mode == "windowed"

    gh, gw = -(-image.shape[0] // stride), -(-image.shape[1] // stride)
    acc = np.zeros((gh, gw))
    cnt = np.zeros((gh, gw))
    for b, v in zip(boxes, p):
        t, l_ = b.top // stride, b.left // stride
        bt, r = -(-b.bottom // stride), -(-b.right // stride)
        acc[t:bt, l_:r] += v
        cnt[t:bt, l_:r] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        amap = np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan).astype(np.float32)

    candidates: list[Candidate] = []
    if done and settings.top_k and complete and settings.rescore == 0:  # the map alone
        for i in nms(boxes, p, settings.nms_iou, settings.top_k):
            r, c = (int(v) for v in centres[i])
            candidates.append(Candidate(c, r, boxes[i].height, float(p[i]), float(p[i]),
                                        call_of({"baseline": 1.0 - p[i], "abnormal": p[i]}),
                                        {"baseline": float(1 - p[i])}, boxes[i],
                                        window_ref(mammo.source, mammo.source_ref, boxes[i])))
    elif done and settings.top_k and complete:
        best = nms(boxes, p, settings.nms_iou, settings.top_k * max(1, settings.rescore))
        patches = [window_patch(image, boxes[i], mammo.source, mammo.source_ref, fs) for i in best]
        preds = session.predict(patches, batch_size=settings.batch_size)
        for i, pred, patch in zip(best, preds, patches):
            if pred.ensemble is not None:
                probs = dict(pred.ensemble.probabilities)
                call = pred.ensemble.predicted
                pa = 1.0 - probs["baseline"]
            else:
                outs = [o for o in pred.per_model.values() if "baseline" in o.probabilities]
                probs = dict(outs[0].probabilities) if len(outs) == 1 else {
                    k: float(np.mean([o.probabilities[k] for o in outs])) for k in outs[0].probabilities}
                call = call_of(probs)
                pa = 1.0 - probs["baseline"]
            r, c = (int(v) for v in centres[i])
            candidates.append(Candidate(c, r, boxes[i].height, float(pa), float(p[i]), call,
                                        {k: float(v) for k, v in probs.items()}, boxes[i],
                                        patch.source_ref, pred.conformal, pred.level, pred.warnings))
        candidates.sort(key=lambda cd: -cd.p_abnormal)
        del candidates[settings.top_k:]
    return ScanResult(mammo.source, mammo.shape, side, stride, centres, p, amap, mask, f, candidates,
                      members, exact, complete, time.perf_counter() - t0, mammo.mm_per_pixel,
                      mammo.spacing_source if settings.window_px is None else "window given in px",
                      settings, member_tta(session, members, settings.map_tta),
                      map_engine or map_engine_info(session, settings.map_precision or MAP_PRECISION),
                      session.engine_info().to_json(), coverage=cnt.astype(np.int32),
                      map_mode=mode, map_mode_note=note)


def map_engine_info(session, precision: str) -> dict:
    """The windowed map pass's engine record, with the map's measured deviation from the f32 map
    (:data:`mammo_core.engine.MAP_MEASURED`) when it ran on OpenVINO below f32."""
    info = session.engine_info(precision).to_json()
    if info["name"] == "openvino" and info["precision"] in MAP_MEASURED:
        info["deviation"] = MAP_MEASURED[info["precision"]]
    return info


def _windowed_pass(image, boxes, session, members, settings, progress, cancel, fs, source):
    """P(abnormal) of each window cut and run through the map's members in batches:
    ``(p, windows done, complete)``."""
    n = len(boxes)
    guard = CostGuard(n, settings.max_minutes, source)
    p = np.empty(n, dtype=np.float64)
    done = 0
    for s in range(0, n, settings.batch_size):
        if cancel is not None and cancel():
            return p, done, False
        t_batch = time.perf_counter()
        chunk = boxes[s:s + settings.batch_size]
        stack = np.stack([cut_window(image, b, fs) for b in chunk])
        if len(chunk) < settings.batch_size and s > 0:  # same batch shape: no re-tracing
            stack = np.concatenate([stack, np.repeat(stack[-1:], settings.batch_size - len(chunk), 0)])
        p[s:s + len(chunk)] = session.p_abnormal(
            stack, members, batch_size=settings.batch_size,
            tta=None if settings.map_tta == "card" else "none",
            precision=settings.map_precision or MAP_PRECISION)[:len(chunk)]
        done = s + len(chunk)
        guard.after_batch(done, len(chunk), time.perf_counter() - t_batch)
        if progress is not None:
            progress(done, n)
    return p, done, True


def _dense_pass(image, boxes, side, session, members, settings, progress, cancel, fs, source):
    """P(abnormal) of the windows from one trunk pass per member over the rescaled image
    (:mod:`mammo_core.dense_map`): ``(indices of the windows done, p, complete, note)``; a
    cancelled dense pass returns no window. Raises :class:`NotDense` when a member or the
    settings do not allow it."""
    if settings.map_tta == "card" and any(session.tta_of(m) != "none" for m in members):
        raise NotDense("the map's TTA is the cards' (several views per window); the dense map "
                       "runs one view")
    dms = [dense_map.dense_member(session.loaded_model(m)) for m in members]
    small, scale = dense_map.rescaled(image, side, fs)
    tops = np.array([b.top for b in boxes])
    lefts = np.array([b.left for b in boxes])
    n = len(boxes)
    probs: dict[str, np.ndarray] = {}
    n_tiles = 0
    for k, (name, dm) in enumerate(zip(members, dms)):
        origins = dense_map.snap_origins(tops, lefts, scale, dm.stride, dm.extent, small.shape)
        total = sum(len(b.tiles) for b in dense_map.plan(dm, origins, small.shape))
        guard = CostGuard(total, settings.max_minutes, source, unit="trunk tile")
        n_tiles += total

        def on_tile(d, t, secs, k=k, guard=guard):
            guard.after_batch(d, 1, secs)
            if progress is not None:
                progress(min(n, round(n * (k + d / max(t, 1)) / len(dms))), n)
        got, pr = dense_map.dense_probabilities(dm, small, origins, on_tile=on_tile, cancel=cancel)
        if len(got) < n:  # cancelled: no partial dense map
            return np.zeros(0, np.int64), np.zeros(0), False, ""
        out = np.empty_like(pr)
        out[got] = pr
        probs[name] = out
    p = session.p_abnormal_of(probs)
    dm = dms[0]
    grid = dm.stride / scale
    note = (f"one trunk pass over the image rescaled by 150/{side}, {n_tiles} tile(s); window "
            f"origins snapped to {dm.stride} px of it ({grid:.1f} source px); approximate: each "
            "window sees the tissue around it instead of the zero padding of its own pass, which the "
            "head was fitted on: its values rank the windows but are not the windowed P(abnormal) "
            "(mean |difference| 0.68 on mini-MIAS, docs/whole_mammograms.md)")
    return np.arange(n), p, True, note


def member_tta(session, members: Sequence[str], map_tta: str) -> dict[str, str]:
    """The test-time augmentation each map member runs with: ``none`` under ``map_tta="none"``,
    else its card's (``Session.tta_of``)."""
    return {m: "none" if map_tta == "none" else session.tta_of(m) for m in members}


def unscanned_band(amap: np.ndarray, mask: np.ndarray, mask_scale: float, stride_px: int,
                   spacing_mm: float | None) -> float | None:
    """95th percentile distance (mm, or source px without a spacing) of breast tissue that no
    window scored to the nearest scored cell; None when every tissue pixel was scored."""
    import cv2

    h, w = mask.shape
    scored = cv2.resize(np.isfinite(amap).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    band = mask & ~scored
    if not band.any() or not scored.any():
        return None
    dist = cv2.distanceTransform((~scored).astype(np.uint8), cv2.DIST_L2, 5)
    px = float(np.percentile(dist[band], 95)) / max(mask_scale, 1e-9)
    return px * spacing_mm if spacing_mm else px


#: Width (px) of the colour bar strip and height of the text strip added to the map picture.
BAR_STRIP = 70
TEXT_STRIP = 44
HATCH = 8  # spacing of the hatch lines over unscanned tissue (output px)


def coverage_weight(coverage: np.ndarray | None) -> np.ndarray | None:
    """Per map cell, the share of the interior's window count that covered it (0..1): cells at
    the boundary of the scanned area, covered by fewer windows, are damped so the boundary is
    never the eye-catcher. The interior count is the 90th percentile of the covered cells'."""
    if coverage is None:
        return None
    cov = np.asarray(coverage, dtype=np.float64)
    if not (cov > 0).any():
        return np.zeros(cov.shape)
    full = max(1.0, float(np.percentile(cov[cov > 0], 90)))
    return np.clip(cov / full, 0.0, 1.0)


def map_overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.45,
                candidates: Sequence[Candidate] = (), longest: int = 1024,
                fs: int | None = None, coverage: np.ndarray | None = None,
                tissue: np.ndarray | None = None, unscanned: float | None = None,
                unit: str = "mm", legend: bool = True) -> np.ndarray:
    """RGB uint8 picture: the mammogram (grey, shrunk to ``longest``) with the map in the jet
    colour map where scored (alpha-blended; cells covered by fewer windows than the interior
    blended less, :func:`coverage_weight`), breast ``tissue`` that no window scored hatched, and
    the candidates' boxes numbered. With ``legend``: a colour bar of the P(abnormal) scale on the
    right and, below, the hatching explained ("outer N mm not scanned") and "Research use only -
    not a medical device"."""
    import cv2

    f = min(1.0, longest / max(image.shape))
    size = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
    grey = cv2.resize(image.astype(np.float32) / float(fs or full_scale(image)), size,
                      interpolation=cv2.INTER_AREA)
    g8 = np.clip(grey * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(g8[..., None], 3, axis=2)
    valid = np.isfinite(amap)
    m = cv2.resize(np.where(valid, amap, 0).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    v = cv2.resize(valid.astype(np.float32), size, interpolation=cv2.INTER_NEAREST) > 0.5
    col = cv2.applyColorMap(np.clip(m * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = coverage_weight(coverage)
    a = np.full(size[::-1], alpha, dtype=np.float32)
    if weight is not None:
        a = alpha * cv2.resize(weight.astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
    out = rgb.astype(np.float32)
    out[v] = (1 - a[v, None]) * out[v] + a[v, None] * col[v]
    if tissue is not None:  # tissue no window scored: hatched
        t = cv2.resize(np.asarray(tissue, np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        yy, xx = np.mgrid[:size[1], :size[0]]
        hatch = t & ~v & ((yy + xx) % HATCH == 0)
        out[hatch] = (0, 200, 255)
    out = out.astype(np.uint8)
    for k, cd in enumerate(candidates, 1):
        b = cd.box
        p1 = (int(b.left * f), int(b.top * f))
        p2 = (int(b.right * f) - 1, int(b.bottom * f) - 1)
        cv2.rectangle(out, p1, p2, (255, 255, 255), 2 if k <= 3 else 1)
        cv2.putText(out, str(k), (p1[0] + 2, p1[1] + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
    if not legend:
        return out
    return _with_legend(out, unscanned, unit, tissue is not None)


def _with_legend(pic: np.ndarray, unscanned: float | None, unit: str, hatched: bool) -> np.ndarray:
    """``pic`` with the colour bar (P(abnormal) 0..1, jet) on the right and the notes below."""
    import cv2

    h, w = pic.shape[:2]
    canvas = np.full((h + TEXT_STRIP, w + BAR_STRIP, 3), 255, np.uint8)
    canvas[:h, :w] = pic
    top, bottom = 24, max(40, h - 12)
    ramp = np.linspace(1.0, 0.0, bottom - top)[:, None]
    bar = cv2.applyColorMap(np.clip(ramp * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    canvas[top:bottom, w + 8:w + 24] = np.repeat(bar, 16, axis=1)
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    cv2.putText(canvas, "P(abn.)", (w + 4, 16), font, 0.4, black, 1, cv2.LINE_AA)
    for frac, label in ((0.0, "1.0"), (0.5, "0.5"), (1.0, "0.0")):
        y = int(top + frac * (bottom - top - 1))
        cv2.line(canvas, (w + 24, y), (w + 30, y), black, 1)
        cv2.putText(canvas, label, (w + 32, y + 4), font, 0.4, black, 1, cv2.LINE_AA)
    note = "Research use only - not a medical device. Colour: P(abnormal) of the windows."
    if hatched:
        band = ("every tissue pixel scanned" if unscanned is None
                else f"hatched: tissue not scanned (outer {unscanned:.0f} {unit} along the skin line)")
        note2 = f"{band}; faint colour: cells covered by fewer windows."
    else:
        note2 = "Faint colour: cells covered by fewer windows."
    cv2.putText(canvas, note, (6, h + 17), font, 0.42, (160, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, note2, (6, h + 36), font, 0.42, black, 1, cv2.LINE_AA)
    return canvas
