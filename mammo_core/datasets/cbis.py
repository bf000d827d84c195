"""CBIS-DDSM release (as downloaded from TCIA) -> patch arrays in the study's layout.

Input: a folder holding the four case-description CSVs (``mass_case_description_train_set.csv``,
``mass_case_description_test_set.csv``, ``calc_case_description_train_set.csv``,
``calc_case_description_test_set.csv``; anywhere below the root) and the DICOM tree. Column
names are matched loosely (``breast_density`` / ``breast density``, any case, spaces or
underscores).

Files are resolved robustly, because the CSV paths of the release rarely match the tree on
disk (other UIDs, date / series-description folder names, ``1-1.dcm`` instead of
``000000.dcm``, trailing newlines): the exact path is used when it exists, and otherwise (and
in addition) every DICOM under the folder named by the path's first component (e.g.
``Mass-Training_P_00001_LEFT_CC_1``) is a candidate. The full mammogram is the largest
candidate of its folder (a "full mammogram" SeriesDescription wins); the ROI mask is the
candidate with exactly the mammogram's size and only two pixel values (the "cropped image"
DICOMs that sit beside the masks are smaller and grey, and are never taken for masks, whatever
the CSV's column says).

Per abnormality: window = bounding box of the mask (mask > 0); baseline = the adjacent
window of the same size (left, right, above or below, touching, no overlap, wholly inside,
>= 90 % tissue, largest tissue fraction, ties in that order) -- the same candidate logic as
mini-MIAS protocol v1 -- with tissue meaning a value above 20/255 of the image's nominal full
scale (16-bit: > 5140). Both are resized to 150 x 150 with ``cv2.INTER_NEAREST``; 16-bit values
are kept (8-bit sources are scaled x 257). Labels: mass benign 1, mass malignant 2,
calcification benign 3, malignant 4; BENIGN_WITHOUT_CALLBACK counts as benign. The official
split is kept: train CSVs -> ``train_*``, test CSVs -> ``public_test_*``. Missing files,
unreadable DICOMs and masks whose size differs from their mammogram are reported (skipped.csv,
stderr) and skipped, never fatal.
"""
from __future__ import annotations

import csv
import os
import re
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_core import DISCLAIMER, __version__
from mammo_core.datasets.contact_sheet import SheetEntry
from mammo_core.datasets.windows import choose_baseline, thumbnail
from mammo_core.datasets.writer import write_patch_set
from mammo_core.errors import DatasetError, MammoError
from mammo_core.io import read_image as _read_image
from mammo_core.labels import LABEL_TO_NAME
from mammo_core.protocol import (
    MIN_BASELINE_TISSUE,
    Box,
    cut_patch,
    full_scale,
    tissue_count,
    tissue_threshold,
    to_uint16,
)

CSV_FILES = {
    "mass_case_description_train_set.csv": ("mass", "train"),
    "calc_case_description_train_set.csv": ("calcification", "train"),
    "mass_case_description_test_set.csv": ("mass", "public_test"),
    "calc_case_description_test_set.csv": ("calcification", "public_test"),
}
REQUIRED = ("patient_id", "image_file_path", "roi_mask_file_path", "pathology")
METADATA_COLUMNS = (
    "index", "split", "pair", "patient", "image", "label", "class_name", "role",
    "abnormality_type", "pathology", "assessment", "subtlety", "breast_density", "side", "view",
    "abnormality_id", "top", "left", "height", "width", "window_tissue", "baseline_side",
    "mask", "source_csv", "csv_row",
)
SKIPPED_COLUMNS = ("source_csv", "csv_row", "patient", "side", "view", "abnormality_id",
                   "abnormality_type", "pathology", "reason", "failure")


def norm_column(name: str) -> str:
    """``"left or right breast"`` -> ``left_or_right_breast``; ``breast density`` ->
    ``breast_density``."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _clean_path(p: str) -> str:
    return p.strip().strip('"').replace("\\", "/").strip("/")


@dataclass(frozen=True)
class CbisCase:
    source_csv: str
    csv_row: int               # 1-based data row number
    split: str
    abnormality_type: str      # mass / calcification
    patient: str
    side: str
    view: str
    abnormality_id: str
    pathology: str
    assessment: str
    subtlety: str
    breast_density: str
    image_path: str
    mask_path: str
    crop_path: str

    @property
    def label(self) -> int | None:
        path = self.pathology.strip().upper()
        malignant = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}.get(path)
        if malignant is None:
            return None
        return (1 if self.abnormality_type == "mass" else 3) + malignant


def read_case_csv(path: Path, kind: str, split: str) -> list[CbisCase]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = {norm_column(c): c for c in (reader.fieldnames or [])}
            missing = [c for c in REQUIRED if c not in cols]
            if missing:
                raise DatasetError(f"missing column(s) {', '.join(missing)}", path)
            rows = list(reader)
    except OSError as err:
        raise DatasetError(f"cannot read: {err.strerror or err}", path) from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise DatasetError(f"not a readable CSV ({err})", path) from None

    def get(r: dict, key: str) -> str:
        return (r.get(cols[key]) or "").strip() if key in cols else ""

    cases = []
    for i, r in enumerate(rows, 1):
        atype = get(r, "abnormality_type").lower() or kind
        atype = "calcification" if atype.startswith("calc") else "mass" if atype.startswith("mass") else atype
        cases.append(CbisCase(
            path.name, i, split, atype, get(r, "patient_id"), get(r, "left_or_right_breast"),
            get(r, "image_view"), get(r, "abnormality_id"), get(r, "pathology"),
            get(r, "assessment"), get(r, "subtlety"), get(r, "breast_density"),
            _clean_path(get(r, "image_file_path")), _clean_path(get(r, "roi_mask_file_path")),
            _clean_path(get(r, "cropped_image_file_path"))))
    return cases


class DicomIndex:
    """Folders of the tree by (lower-case) name, and the DICOM files under each."""

    def __init__(self, root: Path):
        self.root = root
        self.by_name: dict[str, list[Path]] = {}
        for dirpath, dirnames, _ in os.walk(root):
            dirnames.sort()
            d = Path(dirpath)
            self.by_name.setdefault(d.name.lower(), []).append(d)
        self._under: dict[Path, list[Path]] = {}
        self._headers: dict[Path, tuple | None] = {}

    def dicoms_under(self, folder: Path) -> list[Path]:
        if folder not in self._under:
            self._under[folder] = sorted(
                Path(dp) / f for dp, _, fs in os.walk(folder) for f in fs
                if f.lower().endswith(".dcm"))
        return self._under[folder]

    def candidates(self, csv_path: str) -> list[Path]:
        """DICOM files that may be the file a CSV path means (exact path first)."""
        out: list[Path] = []
        if not csv_path:
            return out
        exact = self.root / csv_path
        if exact.is_file():
            out.append(exact)
        top = csv_path.split("/")[0].lower()
        for d in self.by_name.get(top, []):
            out.extend(f for f in self.dicoms_under(d) if f not in out)
        return out

    def header(self, path: Path) -> tuple | None:
        """(rows, columns, series description) from the DICOM header; None if unreadable."""
        if path not in self._headers:
            import pydicom

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
                self._headers[path] = (int(ds.Rows), int(ds.Columns),
                                       str(ds.get("SeriesDescription", "")).lower())
            except Exception:  # noqa: BLE001 - any broken header: not a candidate
                self._headers[path] = None
        return self._headers[path]


class Skipped(Exception):
    def __init__(self, reason: str, failure: bool):
        super().__init__(reason)
        self.reason, self.failure = reason, failure


def find_mammogram(index: DicomIndex, case: CbisCase) -> Path:
    cands = [(p, index.header(p)) for p in index.candidates(case.image_path)]
    readable = [(p, h) for p, h in cands if h is not None]
    if not cands:
        raise Skipped(f"full mammogram not found ({case.image_path})", True)
    if not readable:
        raise Skipped(f"full mammogram DICOM unreadable ({cands[0][0]})", True)
    named = [c for c in readable if "full mammogram" in c[1][2]]
    pool = named or readable
    return max(pool, key=lambda c: c[1][0] * c[1][1])[0]


def _binary(m: np.ndarray) -> bool:
    """At most two values, 0 and one other (a mask); cheaper than np.unique on big images."""
    top = m.max() if m.size else 0
    return not np.any((m != 0) & (m != top))


def find_mask(index: DicomIndex, case: CbisCase, shape: tuple[int, int],
              read_image: Callable) -> tuple[Path, np.ndarray]:
    """The binary DICOM of the mammogram's size among the files of the case's ROI folder(s)."""
    cands: list[Path] = []
    for p in index.candidates(case.mask_path) + index.candidates(case.crop_path):
        if p not in cands:
            cands.append(p)
    if not cands:
        raise Skipped(f"ROI mask not found ({case.mask_path})", True)
    unreadable: list[Path] = []
    other: list[tuple[Path, tuple]] = []
    # a "ROI mask" SeriesDescription is only a hint for the order; the content decides
    for p in sorted(cands, key=lambda q: "mask" not in (index.header(q) or (0, 0, ""))[2]):
        h = index.header(p)
        if h is None:
            unreadable.append(p)
        elif (h[0], h[1]) != tuple(shape):
            other.append((p, h))
        else:
            try:
                m = read_image(p)
            except MammoError:
                unreadable.append(p)
                continue
            if m.shape == tuple(shape) and _binary(m):
                return p, m
    for p, h in other:
        try:
            m = read_image(p)
        except MammoError:
            unreadable.append(p)
            continue
        if _binary(m):
            raise Skipped(f"ROI mask size {h[0]}x{h[1]} differs from its mammogram "
                          f"{shape[0]}x{shape[1]} ({p})", True)
    if unreadable:
        raise Skipped(f"ROI mask DICOM unreadable ({unreadable[0]})", True)
    raise Skipped(f"no binary ROI mask of the mammogram's size among {len(cands)} DICOM file(s) "
                  f"of {case.mask_path.split('/')[0]}", True)


def mask_box(mask: np.ndarray) -> Box | None:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return Box(int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))


def _as16(patch: np.ndarray) -> np.ndarray:
    return patch.astype(np.uint16) if patch.dtype == np.uint16 else to_uint16(patch, full_scale(patch))


@dataclass
class CbisBuildResult:
    out_dir: Path
    counts: dict
    pairs: dict
    skipped: list[dict]
    failures: list[str]
    seconds: float
    files: list[Path]


def find_case_csvs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in CSV_FILES:
        direct = root / name
        if direct.is_file():
            found[name] = direct
    if len(found) < len(CSV_FILES):
        for p in sorted(root.rglob("*.csv")):
            if p.name.lower() in CSV_FILES and p.name.lower() not in found:
                found[p.name.lower()] = p
    return found


def build_cbis(root: str | Path, out_dir: str | Path, progress: bool = True,
               read_image: Callable | None = None,
               min_baseline_tissue: float = MIN_BASELINE_TISSUE) -> CbisBuildResult:
    t0 = time.perf_counter()
    if read_image is None:
        read_image = _read_image
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("CBIS-DDSM root folder not found", root)
    csvs = find_case_csvs(root)
    if not csvs:
        raise DatasetError("none of the four CBIS-DDSM case-description CSVs found "
                           f"({', '.join(CSV_FILES)})", root)
    failures: list[str] = [f"{root / n}: case-description CSV not found" for n in CSV_FILES
                           if n not in csvs]
    skipped: list[dict] = []

    def skip_row(source_csv: str, csv_row, reason: str, failure: bool, case: CbisCase | None = None) -> None:
        c = case
        skipped.append({"source_csv": source_csv, "csv_row": csv_row,
                        "patient": c.patient if c else "", "side": c.side if c else "",
                        "view": c.view if c else "", "abnormality_id": c.abnormality_id if c else "",
                        "abnormality_type": c.abnormality_type if c else "",
                        "pathology": c.pathology if c else "", "reason": reason, "failure": int(failure)})

    for n in CSV_FILES:
        if n not in csvs:
            skip_row(n, "", "case-description CSV not found", True)
    cases: list[CbisCase] = []
    seen: dict[tuple, str] = {}
    for name, path in csvs.items():
        kind, split = CSV_FILES[name]
        try:
            got = read_case_csv(path, kind, split)
        except DatasetError as err:  # the whole CSV: listed in skipped.csv and on stderr
            failures.append(str(err))
            skip_row(name, "", f"CSV not used: {err.problem}", True)
            continue
        for case in got:
            key = (case.split, case.patient, case.side, case.view, case.abnormality_id,
                   case.abnormality_type, case.image_path)
            if not case.patient or not case.image_path:
                why = "row lacks patient_id or image_file_path"
            elif key in seen:
                why = f"duplicate of {seen[key]} (same patient, side, view, abnormality)"
            else:
                seen[key] = f"{case.source_csv} row {case.csv_row}"
                cases.append(case)
                continue
            skip_row(case.source_csv, case.csv_row, why, False, case)
    index = DicomIndex(root)
    results: dict[str, list[tuple]] = {"train": [], "public_test": []}
    thumbs: dict[Path, tuple[np.ndarray, float]] = {}
    cached: tuple[Path, np.ndarray] | None = None
    from tqdm import tqdm

    for case in tqdm(cases, desc="CBIS-DDSM abnormalities", unit="abn", disable=not progress,
                     file=sys.stderr):
        try:
            if case.label is None:
                raise Skipped(f"unknown pathology {case.pathology!r} or type {case.abnormality_type!r}",
                              False)
            mpath = find_mammogram(index, case)
            if cached is None or cached[0] != mpath:
                try:
                    cached = (mpath, read_image(mpath))
                except MammoError as err:
                    raise Skipped(f"unreadable mammogram: {err}", True) from None
            image = cached[1]
            if image.ndim != 2 or image.dtype.kind not in "ui":
                raise Skipped(f"mammogram is not a 2-D integer image ({mpath})", True)
            kpath, mask = find_mask(index, case, image.shape, read_image)
            box = mask_box(mask > 0)
            if box is None:
                raise Skipped(f"ROI mask is empty ({kpath})", True)
            thr = tissue_threshold(image)
            choice = choose_baseline(image, box, thr, min_baseline_tissue)
            if choice.box is None:
                raise Skipped("no baseline window: no adjacent window inside the image with "
                              f">= {100 * min_baseline_tissue:.0f}% tissue", False)
            if mpath not in thumbs:
                thumbs[mpath] = thumbnail(image)
            results[case.split].append((
                case, mpath, kpath, box, choice, tissue_count(image, box, thr) / box.area,
                _as16(cut_patch(image, choice.box)), _as16(cut_patch(image, box))))
        except Skipped as s:
            skipped.append({"source_csv": case.source_csv, "csv_row": case.csv_row,
                            "patient": case.patient, "side": case.side, "view": case.view,
                            "abnormality_id": case.abnormality_id,
                            "abnormality_type": case.abnormality_type, "pathology": case.pathology,
                            "reason": s.reason, "failure": int(s.failure)})
            if s.failure:
                failures.append(f"{case.source_csv} row {case.csv_row} ({case.patient} {case.side} "
                                f"{case.view} #{case.abnormality_id}): {s.reason}")
    if not any(results.values()):  # nothing is written: the reasons go into the message itself
        reasons = Counter(re.sub(r"\d+", "N", str(r["reason"]))[:100] for r in skipped)
        top = "; ".join(f"{n} x {why}" for why, n in reasons.most_common(4)) or "no case rows"
        raise DatasetError(f"no abnormality could be cut ({top})", root)

    arrays, rows = {}, []
    sheets: dict[int, list[SheetEntry]] = {lab: [] for lab in (1, 2, 3, 4)}
    for split, res in results.items():
        imgs = np.zeros((2 * len(res), 150, 150), np.uint16)
        labels = np.zeros(2 * len(res), np.int64)
        for i, (case, mpath, kpath, box, choice, ltissue, bpatch, lpatch) in enumerate(res):
            imgs[2 * i], imgs[2 * i + 1], labels[2 * i + 1] = bpatch, lpatch, case.label
            common = {"split": split, "pair": i, "patient": case.patient,
                      "image": mpath.relative_to(root).as_posix(),
                      "abnormality_type": case.abnormality_type, "pathology": case.pathology,
                      "assessment": case.assessment, "subtlety": case.subtlety,
                      "breast_density": case.breast_density, "side": case.side, "view": case.view,
                      "abnormality_id": case.abnormality_id, "baseline_side": choice.side,
                      "mask": kpath.relative_to(root).as_posix(), "source_csv": case.source_csv,
                      "csv_row": case.csv_row}
            for role, lab, b, frac in (("baseline", 0, choice.box, choice.tissue_fraction),
                                       ("abnormality", case.label, box, ltissue)):
                rows.append({**common, "index": 2 * i + (lab != 0), "label": lab,
                             "class_name": LABEL_TO_NAME[lab], "role": role, "top": b.top,
                             "left": b.left, "height": b.height, "width": b.width,
                             "window_tissue": f"{frac:.4f}"})
            sheets[case.label].append(SheetEntry(
                *thumbs[mpath], box, choice.box, bpatch, lpatch,
                f"{split} {case.patient} {case.side} {case.view} #{case.abnormality_id} "
                f"{case.pathology} base={choice.side}"))
        arrays[split] = (imgs, labels)
    counts = {s: {LABEL_TO_NAME[c]: int(np.sum(arrays[s][1] == c)) for c in range(5)} for s in arrays}
    n_pairs = {s: int(arrays[s][1].size // 2) for s in arrays}
    info = {"source": "CBIS-DDSM (TCIA release)", "root": str(root),
            "csv_files": {n: str(p) for n, p in csvs.items()},
            "protocol": "ROI-mask bounding box + adjacent baseline (>= "
                        f"{100 * min_baseline_tissue:.0f}% tissue), 150x150 INTER_NEAREST, 16-bit kept",
            "split": "official CBIS-DDSM train/test", "counts": counts, "pairs": n_pairs,
            "skipped": len(skipped), "failures": failures, "mammo_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "notice": DISCLAIMER}

    sheet_files = {f"contact_sheet_{LABEL_TO_NAME[lab]}.png": (f"CBIS-DDSM {LABEL_TO_NAME[lab]}", e)
                   for lab, e in sheets.items() if e}
    files = write_patch_set(out_dir, arrays, rows, METADATA_COLUMNS, skipped, SKIPPED_COLUMNS,
                            sheet_files, info)
    return CbisBuildResult(Path(out_dir), counts, n_pairs, skipped, failures,
                           time.perf_counter() - t0, files)


def skip_summary(skipped: list[dict]) -> Counter:
    """Skip reasons with file names folded away (for a summary)."""
    return Counter(re.sub(r" \(.*\)$", "", re.sub(r" \d+x\d+", "", s["reason"])) for s in skipped)
