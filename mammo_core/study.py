"""Studies: the mammograms of a folder (or of named files) grouped into studies and placed in
the screening hanging (right / left CC above right / left MLO).

:func:`open_studies` reads headers only (no pixel data) and groups:

* DICOM files by (PatientID, StudyInstanceUID); a file without a StudyInstanceUID by
  (PatientID, its folder). Two patients that share a StudyInstanceUID (a broken export, a
  test set) are **never merged**: they stay two studies, each with a note saying so.
* other images (PNG / PGM / TIFF / JPEG) by the patient their name gives: CBIS-DDSM
  ``..._P_00001_LEFT_CC`` -> ``P_00001``; mini-MIAS ``mdbNNN`` -> woman ``(N + 1) // 2`` (the
  data's pairing of a woman's two images); else by folder.

Views: laterality and view position from ``ImageLaterality`` / ``Laterality`` /
``ViewPosition``, else the file name (:func:`mammo_core.mammogram.orientation`, the rule
``read_mammogram`` uses). An image whose side or view is unknown, or a second image for a
position already taken, is kept in ``Study.unplaced`` (never dropped).

Bad files (unreadable, multi-frame, not an image) are :class:`~mammo_core.io.ReadFailure`
lines; DICOM objects without pixels (SR, presentation states: e.g. ``--dicom-out`` results in
the same folder) are listed in ``StudySet.skipped``. Research use only — not a medical device.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mammo_core.io import ReadFailure, SourceRef, file_kind
from mammo_core.io.dicom import dicom_source_ref
from mammo_core.mammogram import orientation
from mammo_core.safeio import shown

#: The screening hanging, in reading order: top row R CC, L CC; bottom row R MLO, L MLO.
HANGING = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
_CBIS_PATIENT = re.compile(r"(?:^|[_\-/])(P_\d{5})(?=$|[_\-/.])")
_MIAS = re.compile(r"^mdb(\d{3})$", re.IGNORECASE)


@dataclass(frozen=True)
class StudyImage:
    """One mammogram of a study (header facts only; read pixels with ``read_mammogram``)."""

    path: str
    ref: SourceRef
    patient_id: str | None
    laterality: str | None           # "L" / "R"
    view: str | None                 # "CC", "MLO", ...
    orientation_source: str          # "DICOM", "file name", "DICOM + file name" or ""

    @property
    def position(self) -> str:
        """``RCC``, ``LMLO``... ("?" for what is unknown)."""
        return f"{self.laterality or '?'}{self.view or '?'}"


@dataclass(frozen=True)
class Study:
    """The images of one patient's study. ``key`` names it (its StudyInstanceUID, or how it
    was grouped); ``grouped_by`` says how; ``notes`` say what was odd about it."""

    key: str
    patient_id: str | None
    study_uid: str | None
    grouped_by: str
    images: tuple[StudyImage, ...]
    notes: tuple[str, ...] = ()

    def at(self, laterality: str, view: str) -> StudyImage | None:
        """The first image (by path) at this position, None when the study has none."""
        for im in self.images:
            if im.laterality == laterality and im.view == view:
                return im
        return None

    def hanging(self) -> tuple[StudyImage | None, ...]:
        """R CC, L CC, R MLO, L MLO (:data:`HANGING`); None where the study has no such view."""
        return tuple(self.at(lat, view) for lat, view in HANGING)

    @property
    def unplaced(self) -> tuple[StudyImage, ...]:
        """Images not in the hanging: unknown side / view, other views, repeats of a position."""
        placed = {id(im) for im in self.hanging() if im is not None}
        return tuple(im for im in self.images if id(im) not in placed)

    def describe(self) -> str:
        views = ", ".join(im.position for im in self.images)
        who = f"patient {self.patient_id}" if self.patient_id else "patient unknown"
        return f"study {self.key} ({who}; {self.grouped_by}): {len(self.images)} image(s): {views}"


@dataclass(frozen=True)
class StudySet:
    """What :func:`open_studies` found: studies (ordered by patient, then key), the files
    that could not be used (one line each) and DICOM objects without pixels skipped."""

    studies: tuple[Study, ...]
    failures: tuple[ReadFailure, ...] = ()
    skipped: tuple[str, ...] = ()


def _candidates(paths: Iterable[str | Path], recursive: bool) -> tuple[list[Path], list[ReadFailure]]:
    files: list[Path] = []
    failures: list[ReadFailure] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found = sorted(p.rglob("*") if recursive else p.iterdir())
            files.extend(f for f in found if f.is_file() and not f.name.startswith(".")
                         and file_kind(f) in ("dicom", "cv2"))
        elif p.is_file():
            files.append(p)
        else:
            failures.append(ReadFailure(str(p), "no such file or folder"))
    return files, failures


def _dicom_image(path: Path) -> StudyImage | str:
    """The image's header facts, or why it is not a usable view ("" for a pixel-less object)."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds; one line per file
        return f"not a readable DICOM file ({type(exc).__name__})"
    if "Rows" not in ds or "Columns" not in ds:
        return ""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        return f"multi-frame DICOM of {frames} frames: a view is one 2-D image"
    header = {}
    for name in ("ImageLaterality", "Laterality", "ViewPosition", "PatientID"):
        try:
            value = ds.get(name)
        except Exception:  # noqa: BLE001 - a malformed element is left out
            continue
        if value not in (None, ""):
            header[name] = str(value)
    lat, view, src = orientation(header, path)
    return StudyImage(str(path), dicom_source_ref(ds, path), header.get("PatientID", "").strip() or None,
                      lat, view, src)


def _name_patient(path: Path) -> tuple[str | None, str]:
    """(patient, how) from a non-DICOM file's name: CBIS-DDSM ``P_00001``, mini-MIAS woman."""
    m = _CBIS_PATIENT.search("/".join(path.parts[-3:]))
    if m:
        return m.group(1), "CBIS-DDSM patient in the file name"
    m = _MIAS.match(path.stem)
    if m:
        return f"mini-MIAS woman {(int(m.group(1)) + 1) // 2}", "mini-MIAS image number (woman = (N + 1) // 2)"
    return None, "folder"


def open_studies(paths: Iterable[str | Path], *, recursive: bool = True) -> StudySet:
    """Group the mammograms of ``paths`` (folders and files) into studies (module doc)."""
    files, failures = _candidates([paths] if isinstance(paths, (str, Path)) else paths, recursive)
    groups: dict[tuple[str, str], list[StudyImage]] = {}
    how: dict[tuple[str, str], str] = {}
    skipped: list[str] = []
    for path in files:
        kind = file_kind(path)
        if kind == "dicom":
            got = _dicom_image(path)
            if isinstance(got, str):
                if got:
                    failures.append(ReadFailure(str(path), got))
                else:
                    skipped.append(f"{shown(path)}: DICOM object without pixels (SR, presentation state...)")
                continue
            if got.ref.study_uid:
                key, by = (got.patient_id or "", got.ref.study_uid), "StudyInstanceUID"
            else:
                key, by = (got.patient_id or "", f"folder {path.parent}"), "folder (no StudyInstanceUID)"
        elif kind == "cv2":
            lat, view, src = orientation({}, path)
            patient, by = _name_patient(path)
            got = StudyImage(str(path), SourceRef.of_file(path), patient, lat, view, src)
            key = (patient or "", patient or f"folder {path.parent}")
        else:
            failures.append(ReadFailure(str(path), "not a mammogram file (DICOM, PNG, PGM, TIFF, JPEG)"))
            continue
        groups.setdefault(key, []).append(got)
        how[key] = by
    patients_of: dict[str, set[str]] = {}
    for patient, study_key in groups:
        patients_of.setdefault(study_key, set()).add(patient)
    studies = []
    for (patient, study_key), images in sorted(groups.items()):
        notes: tuple[str, ...] = ()
        if len(patients_of[study_key]) > 1:
            notes = (f"StudyInstanceUID {study_key} is shared by {len(patients_of[study_key])} patients; "
                     "their images are kept apart",)
        uid = study_key if how[(patient, study_key)] == "StudyInstanceUID" else None
        studies.append(Study(study_key, patient or None, uid, how[(patient, study_key)],
                             tuple(sorted(images, key=lambda im: im.path)), notes))
    return StudySet(tuple(studies), tuple(failures), tuple(skipped))


__all__ = ["HANGING", "Study", "StudyImage", "StudySet", "open_studies"]
