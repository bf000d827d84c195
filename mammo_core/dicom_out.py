"""DICOM output of results: what a PACS viewer can show next to the source image.

For each scanned (``mammo scan``) or predicted (``mammo predict``) source image, written by
:func:`write_dicom_results`:

* ``<stem>_sr.dcm`` -- a **TID 1500 Measurement Report** (Comprehensive 3D SR, written by
  highdicom): one *Planar ROI measurements and qualitative evaluations* group per finding
  (scan candidate / predicted patch) with the region as an image region (SCOORD ``POLYLINE``,
  a closed rectangle in the source's pixel coordinates: column, row, origin at the top-left
  corner of the top-left pixel) that references the source image's SOP Class / SOP Instance
  UID (and frame), the finding type (mass, calcification or normal tissue, SNOMED CT / DCM
  codes), the model's call and, where the prediction carries one, its conformal set
  (private codes ``99MAMMO``), P(abnormal) and each class's probability (UCUM ``1``), the
  algorithm (name, version, and as parameters every model's name / version / sha256 and the
  research-use statement). The SR's series description says "research use only".
* ``<stem>_gsps.dcm`` -- a **Grayscale Softcopy Presentation State** referencing the source
  image, with one graphic annotation layer: each finding's rectangle and its rank, call and P.
* ``<stem>_marks.dcm`` -- a **Secondary Capture** (RGB) of the marked image (the same picture
  as ``mammo scan``'s ``_map.png``): for viewers without SR or presentation-state support.
* ``<stem>_source.dcm`` -- only when the source has no DICOM identity (PNG / PGM / TIFF /
  ``.npy``, or a DICOM file missing its Study / Series / SOP Instance UID): the source pixels
  as a Secondary Capture carrying the **generated** UIDs the other objects reference, so the
  references resolve once everything is sent to a node. Generated UIDs are stated as such:
  in the SR's algorithm parameters, the image comments of every object, and the CLI's output.

Every file is written atomically (``mammo_core.atomic``) and the objects of one image are
all-or-nothing: when one cannot be written (read-only or full folder) the ones already written
for that image are removed and one line names the file.

Identifiers: the readers' :class:`mammo_core.io.SourceRef` (``Mammogram.source_ref``,
``Patch.source_ref``), completed by :func:`resolve_ref`.
Research use only — not a medical device.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mammo_core import DISCLAIMER, __version__
from mammo_core.atomic import atomic_write_bytes
from mammo_core.errors import MammoError
from mammo_core.io import SourceRef
from mammo_core.predictions import Provenance
from mammo_core.safeio import shown
from mammo_core.scan import map_overlay

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

    from mammo_core.io import Patch
    from mammo_core.mammogram import Mammogram
    from mammo_core.predictions import PatchPrediction
    from mammo_core.scan import ScanResult

#: The research-use statement in DICOM strings (ASCII: LO / ST value representations).
RESEARCH_TEXT = DISCLAIMER.replace("\u2014", "-")
#: Private coding scheme of this software's concepts (DICOM PS3.16: designators "99...").
SCHEME = "99MAMMO"
MANUFACTURER = "mammo-patches"
#: Longest side (px) of the marked secondary capture.
MARKS_LONGEST = 2048
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"          # Secondary Capture Image Storage
SR_SUFFIX, GSPS_SUFFIX, MARKS_SUFFIX, SOURCE_SUFFIX = "_sr.dcm", "_gsps.dcm", "_marks.dcm", "_source.dcm"
_READABLE = {
    "baseline": "Normal tissue (baseline)", "mass": "Mass", "calcification": "Calcification",
    "benign": "Benign", "malignant": "Malignant", "mass_benign": "Mass, benign",
    "mass_malignant": "Mass, malignant", "calcification_benign": "Calcification, benign",
    "calcification_malignant": "Calcification, malignant", "abnormal": "Abnormal",
}
#: Code values (SH: at most 16 characters) of the classes' private codes.
_CODE_VALUES = {
    "baseline": "BASELINE", "mass": "MASS", "calcification": "CALC", "benign": "BENIGN",
    "malignant": "MALIGNANT", "mass_benign": "MASS_BEN", "mass_malignant": "MASS_MAL",
    "calcification_benign": "CALC_BEN", "calcification_malignant": "CALC_MAL", "abnormal": "ABNORMAL",
}


def _code_value(name: str) -> str:
    return _CODE_VALUES.get(name, name.upper()[:16])


@dataclass(frozen=True)
class Finding:
    """One region to report: a scan candidate or a predicted patch. Box in source pixels."""

    rank: int
    top: int
    left: int
    height: int
    width: int
    call: str
    probabilities: Mapping[str, float]
    p_abnormal: float | None = None
    conformal_set: tuple[str, ...] | None = None
    conformal_level: float | None = None
    frame: int | None = None           # 1-based frame of a multi-frame source
    warnings: tuple[str, ...] = ()     # out-of-distribution warnings (words)


@dataclass(frozen=True)
class DicomOutput:
    """What :func:`write_dicom_results` wrote for one source image."""

    source: str
    files: tuple[Path, ...]
    ref: SourceRef
    sr_uid: str

    def describe(self) -> str:
        gen = " (source UIDs GENERATED: the source has no DICOM identity)" if self.ref.generated_uids else ""
        return (f"{shown(self.source)}: DICOM SR + marks -> {', '.join(shown(p.name) for p in self.files)}"
                f"{gen}")


# --------------------------------------------------------------------------- identifiers
def _dicom_header(path: Path) -> Dataset | None:
    """The source's DICOM header (no pixels), or None when it is not a DICOM file."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - not DICOM (PNG, PGM, npy...): its UIDs are generated
        return None


def resolve_ref(ref: SourceRef | None, path: str | Path) -> tuple[SourceRef, Dataset | None]:
    """The DICOM identity of a source image (the reader's ``SourceRef``: ``Mammogram.source_ref``,
    ``Patch.source_ref``) made complete, and its DICOM header (None for other files): a ref
    with all four UIDs is kept; one without them (PNG / PGM / TIFF / ``.npy``, or a DICOM file
    missing any) gets generated Series / SOP Instance UIDs (its own StudyInstanceUID kept
    when it has one), the Secondary Capture SOP class (the source is re-written as one) and
    ``generated_uids``."""
    from pydicom.uid import generate_uid

    ref = ref if ref is not None else SourceRef.of_file(path)
    uids = (ref.study_uid, ref.series_uid, ref.sop_instance_uid, ref.sop_class_uid)
    header = _dicom_header(Path(ref.path)) if any(uids) else None
    if all(uids):
        return ref, header
    return replace(ref, study_uid=ref.study_uid or generate_uid(), series_uid=generate_uid(),
                   sop_instance_uid=generate_uid(), sop_class_uid=SC_STORAGE, generated_uids=True), header


# --------------------------------------------------------------------------- findings
def conformal_of(obj: Any) -> tuple[tuple[str, ...] | None, float | None]:
    """The conformal set and level a prediction or candidate carries (``conformal``,
    ``level``), (None, None) when it carries none (no fitted set, or made before sets)."""
    cset = getattr(obj, "conformal", None)
    level = getattr(obj, "level", None)
    if cset is None:
        return None, None
    return tuple(str(c) for c in cset), (None if level is None else float(level))


def findings_from_scan(res: ScanResult) -> list[Finding]:
    """One finding per candidate, best first."""
    out = []
    for k, c in enumerate(res.candidates, 1):
        cset, level = conformal_of(c)
        out.append(Finding(k, c.box.top, c.box.left, c.box.height, c.box.width, c.call,
                           dict(c.probabilities), c.p_abnormal, cset, level,
                           warnings=tuple(getattr(c, "warnings", ()))))
    return out


def finding_from_prediction(rank: int, pred: PatchPrediction, shape: tuple[int, int],
                            ref: SourceRef) -> Finding:
    """The finding of one predicted patch: its window in the source when known, else the whole
    image; the ensemble's output when loaded, else the first model's."""
    out = pred.ensemble if pred.ensemble is not None else next(iter(pred.per_model.values()))
    top, left, h, w = (0, 0, int(shape[0]), int(shape[1])) if ref.window is None else (
        ref.window[0], ref.window[1], ref.window[2], ref.window[2])
    pa = None if "baseline" not in out.probabilities else 1.0 - float(out.probabilities["baseline"])
    cset, level = conformal_of(pred)
    return Finding(rank, top, left, h, w, out.predicted, dict(out.probabilities), pa, cset, level,
                   ref.frame, tuple(getattr(pred, "warnings", ())))


# --------------------------------------------------------------------------- codes
def _code(value: str, meaning: str, scheme: str = SCHEME):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value[:16], scheme_designator=scheme, meaning=meaning[:64])


def class_code(name: str):
    """Private code of one of the models' classes (``99MAMMO``)."""
    return _code(_code_value(name), _READABLE.get(name, name))


def finding_type(call: str):
    """Standard code of what a class names: SNOMED CT mammographic breast mass / radiographic
    calcification finding, DCM normal breast tissue; other calls: morphologically abnormal
    structure."""
    if call == "baseline":
        return _code("111287", "Normal breast tissue", "DCM")
    if call.startswith("mass"):
        return _code("129788004", "Mammographic breast mass", "SCT")
    if call.startswith("calcification"):
        return _code("129748009", "Radiographic calcification finding", "SCT")
    return _code("49755003", "Morphologically abnormal structure", "SCT")


# --------------------------------------------------------------------------- datasets
def _strip_pixels(ds: Dataset) -> Dataset:
    """A new dataset with ``ds``'s elements but its pixel data (``ds`` is left as is)."""
    from pydicom import Dataset as _Dataset

    out = _Dataset()
    for elem in ds:
        if elem.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            out.add(elem)
    return out


def _source_dataset(ref: SourceRef, header: Dataset | None, pixels: np.ndarray, bits: int | None,
                    what: str) -> Dataset:
    """The source as a Secondary Capture with ``ref``'s generated UIDs (pixels as read)."""
    import highdicom as hd

    arr = np.ascontiguousarray(pixels)
    if arr.dtype == np.uint8:
        balloc = 8
    else:
        arr = arr.astype(np.uint16)
        balloc = 16
    keep = {}
    if header is not None:
        for key in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                    "StudyID", "StudyDate", "StudyTime"):
            value = header.get(key)
            if value not in (None, ""):
                keep[key] = value
    sc = hd.sc.SCImage(
        pixel_array=arr, photometric_interpretation="MONOCHROME2", bits_allocated=balloc,
        coordinate_system="PATIENT", patient_orientation=("A", "F"), study_instance_uid=ref.study_uid,
        series_instance_uid=ref.series_uid, series_number=1, sop_instance_uid=ref.sop_instance_uid,
        instance_number=1, manufacturer=MANUFACTURER,
        patient_id=str(keep.get("PatientID", "")) or None, patient_name=keep.get("PatientName"),
        patient_birth_date=None, patient_sex=None, accession_number=keep.get("AccessionNumber"),
        study_id=keep.get("StudyID"), study_date=keep.get("StudyDate"), study_time=keep.get("StudyTime"))
    _orientation(sc, header)
    if bits is not None and 1 <= bits <= balloc and bits != balloc:
        sc.BitsStored, sc.HighBit = bits, bits - 1
    sc.SeriesDescription = f"{what} source (generated UIDs)"[:64]
    sc.ImageComments = (f"Source {Path(ref.path).name[:200]} has no DICOM identity: its Study, "
                        f"Series and SOP Instance UIDs were GENERATED by {MANUFACTURER}. {RESEARCH_TEXT}.")
    sc.DerivationDescription = "pixels as read from a non-DICOM file"
    return sc


def _orientation(sc: Dataset, header: Dataset | None) -> None:
    """PatientOrientation (type 2): the source's when it states one, else empty (unknown;
    highdicom needs a value to build the object, none is claimed)."""
    value = None if header is None else header.get("PatientOrientation")
    sc.PatientOrientation = list(value) if value is not None and len(value) == 2 else ""


def _evidence(ref: SourceRef, header: Dataset | None, shape: tuple[int, int]) -> Dataset:
    """A header-only dataset naming the source the objects reference (its own header, with
    Rows / Columns; generated UIDs filled in when ``ref`` has them)."""
    from pydicom import Dataset as _Dataset

    ds = _strip_pixels(header) if header is not None else _Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.study_uid, ref.series_uid
    ds.SOPInstanceUID, ds.SOPClassUID = ref.sop_instance_uid, ref.sop_class_uid
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    for key in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID",
                "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName"):
        if key not in ds:
            setattr(ds, key, "")
    if "Modality" not in ds:
        ds.Modality = "OT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if "BitsAllocated" not in ds:
        ds.BitsAllocated = 16
    return ds


def _algorithm(provenance: Provenance, ref: SourceRef, what: str, extra: Sequence[str]):
    import highdicom as hd

    params = [f"software {provenance.software_name} {provenance.software_version}", f"command {what}"]
    for m in provenance.models:
        params.append(f"model {m.name} version {m.version} sha256 {m.sha256} task {m.task}")
    if provenance.engine is not None:
        e = provenance.engine
        params.append(f"engine {e['name']} {e['version']} precision {e['precision']}")
    params.extend(extra)
    if ref.generated_uids:
        params.append(f"source {Path(ref.path).name[:200]}: Study/Series/SOP Instance UIDs GENERATED "
                      "(the source has no DICOM identity)")
    params.append(RESEARCH_TEXT)
    name = provenance.ensemble.name if provenance.ensemble is not None else (
        provenance.models[0].name if provenance.models else MANUFACTURER)
    return hd.sr.AlgorithmIdentification(name=str(name)[:64], version=provenance.software_version[:64],
                                         parameters=params)


def _rectangle(f: Finding) -> np.ndarray:
    """Closed polyline (column, row) around the finding's box, pixel-edge coordinates."""
    x0, y0, x1, y1 = float(f.left), float(f.top), float(f.left + f.width), float(f.top + f.height)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float)


def _sr(evidence: Dataset, ref: SourceRef, findings: Sequence[Finding], provenance: Provenance,
        what: str, extra: Sequence[str]) -> Dataset:
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algorithm = _algorithm(provenance, ref, what, extra)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=MANUFACTURER, manufacturer_name=MANUFACTURER,
            model_name=MANUFACTURER))
    groups: list[Any] = []
    for f in findings:
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=_rectangle(f),
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=ref.sop_class_uid,
                referenced_sop_instance_uid=ref.sop_instance_uid,
                referenced_frame_numbers=None if f.frame is None else [int(f.frame)]))
        measurements = []
        if f.p_abnormal is not None:
            measurements.append(hd.sr.Measurement(
                name=_code("P_ABNORMAL", "Probability of abnormality"), value=float(f.p_abnormal),
                unit=codes.UCUM.NoUnits))
        for cls, p in f.probabilities.items():
            measurements.append(hd.sr.Measurement(
                name=_code(f"P_{_code_value(cls)}"[:16], f"Probability of {_READABLE.get(cls, cls)}"),
                value=float(p), unit=codes.UCUM.NoUnits))
        evaluations = [hd.sr.QualitativeEvaluation(name=_code("CALL", "Model call"), value=class_code(f.call))]
        if f.conformal_set is not None:
            level = "" if f.conformal_level is None else f" ({100 * f.conformal_level:.0f} % coverage)"
            for cls in f.conformal_set:
                evaluations.append(hd.sr.QualitativeEvaluation(
                    name=_code("CONFORMAL_SET", f"Conformal prediction set member{level}"),
                    value=class_code(cls)))
        for k, warning in enumerate(f.warnings, 1):
            evaluations.append(hd.sr.QualitativeEvaluation(
                name=_code("OOD_WARNING", "Out-of-distribution warning"), value=_code(f"OOD{k}", warning)))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"finding {f.rank}"),
            referenced_region=region, finding_type=finding_type(f.call), algorithm_id=algorithm,
            measurements=measurements, qualitative_evaluations=evaluations))
    if not groups:  # nothing to report (no window scored, or top-k 0): say so for the image
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="no findings"),
            algorithm_id=algorithm,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=_code("CALL", "Model call"),
                value=_code("NO_REGION", "No region reported (no window scored)"))],
            source_images=[hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=ref.sop_class_uid,
                referenced_sop_instance_uid=ref.sop_instance_uid)]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=_code("71651007", "Mammography", "SCT"), imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[evidence], content=report[0], series_instance_uid=generate_uid(), series_number=901,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        is_complete=True)
    sr.SeriesDescription = f"{MANUFACTURER} CAD SR - {RESEARCH_TEXT}"[:64]
    return sr


def _label(f: Finding) -> str:
    p = f.p_abnormal if f.p_abnormal is not None else max(f.probabilities.values(), default=float("nan"))
    return f"{f.rank}: {f.call} P={p:.2f}"[:64]


def _gsps(evidence: Dataset, findings: Sequence[Finding]) -> Dataset:
    import highdicom as hd
    from pydicom.uid import generate_uid

    layer = hd.pr.GraphicLayer(layer_name="MAMMO_CAD", order=1, description=RESEARCH_TEXT[:64])
    by_frame: dict[int | None, list[Finding]] = {}
    for f in findings:
        by_frame.setdefault(f.frame, []).append(f)
    annotations = []
    for frame, group in by_frame.items():
        graphics = [hd.pr.GraphicObject(graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                                        graphic_data=_rectangle(f), units=hd.pr.AnnotationUnitsValues.PIXEL,
                                        tracking_id=f"finding {f.rank}", tracking_uid=generate_uid())
                    for f in group]
        texts = [hd.pr.TextObject(text_value=_label(f), units=hd.pr.AnnotationUnitsValues.PIXEL,
                                  anchor_point=(float(f.left), float(max(f.top, 1))),
                                  anchor_point_visible=False)
                 for f in group]
        annotations.append(hd.pr.GraphicAnnotation(
            referenced_images=[evidence], graphic_layer=layer,
            referenced_frame_number=None if frame is None else int(frame),
            graphic_objects=graphics, text_objects=texts))
    luts: dict[str, Any] = {}
    if int(evidence.get("NumberOfFrames", 1) or 1) > 1:
        # highdicom reads these from functional groups (enhanced IODs); a multi-frame image
        # without them gets them stated: its rescale and a window over its stored range
        top = float((1 << int(evidence.get("BitsStored", 16) or 16)) - 1)
        luts = {"modality_lut_transformation": hd.ModalityLUTTransformation(
                    rescale_intercept=float(evidence.get("RescaleIntercept", 0) or 0),
                    rescale_slope=float(evidence.get("RescaleSlope", 1) or 1), rescale_type="US"),
                "voi_lut_transformations": [hd.pr.SoftcopyVOILUTTransformation(
                    window_center=top / 2, window_width=top + 1)]}
    return hd.pr.GrayscaleSoftcopyPresentationState(
        **luts, referenced_images=[evidence], series_instance_uid=generate_uid(), series_number=902,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER, software_versions=__version__, device_serial_number="1",
        content_label="MAMMO_CAD", content_description=RESEARCH_TEXT[:64],
        graphic_annotations=annotations, graphic_layers=[layer])


def _marks(evidence: Dataset, rgb: np.ndarray) -> Dataset:
    import highdicom as hd
    from pydicom.uid import generate_uid

    sc = hd.sc.SCImage(
        pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", patient_orientation=("A", "F"),
        study_instance_uid=evidence.StudyInstanceUID,
        series_instance_uid=generate_uid(), series_number=903, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer=MANUFACTURER, patient_id=str(evidence.PatientID) or None,
        patient_name=evidence.PatientName or None, accession_number=evidence.AccessionNumber or None,
        study_id=evidence.StudyID or None, study_date=evidence.StudyDate or None,
        study_time=evidence.StudyTime or None)
    _orientation(sc, evidence)
    sc.SeriesDescription = f"CAD marks - {RESEARCH_TEXT}"[:64]
    sc.ImageComments = f"Marked copy of {evidence.SOPInstanceUID} by {MANUFACTURER}. {RESEARCH_TEXT}."
    sc.BurnedInAnnotation = "YES"
    return sc


def _encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- writing
def write_dicom_results(out_dir: str | Path, stem: str, ref: SourceRef, header: Dataset | None,
                        shape: tuple[int, int], findings: Sequence[Finding], provenance: Provenance, *,
                        what: str, source_pixels: np.ndarray | None = None, source_bits: int | None = None,
                        marked_rgb: np.ndarray | None = None, extra: Sequence[str] = ()) -> DicomOutput:
    """Write the SR, the presentation state, the marked secondary capture (when ``marked_rgb``
    is given) and, for a source with generated UIDs, the source itself (``source_pixels``) for
    one image. All objects are built before the first byte is written; the files of one image
    are all-or-nothing. Raises ``MammoError`` naming the file that could not be written."""
    out = Path(out_dir)
    evidence = _evidence(ref, header, shape)
    objects: list[tuple[str, Dataset]] = []
    if ref.generated_uids:
        if source_pixels is None:
            raise MammoError("its UIDs are generated and no pixels were given to write it as a DICOM "
                             "source", ref.path)
        src = _source_dataset(ref, header, source_pixels, source_bits, what)
        objects.append((SOURCE_SUFFIX, src))
        evidence = _evidence(ref, src, shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sr = _sr(evidence, ref, findings, provenance, what, extra)
            objects.append((SR_SUFFIX, sr))
            if findings:
                objects.append((GSPS_SUFFIX, _gsps(evidence, findings)))
            if marked_rgb is not None:
                objects.append((MARKS_SUFFIX, _marks(evidence, marked_rgb)))
            blobs = [(out / f"{stem}{suffix}", _encode(ds)) for suffix, ds in objects]
    except (ValueError, TypeError, AttributeError) as exc:
        raise MammoError(f"cannot build its DICOM results: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}", ref.path) from None
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, data in blobs:
            atomic_write_bytes(path, data)
            written.append(path)
    except OSError as exc:
        for p in written:  # all-or-nothing per image
            with contextlib.suppress(OSError):
                os.unlink(p)
        raise MammoError(f"cannot write DICOM results {shown(exc.filename or out)}: {exc.strerror or exc}",
                         ref.path) from None
    return DicomOutput(ref.path, tuple(written), ref, str(sr.SOPInstanceUID))


def scan_dicom_results(out_dir: str | Path, stem: str, mammo: Mammogram, res: ScanResult,
                       provenance: Provenance) -> DicomOutput:
    """The DICOM results of one scanned mammogram (``mammo scan --dicom-out``); the marks are
    the picture of ``mammo scan``'s ``_map.png`` (map and numbered candidates)."""
    marked_rgb = map_overlay(mammo.pixels, res.map, candidates=res.candidates, fs=mammo.full_scale,
                             longest=MARKS_LONGEST)
    ref, header = resolve_ref(mammo.source_ref, mammo.source)
    extra = [f"map members {res.members_text()}", f"window {res.window_px} px stride {res.stride_px} px",
             "region: protocol-v1 window (column, row; origin top-left corner of the image as stored)"]
    return write_dicom_results(out_dir, stem, ref, header, mammo.shape, findings_from_scan(res), provenance,
                               what="scan", source_pixels=mammo.pixels, source_bits=mammo.bits,
                               marked_rgb=marked_rgb, extra=extra)


def predict_dicom_results(out_dir: str | Path, patches: Sequence[Patch], preds: Sequence[PatchPrediction],
                          provenance: Provenance) -> tuple[list[DicomOutput], list[MammoError]]:
    """The DICOM results of predicted patches (``mammo predict --dicom-out``), one set per
    source file (the frames / rows of one file share its SR). A patch from a non-DICOM file is
    written as its own 150 x 150 source (generated UIDs) and its region is that whole image;
    from a DICOM file, the region is the whole source image (or frame) the patch was read from."""
    by_source: dict[str, list[tuple[Patch, PatchPrediction]]] = {}
    for patch, pred in zip(patches, preds):
        by_source.setdefault(patch.source, []).append((patch, pred))
    done, failed = [], []
    taken: set[str] = set()
    for source, items in by_source.items():
        first = items[0][0].source_ref
        base, header = resolve_ref(None if first is None else replace(first, frame=None), source)
        groups = [items] if not base.generated_uids else [[it] for it in items]
        for group in groups:
            patch0 = group[0][0]
            stem = free_stem(Path(source).stem if patch0.index is None or not base.generated_uids
                              else f"{Path(source).stem}_{patch0.index}", taken)
            try:
                ref = base if not base.generated_uids else resolve_ref(replace(base, study_uid=None), source)[0]
                # a generated source is the patch as the models saw it (150 x 150), whole
                hw = patch0.pixels.shape if ref.generated_uids else (patch0.original_shape or patch0.pixels.shape)
                shape = (int(hw[0]), int(hw[1]))
                findings = []
                for k, (patch, pred) in enumerate(group, 1):
                    frame = None if patch.index is None or ref.generated_uids else patch.index + 1
                    window = None if ref.generated_uids or patch.source_ref is None else patch.source_ref.window
                    findings.append(finding_from_prediction(k, pred, shape, replace(ref, frame=frame, window=window)))
                done.append(write_dicom_results(
                    out_dir, stem, ref, header, shape, findings, provenance, what="predict",
                    source_pixels=patch0.pixels if ref.generated_uids else None, source_bits=patch0.bits))
            except MammoError as err:
                failed.append(err)
    return done, failed


def free_stem(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``... when an earlier output of this run took it (the one
    rule for the DICOM results and ``mammo scan``'s output names)."""
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}_{k}"
    taken.add(name)
    return name


__all__ = ["GSPS_SUFFIX", "MARKS_SUFFIX", "RESEARCH_TEXT", "SOURCE_SUFFIX", "SR_SUFFIX", "DicomOutput",
           "Finding", "SourceRef", "class_code", "conformal_of", "finding_from_prediction", "finding_type",
           "findings_from_scan", "predict_dicom_results", "resolve_ref", "scan_dicom_results",
           "write_dicom_results"]
