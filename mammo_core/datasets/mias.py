"""mini-MIAS -> CBIS-DDSM-layout patch arrays, by the "Reference patch protocol v1".

Protocol v1 (from the shared data's README), as implemented here for every abnormality with
coordinates and a class in the five-label scheme (masses CIRC/SPIC/MISC, calcifications CALC):

1. Centre ``(row, col) = (H - Y, X)`` (MIAS coordinates have their origin bottom-left; ``H`` is
   the image height, 1024 for mini-MIAS). Abnormality window: square of side
   ``s = min(max(2 * RADIUS, 96), min(H, W))`` with ``top = row - s // 2``,
   ``left = col - s // 2`` (see ``windows.py`` for the even-side convention), shifted back
   inside the image, never shrunk. Skipped when fewer than 50 % of its pixels are tissue
   (8-bit value > 20).
2. Baseline window: same size, touching the abnormality window on the left, right, above or
   below; it must lie wholly inside and hold >= 90 % tissue; the largest tissue fraction wins,
   ties in the order left, right, above, below; none -> the abnormality is skipped.
3. Both windows -> ``cv2.resize(win, (150, 150), interpolation=cv2.INTER_NEAREST)`` then x 257
   to uint16 (a 16-bit source: tissue above 20/255 of its full scale and values scaled by
   ``65535 / full scale``, i.e. kept for true 16-bit data).
4. Baseline at the even index, abnormality at the next odd index; labels 0 and 1-4.

ARCH / ASYM rows and rows without coordinates are reported as skipped, with their reason.
The train / public-test split is by woman (patient = (N + 1) // 2), stratified by label.
Optional jittered crops (``--jitter K``): K extra pairs per abnormality in the TRAIN split
only, with the window centre moved to a point drawn uniformly inside the lesion circle (radius
RADIUS) and the side scaled by 0.85-1.2; their ``jitter`` column in metadata.csv is 1..K (0 for
the protocol pair). Test pairs are never jittered.

Optional extra baseline windows (``--extra-baselines K``): up to K windows of healthy tissue per
mammogram of a TRAIN woman (normal mammograms, and lesion mammograms away from their lesions),
each >= 90 % tissue (the protocol's baseline rule), its side drawn from the protocol sides of the
train lesion windows, not overlapping another one nor the square of three times the protocol
side around any lesion with coordinates (images with a lesion row without coordinates give
none). They are appended to ``train_*`` after the pairs as single baseline patches (label 0,
``role`` ``extra_baseline``, ``pair`` -1), each with its woman in metadata.csv, so grouped splits
keep a woman's patches together. Women of the held-out split give none: ``public_test_*`` stays
exactly protocol v1.

Data: J Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database",
Exerpta Medica, International Congress Series 1069, pp. 375-378, 1994 (research use only).
"""
from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammo_core import DISCLAIMER, __version__
from mammo_core.datasets.contact_sheet import SheetEntry
from mammo_core.datasets.splits import check_split, grouped_split
from mammo_core.datasets.windows import choose_baseline, random_tissue_windows, thumbnail
from mammo_core.datasets.writer import write_patch_set
from mammo_core.errors import DatasetError, MammoError
from mammo_core.io import read_image as _read_image
from mammo_core.labels import LABEL_TO_NAME
from mammo_core.protocol import (
    MIN_LESION_TISSUE,
    MIN_WINDOW_SIDE,
    Box,
    Jitter,
    cut_window,
    full_scale,
    point_window,
    tissue_count,
    tissue_threshold,
    window_side,
)

PROTOCOL = "mini-MIAS reference patch protocol v1"
CITATION = ('J Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram '
            'Database", Exerpta Medica, International Congress Series 1069, pp. 375-378, 1994')
MIN_SIDE = MIN_WINDOW_SIDE
MASS_CLASSES = ("CIRC", "SPIC", "MISC")
CALC_CLASSES = ("CALC",)
OTHER_CLASSES = ("ARCH", "ASYM")
IMAGE_SUFFIXES = (".pgm", ".png", ".tif", ".tiff", ".dcm")
JITTER_SCALE = (0.85, 1.2)  # side factor of a jittered crop; its centre stays inside the lesion circle
EXCLUDE_FACTOR = 3  # extra baselines keep out of the square of 3 x protocol side around a lesion
EXTRA_TRIES = 200

_ROW = re.compile(r"^(mdb\d+)\s+(\S+)\s+(\S+)(.*)$")


@dataclass(frozen=True)
class MiasLesion:
    """One abnormality row of Info.txt."""

    image: str                 # "mdb005"
    tissue: str                # F / G / D
    cls: str                   # CIRC, SPIC, MISC, CALC, ARCH, ASYM
    severity: str | None       # B / M
    x: int | None
    y: int | None
    radius: int | None
    line: int = 0              # line number in Info.txt (1-based)
    number: int = 1            # 1-based number of this abnormality among its image's rows
    note: str = ""             # e.g. "*NOTE 3*" or "malformed row"

    @property
    def image_number(self) -> int:
        return int(self.image[3:])

    @property
    def patient(self) -> int:
        """Woman id: mdb001/mdb002 -> 1, mdb003/mdb004 -> 2, ..."""
        return (self.image_number + 1) // 2

    @property
    def lesion_id(self) -> str:
        return f"{self.image}:{self.number}"

    @property
    def label(self) -> int | None:
        """0-4 label, None for classes outside the scheme (ARCH, ASYM) or unknown severity."""
        sev = {"B": 0, "M": 1}.get(self.severity or "")
        if sev is None:
            return None
        if self.cls in MASS_CLASSES:
            return 1 + sev
        if self.cls in CALC_CLASSES:
            return 3 + sev
        return None


@dataclass(frozen=True)
class InfoFile:
    lesions: tuple[MiasLesion, ...]
    normals: tuple[str, ...]
    #: (line number, text, reason) of every line that looks like a row but could not be parsed
    dropped: tuple[tuple[int, str, str], ...] = ()


def parse_info(path: str | Path) -> InfoFile:
    """Read MIAS ``Info.txt`` (text header/footer ignored; one row per abnormality)."""
    path = Path(path)
    try:
        text = path.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("latin-1")  # UTF-8 BOM: not row text
    except OSError as err:
        raise DatasetError(f"cannot read the MIAS info file: {err.strerror or err}", path) from None
    lesions: list[MiasLesion] = []
    normals: list[str] = []
    dropped: list[tuple[int, str, str]] = []
    per_image: Counter = Counter()
    for lineno, raw in enumerate(text.splitlines(), 1):
        m = _ROW.match(raw.strip())
        if not m:
            if re.match(r"(?i)^\s*mdb", raw):  # a row we cannot read: listed, never dropped silently
                dropped.append((lineno, raw.strip()[:120],
                                "unparseable row (expected 'mdbNNN TISSUE CLASS [SEVERITY X Y RADIUS]')"))
            continue
        image, tissue, cls, rest = m.group(1), m.group(2), m.group(3).upper(), m.group(4).split()
        if cls == "NORM":
            normals.append(image)
            continue
        per_image[image] += 1
        severity = rest[0].upper() if rest and rest[0].upper() in ("B", "M") else None
        nums = rest[1:] if severity else rest
        x = y = r = None
        note = ""
        if len(nums) >= 3 and all(re.fullmatch(r"-?\d+", t) for t in nums[:3]):
            x, y, r = (int(t) for t in nums[:3])
        elif nums:
            note = " ".join(nums)
        lesions.append(MiasLesion(image, tissue, cls, severity, x, y, r, lineno, per_image[image], note))
    if not lesions and not normals:
        raise DatasetError("no 'mdbNNN ...' rows found; is this the MIAS Info.txt?", path)
    return InfoFile(tuple(lesions), tuple(normals), tuple(dropped))


# ---------------------------------------------------------------- the protocol (pure) ----

@dataclass(frozen=True)
class CutPair:
    lesion: MiasLesion
    label: int
    row: int
    col: int
    lesion_box: Box
    baseline_box: Box
    baseline_side: str
    lesion_tissue: float
    baseline_tissue: float
    baseline_patch: np.ndarray = field(repr=False)
    lesion_patch: np.ndarray = field(repr=False)
    jitter: Jitter | None = None


@dataclass(frozen=True)
class Skip:
    lesion: MiasLesion
    reason: str
    jitter: Jitter | None = None


def protocol_side(radius: int, shape: Sequence[int]) -> int:
    """``min(max(2 * RADIUS, 96), 1024)`` with 1024 read as the image's smaller side."""
    return window_side(int(radius), shape)


def lesion_centre(lesion: MiasLesion, shape: Sequence[int]) -> tuple[int, int]:
    """Array (row, col) of a lesion: row = H - Y, col = X."""
    return int(shape[0]) - int(lesion.y), int(lesion.x)


def eligibility(lesion: MiasLesion) -> str | None:
    """Why a row is outside the protocol before any pixel is read (None when it is in)."""
    if lesion.cls in OTHER_CLASSES:
        return f"class {lesion.cls} has no label in the five-class scheme"
    if lesion.cls not in MASS_CLASSES + CALC_CLASSES:
        return f"unknown class {lesion.cls}"
    if lesion.label is None:
        return f"unknown severity {lesion.severity!r}"
    if lesion.x is None:
        return f"no coordinates ({lesion.note})" if lesion.note else "no coordinates"
    if lesion.radius is not None and lesion.radius <= 0:
        return f"radius {lesion.radius} is not a positive number of pixels"
    return None


def cut_pair(image: np.ndarray, lesion: MiasLesion, jitter: Jitter | None = None) -> CutPair | Skip:
    """Apply protocol v1 to one abnormality of ``image`` (2-D integer array)."""
    why = eligibility(lesion)
    if why:
        return Skip(lesion, why, jitter)
    if image.ndim != 2 or image.dtype.kind not in "ui":
        return Skip(lesion, f"image is not 2-D integer grey (shape {image.shape}, {image.dtype})", jitter)
    shape = image.shape
    if not (0 <= int(lesion.x) < shape[1] and 0 < int(lesion.y) <= shape[0]):
        return Skip(lesion, f"centre ({lesion.x}, {lesion.y}) lies outside the {shape[1]} x {shape[0]} image",
                    jitter)
    row, col = lesion_centre(lesion, shape)
    box = point_window(row, col, int(lesion.radius), shape, jitter)
    thr = tissue_threshold(image)
    n = tissue_count(image, box, thr)
    if n < MIN_LESION_TISSUE * box.area:
        return Skip(lesion, f"abnormality window only {100 * n / box.area:.1f}% tissue (< 50%)", jitter)
    choice = choose_baseline(image, box, thr)
    if choice.box is None:
        return Skip(lesion, "no baseline window: no adjacent window inside the image with >= 90% tissue",
                    jitter)
    fs = full_scale(image)
    return CutPair(
        lesion=lesion, label=int(lesion.label), row=row, col=col, lesion_box=box,
        baseline_box=choice.box, baseline_side=choice.side, lesion_tissue=n / box.area,
        baseline_tissue=choice.tissue_fraction,
        baseline_patch=cut_window(image, choice.box, fs),
        lesion_patch=cut_window(image, box, fs), jitter=jitter,
    )


def cut_pairs(image: np.ndarray, lesions: Iterable[MiasLesion],
              jitter: Jitter | None = None) -> tuple[list[CutPair], list[Skip]]:
    """Protocol v1 on every abnormality of one image: (pairs, skips)."""
    pairs: list[CutPair] = []
    skips: list[Skip] = []
    for les in lesions:
        res = cut_pair(image, les, jitter)
        if isinstance(res, CutPair):
            pairs.append(res)
        else:
            skips.append(res)
    return pairs, skips


def stack_pairs(pairs: Sequence[CutPair]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint16 (2n,150,150), labels int64 (2n,)) in the pair layout."""
    imgs = np.zeros((2 * len(pairs), 150, 150), np.uint16)
    labels = np.zeros(2 * len(pairs), np.int64)
    for i, p in enumerate(pairs):
        imgs[2 * i], imgs[2 * i + 1] = p.baseline_patch, p.lesion_patch
        labels[2 * i + 1] = p.label
    return imgs, labels


def random_jitters(lesion: MiasLesion, side: int, k: int, seed: int) -> list[Jitter]:
    """``k`` reproducible jitters for one abnormality (independent of processing order)."""
    rng = np.random.default_rng([int(seed), lesion.image_number, lesion.number, 7919])
    r = float(lesion.radius or 0)
    out = []
    for _ in range(int(k)):
        # uniform over the disc of radius RADIUS: the new centre stays inside the lesion circle
        rho, phi = r * np.sqrt(rng.uniform()), rng.uniform(0.0, 2 * np.pi)
        dx, dy = int(np.trunc(rho * np.cos(phi))), int(np.trunc(rho * np.sin(phi)))
        out.append(Jitter(dx, dy, float(rng.uniform(*JITTER_SCALE))))
    return out


def lesion_exclusion(lesion: MiasLesion, shape: Sequence[int]) -> Box | None:
    """The square kept free of extra baseline windows around a lesion with coordinates (side
    ``EXCLUDE_FACTOR`` x the protocol side, not clipped), None without coordinates."""
    if lesion.x is None or lesion.y is None or lesion.radius is None:
        return None
    row, col = lesion_centre(lesion, shape)
    side = EXCLUDE_FACTOR * protocol_side(lesion.radius, shape)
    return Box(row - side // 2, col - side // 2, side, side)


def extra_baseline_windows(image: np.ndarray, lesions: Sequence[MiasLesion], sides: Sequence[int],
                           k: int, seed: int, image_number: int) -> list[Box]:
    """Up to ``k`` reproducible extra baseline windows of one mammogram (see the module
    docstring); none when one of its lesion rows has no coordinates."""
    exclude = []
    for les in lesions:
        box = lesion_exclusion(les, image.shape)
        if box is None:
            return []
        exclude.append(box)
    rng = np.random.default_rng([int(seed), int(image_number), 4099])
    return random_tissue_windows(image, sides, k, rng, exclude, tissue_threshold(image),
                                 tries=EXTRA_TRIES)


# ---------------------------------------------------------------- the builder ----

METADATA_COLUMNS = (
    "index", "split", "pair", "patient", "image", "lesion", "label", "class_name", "role",
    "mias_class", "severity", "tissue", "x", "y", "row", "col", "radius",
    "top", "left", "side", "window_tissue", "baseline_side",
    "jitter", "jitter_dx", "jitter_dy", "jitter_scale",
)
SKIPPED_COLUMNS = ("image", "lesion", "line", "mias_class", "severity", "x", "y", "radius",
                   "reason", "jitter")


@dataclass
class MiasBuildResult:
    out_dir: Path
    counts: dict            # split -> class name -> patches
    pairs: dict             # split -> number of pairs (jittered included)
    skipped: list[dict]
    failures: list[str]     # images missing / unreadable (partial failure)
    seconds: float
    files: list[Path]

    @property
    def skip_reasons(self) -> Counter:
        """Skip reasons with their numbers folded (for a summary)."""
        return Counter(re.sub(r" \(.*\)$", "", re.sub(r"only [\d.]+% tissue", "under 50% tissue",
                                                         s["reason"])) for s in self.skipped)


def find_image(images_dir: Path, name: str) -> Path | None:
    for suf in IMAGE_SUFFIXES:
        for cand in (images_dir / f"{name}{suf}", images_dir / f"{name}{suf.upper()}"):
            if cand.is_file():
                return cand
    return None


def _skip_row(s: Skip, jitter_no: int = 0) -> dict:
    les = s.lesion
    return {"image": les.image, "lesion": les.lesion_id, "line": les.line, "mias_class": les.cls,
            "severity": les.severity or "", "x": les.x, "y": les.y, "radius": les.radius,
            "reason": s.reason, "jitter": jitter_no}


def build_mias(images_dir: str | Path, info_file: str | Path, out_dir: str | Path,
               test_fraction: float = 0.2, seed: int = 0, jitter: int = 0,
               progress: bool = True, read_image: Callable | None = None,
               extra_baselines: int = 0) -> MiasBuildResult:
    """Build the mini-MIAS patch arrays (see the module docstring) into ``out_dir``."""
    t0 = time.perf_counter()
    if read_image is None:
        read_image = _read_image
    images_dir, info_file = Path(images_dir), Path(info_file)
    if not images_dir.is_dir():
        raise DatasetError("images folder not found", images_dir)
    if not 0 <= test_fraction < 1:
        raise DatasetError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if jitter < 0:
        raise DatasetError(f"--jitter must be >= 0, got {jitter}")
    if extra_baselines < 0:
        raise DatasetError(f"--extra-baselines must be >= 0, got {extra_baselines}")
    info = parse_info(info_file)

    skipped: list[dict] = [
        {"image": "", "lesion": "", "line": lineno, "mias_class": "", "severity": "", "x": "", "y": "",
         "radius": "", "reason": f"{why}: {text!r}", "jitter": 0}
        for lineno, text, why in info.dropped]
    failures: list[str] = [f"{info_file} line {lineno}: {why}" for lineno, _t, why in info.dropped]
    by_image: dict[str, list[MiasLesion]] = {}
    seen: dict[tuple, int] = {}
    for les in info.lesions:
        why = eligibility(les)
        key = (les.image, les.cls, les.severity, les.x, les.y, les.radius)
        if not why and key in seen:
            why = f"duplicate of line {seen[key]} (same image, class, severity and circle)"
        if why:
            skipped.append(_skip_row(Skip(les, why)))
        else:
            seen[key] = les.line
            by_image.setdefault(les.image, []).append(les)

    pairs: list[CutPair] = []
    jittered: dict[str, list[tuple[int, CutPair]]] = {}
    jitter_skips: dict[str, list[dict]] = {}
    thumbs: dict[str, tuple[np.ndarray, float]] = {}
    from tqdm import tqdm

    for name in tqdm(sorted(by_image), desc="mini-MIAS images", unit="img", disable=not progress,
                     file=sys.stderr):
        lesions = by_image[name]
        path = find_image(images_dir, name)
        if path is None:
            msg = f"{images_dir / name}.(pgm|png): image file not found"
            failures.append(msg)
            skipped.extend(_skip_row(Skip(les, "image file not found")) for les in lesions)
            continue
        try:
            image = read_image(path)
        except MammoError as err:
            failures.append(str(err))
            skipped.extend(_skip_row(Skip(les, f"unreadable image: {err.problem}")) for les in lesions)
            continue
        got, skips = cut_pairs(image, lesions)
        pairs.extend(got)
        skipped.extend(_skip_row(s) for s in skips)
        if got:
            thumbs[name] = thumbnail(image)
        for p in got:
            for k, jit in enumerate(random_jitters(p.lesion, p.lesion_box.height, jitter, seed), 1):
                res = cut_pair(image, p.lesion, jit)
                if isinstance(res, CutPair):
                    jittered.setdefault(p.lesion.lesion_id, []).append((k, res))
                else:
                    jitter_skips.setdefault(p.lesion.lesion_id, []).append(_skip_row(res, k))
    if not pairs:  # nothing is written: the reasons go into the message itself
        reasons = Counter(re.sub(r"\d+", "N", str(r["reason"]))[:100] for r in skipped)
        top = "; ".join(f"{n} x {why}" for why, n in reasons.most_common(4)) or "no abnormality rows"
        raise DatasetError(f"no abnormality could be cut ({top})", images_dir)

    _, labels = stack_pairs(pairs)
    groups = np.repeat([p.lesion.patient for p in pairs], 2)
    train_idx, test_idx = grouped_split(labels, groups, test_fraction, seed)
    check_split(train_idx, test_idx, groups, labels)
    split_pairs = {"train": [pairs[i // 2] for i in train_idx[1::2]],
                   "public_test": [pairs[i // 2] for i in test_idx[1::2]]}

    extras: list[tuple[str, int, Box, float, np.ndarray]] = []
    if extra_baselines:
        test_women = {p.lesion.patient for p in split_pairs["public_test"]}
        sides = [p.lesion_box.height for p in split_pairs["train"]]
        extras, fails = _extra_baselines(images_dir, info, test_women, sides, extra_baselines, seed,
                                         read_image, progress)
        failures.extend(fails)

    arrays = {}
    rows: list[dict] = []
    sheets: dict[int, list[SheetEntry]] = {lab: [] for lab in (1, 2, 3, 4)}
    for split, plist in split_pairs.items():
        seq: list[tuple[int, CutPair]] = []
        for p in plist:
            seq.append((0, p))
            if split == "train":
                seq.extend(jittered.get(p.lesion.lesion_id, []))
                skipped.extend(jitter_skips.get(p.lesion.lesion_id, []))
            sheets[p.label].append(SheetEntry(
                *thumbs[p.lesion.image], p.lesion_box, p.baseline_box, p.baseline_patch,
                p.lesion_patch, f"{split} {p.lesion.lesion_id} {p.lesion.cls} {p.lesion.severity} "
                f"r={p.lesion.radius} s={p.lesion_box.height} base={p.baseline_side}"))
        arrays[split] = stack_pairs([p for _, p in seq])
        for i, (k, p) in enumerate(seq):
            les = p.lesion
            common = {"split": split, "pair": i, "patient": les.patient, "image": les.image,
                      "lesion": les.lesion_id, "mias_class": les.cls, "severity": les.severity,
                      "tissue": les.tissue, "x": les.x, "y": les.y, "row": p.row, "col": p.col,
                      "radius": les.radius, "jitter": k,
                      "jitter_dx": p.jitter.dx if p.jitter else 0,
                      "jitter_dy": p.jitter.dy if p.jitter else 0,
                      "jitter_scale": f"{p.jitter.scale:.4f}" if p.jitter else "1.0000"}
            for role, label, box, frac in (("baseline", 0, p.baseline_box, p.baseline_tissue),
                                           ("abnormality", p.label, p.lesion_box, p.lesion_tissue)):
                rows.append({**common, "index": 2 * i + (role == "abnormality"), "label": label,
                             "class_name": LABEL_TO_NAME[label], "role": role, "top": box.top,
                             "left": box.left, "side": box.height,
                             "window_tissue": f"{frac:.4f}",
                             "baseline_side": p.baseline_side})

    if extras:
        n0 = len(arrays["train"][1])
        arrays["train"] = (np.concatenate([arrays["train"][0], np.stack([e[4] for e in extras])]),
                           np.concatenate([arrays["train"][1], np.zeros(len(extras), np.int64)]))
        for j, (name, woman, box, frac, _) in enumerate(extras):
            rows.append({"index": n0 + j, "split": "train", "pair": -1, "patient": woman, "image": name,
                         "lesion": "", "label": 0, "class_name": LABEL_TO_NAME[0],
                         "role": "extra_baseline", "mias_class": "", "severity": "", "tissue": "",
                         "x": "", "y": "", "row": box.top + box.height // 2,
                         "col": box.left + box.width // 2, "radius": "", "top": box.top,
                         "left": box.left, "side": box.height, "window_tissue": f"{frac:.4f}",
                         "baseline_side": "", "jitter": 0, "jitter_dx": 0, "jitter_dy": 0,
                         "jitter_scale": "1.0000"})
    counts = {s: {LABEL_TO_NAME[c]: int(np.sum(arrays[s][1] == c)) for c in range(5)} for s in arrays}
    n_pairs = {s: int(np.sum(arrays[s][1] != 0)) for s in arrays}
    build_info = {
        "source": "mini-MIAS", "protocol": PROTOCOL, "images": str(images_dir), "info": str(info_file),
        "test_fraction": test_fraction, "seed": seed, "jitter_copies_per_train_lesion": jitter,
        "extra_baselines_per_train_image": extra_baselines, "extra_baselines": len(extras),
        "counts": counts, "pairs": n_pairs, "skipped": len(skipped), "failures": failures,
        "split": "by woman (patient = (N + 1) // 2), stratified by label (grouped_split)",
        "mammo_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "citation": CITATION, "licence": "MIAS licence: research use only; no sale or rent",
        "notice": DISCLAIMER,
    }

    sheet_files = {f"contact_sheet_{LABEL_TO_NAME[lab]}.png": (f"mini-MIAS {LABEL_TO_NAME[lab]}", ents)
                   for lab, ents in sheets.items() if ents}
    files = write_patch_set(out_dir, arrays, rows, METADATA_COLUMNS, skipped, SKIPPED_COLUMNS,
                            sheet_files, build_info)
    return MiasBuildResult(Path(out_dir), counts, n_pairs, skipped, failures,
                           time.perf_counter() - t0, files)


def _extra_baselines(images_dir: Path, info: InfoFile, test_women: set[int], sides: Sequence[int], k: int,
                     seed: int, read_image: Callable, progress: bool
                     ) -> tuple[list[tuple[str, int, Box, float, np.ndarray]], list[str]]:
    """Extra baseline patches from every mammogram of a woman outside the held-out split:
    (image, woman, window, tissue fraction, uint16 patch) in image order, and failures."""
    from tqdm import tqdm

    rows_of: dict[str, list[MiasLesion]] = {}
    for les in info.lesions:
        rows_of.setdefault(les.image, []).append(les)
    names = sorted(set(info.normals) | set(rows_of))
    out: list[tuple[str, int, Box, float, np.ndarray]] = []
    failures: list[str] = []
    for name in tqdm(names, desc="extra baselines", unit="img", disable=not progress, file=sys.stderr):
        number = int(name[3:])
        woman = (number + 1) // 2
        if woman in test_women:
            continue
        path = find_image(images_dir, name)
        if path is None:
            continue  # reported by the lesion pass where it matters; normals may be absent
        try:
            image = read_image(path)
        except MammoError as err:
            failures.append(str(err))
            continue
        if image.ndim != 2 or image.dtype.kind not in "ui":
            failures.append(f"{path}: not a 2-D integer grey image")
            continue
        thr, fs = tissue_threshold(image), full_scale(image)
        for box in extra_baseline_windows(image, rows_of.get(name, []), sides, k, seed, number):
            out.append((name, woman, box, tissue_count(image, box, thr) / box.area,
                        cut_window(image, box, fs)))
    return out, failures
