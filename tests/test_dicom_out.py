"""DICOM output (mammo_core.dicom_out, `mammo scan/predict --dicom-out`): a TID 1500 SR whose
findings reference the source image's UIDs and regions, a presentation state and a marked
secondary capture; generated UIDs for non-DICOM sources; bad DICOM sources; failed writes."""
from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from bundle_factory import models_dir_with, synthetic_patches
from dicom_makers import write_mammo_dicom
from test_scan import BLOB, SIDE, synthetic_mammogram

from mammo_core import dicom_out
from mammo_core.cli import main
from mammo_core.dicom_out import (
    GSPS_SUFFIX,
    MARKS_SUFFIX,
    RESEARCH_TEXT,
    SOURCE_SUFFIX,
    SR_SUFFIX,
    Finding,
    resolve_ref,
    write_dicom_results,
)
from mammo_core.errors import MammoError
from mammo_core.labels import CLASS_NAMES
from mammo_core.mammogram import read_mammogram
from mammo_core.predictions import ModelRecord, Provenance

SPACING = 19.2 / SIDE  # mm: the default 19.2 mm window is SIDE pixels


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return models_dir_with(tmp_path_factory.mktemp("models"),
                           ["mass_calc", "benign_malignant", "baseline_mass_calc"])


def sr_groups(path: Path):
    """(source SOP Instance UID, frame numbers, polyline, measurements, evaluations) per group."""
    import highdicom as hd

    sr = hd.sr.srread(path)
    out = []
    for g in sr.content.get_planar_roi_measurement_groups():
        ref = g.roi.ContentSequence[0].ReferencedSOPSequence[0]
        out.append({
            "sop": ref.ReferencedSOPInstanceUID,
            "frames": [] if "ReferencedFrameNumber" not in ref else [
                int(x) for x in np.atleast_1d(ref.ReferencedFrameNumber)],
            "polyline": np.asarray(g.roi.value),
            "measurements": {m.name.meaning: float(m.value) for m in g.get_measurements()},
            "evaluations": [(q.name.value, q.value.value) for q in g.get_qualitative_evaluations()],
            "finding": g.finding_type.meaning,
        })
    return sr, out


def texts(path: Path) -> list[str]:
    """Every TEXT content item's value in an SR."""
    return [str(e.value) for e in pydicom.dcmread(path).iterall() if e.keyword == "TextValue"]


def dsrdump_ok(path: Path) -> None:
    """dcmtk's dsrdump reads the SR without an error (when dcmtk is installed)."""
    exe = shutil.which("dsrdump")
    if exe is None:
        return
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Imaging Measurement Report" in r.stdout and "SCOORD" in r.stdout


def box_of(polyline: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a closed rectangle (column, row)."""
    x0, y0 = polyline.min(axis=0)
    x1, y1 = polyline.max(axis=0)
    return int(y0), int(x0), int(y1 - y0), int(x1 - x0)


def test_scan_dicom_out_references_the_source_uid_and_each_candidates_region(models, tmp_path, capsys):
    src = write_mammo_dicom(tmp_path / "case.dcm", synthetic_mammogram(), spacing_mm=SPACING)
    header = pydicom.dcmread(src, stop_before_pixels=True)
    out, dout = tmp_path / "out", tmp_path / "dicom"
    rc = main(["scan", str(src), "-o", str(out), "--dicom-out", str(dout), "--models-dir", str(models),
               "--no-progress", "--top-k", "3"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "case_sr.dcm" in err and "GENERATED" not in err
    cands = json.loads((out / "case_candidates.json").read_text())["candidates"]
    sr, groups = sr_groups(dout / f"case{SR_SUFFIX}")
    assert sr.StudyInstanceUID == header.StudyInstanceUID and sr.PatientID == header.PatientID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
    assert RESEARCH_TEXT in sr.SeriesDescription
    assert len(groups) == len(cands) == 3
    for g, c in zip(groups, cands):
        assert g["sop"] == header.SOPInstanceUID
        b = c["box"]
        assert box_of(g["polyline"]) == (b["top"], b["left"], b["height"], b["width"])
        assert g["measurements"]["Probability of abnormality"] == pytest.approx(c["p_abnormal"], abs=1e-6)
        for cls, p in c["probabilities"].items():
            assert any(v == pytest.approx(p, abs=1e-6) for k, v in g["measurements"].items() if k.startswith(
                "Probability of")), cls
        assert ("CALL", dicom_out.class_code(c["call"]).value) in g["evaluations"]
    top = groups[0]["polyline"]
    assert top[:, 1].min() <= BLOB[0] < top[:, 1].max() and top[:, 0].min() <= BLOB[1] < top[:, 0].max()
    dsrdump_ok(dout / f"case{SR_SUFFIX}")
    # the research statement and the models' hashes travel in the SR's algorithm parameters
    params = texts(dout / f"case{SR_SUFFIX}")
    assert RESEARCH_TEXT in params and any("sha256" in p for p in params)
    assert any(p.startswith("engine ") and "precision" in p for p in params)  # what computed it
    gsps = pydicom.dcmread(dout / f"case{GSPS_SUFFIX}")
    ann = gsps.GraphicAnnotationSequence[0]
    assert ann.ReferencedImageSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
    assert len(ann.GraphicObjectSequence) == 3 and len(ann.TextObjectSequence) == 3
    marks = pydicom.dcmread(dout / f"case{MARKS_SUFFIX}")
    assert marks.StudyInstanceUID == header.StudyInstanceUID and marks.SamplesPerPixel == 3
    assert marks.BurnedInAnnotation == "YES"
    assert not (dout / f"case{SOURCE_SUFFIX}").exists()  # the source is in the PACS already


def test_png_source_gets_generated_uids_stated_as_such(models, tmp_path, capsys):
    img = tmp_path / "mdb_like.png"
    assert cv2.imwrite(str(img), (synthetic_mammogram() >> 8).astype(np.uint8))
    dout = tmp_path / "dicom"
    rc = main(["scan", str(img), "-o", str(tmp_path / "o"), "--dicom-out", str(dout), "--models-dir",
               str(models), "--pixel-spacing", str(SPACING), "--no-progress", "--top-k", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "GENERATED" in err
    source = pydicom.dcmread(dout / f"mdb_like{SOURCE_SUFFIX}")
    assert "GENERATED" in source.ImageComments and source.Rows == 900 and source.Columns == 780
    assert np.array_equal(source.pixel_array, cv2.imread(str(img), cv2.IMREAD_UNCHANGED))
    sr, groups = sr_groups(dout / f"mdb_like{SR_SUFFIX}")
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert {g["sop"] for g in groups} == {source.SOPInstanceUID}
    assert any("GENERATED" in t for t in texts(dout / f"mdb_like{SR_SUFFIX}"))
    dsrdump_ok(dout / f"mdb_like{SR_SUFFIX}")


def test_predict_dicom_out_references_each_patch_source(models, tmp_path, capsys):
    px, _ = synthetic_patches(2, seed=3)
    dcm = write_mammo_dicom(tmp_path / "p0.dcm", px[1])
    png = tmp_path / "p1.png"
    assert cv2.imwrite(str(png), px[0])
    frames = write_mammo_dicom(tmp_path / "frames.dcm", px)
    dout = tmp_path / "dicom"
    rc = main(["predict", str(dcm), str(png), str(frames), "--models-dir", str(models), "--no-progress",
               "-o", str(tmp_path / "r.json"), "--dicom-out", str(dout)])
    err = capsys.readouterr().err
    assert rc == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    header = pydicom.dcmread(dcm, stop_before_pixels=True)
    _, groups = sr_groups(dout / f"p0{SR_SUFFIX}")
    assert len(groups) == 1 and groups[0]["sop"] == header.SOPInstanceUID
    assert box_of(groups[0]["polyline"]) == (0, 0, 150, 150)
    pred = next(p for p in report["predictions"] if p["source"] == str(dcm)
                and p["model"] == report["ensemble"]["name"])
    ens = pred["probabilities"]
    assert groups[0]["measurements"]["Probability of abnormality"] == pytest.approx(1 - ens["baseline"], abs=1e-6)
    _, fgroups = sr_groups(dout / f"frames{SR_SUFFIX}")  # one SR per file, one group per frame
    fh = pydicom.dcmread(frames, stop_before_pixels=True)
    assert [g["sop"] for g in fgroups] == [fh.SOPInstanceUID] * 2
    assert [g["frames"] for g in fgroups] == [[1], [2]]
    src = pydicom.dcmread(dout / f"p1{SOURCE_SUFFIX}")  # the PNG: generated UIDs, written as a source
    _, pgroups = sr_groups(dout / f"p1{SR_SUFFIX}")
    assert pgroups[0]["sop"] == src.SOPInstanceUID and "GENERATED" in src.ImageComments
    for name in ("p0", "p1", "frames"):
        dsrdump_ok(dout / f"{name}{SR_SUFFIX}")


def _provenance() -> Provenance:
    return Provenance("0.1.0", RESEARCH_TEXT, "2026-01-01T00:00:00",
                      (ModelRecord("m", "1", "0" * 64, "five_class", CLASS_NAMES),))


def _finding(**kw) -> Finding:
    base = dict(rank=1, top=10, left=20, height=96, width=96, call="mass_malignant",
                probabilities={"baseline": 0.1, "mass_malignant": 0.9}, p_abnormal=0.9)
    base.update(kw)
    return Finding(**base)


def test_conformal_set_is_written_where_the_prediction_has_one(tmp_path):
    src = write_mammo_dicom(tmp_path / "a.dcm", synthetic_mammogram()[:300, :260])
    ref, header = resolve_ref(read_mammogram(src).source_ref, src)
    findings = [_finding(conformal_set=("mass_malignant", "mass_benign"), conformal_level=0.9,
                         warnings=("far from the training data's features",)),
                _finding(rank=2, top=100, call="calcification_benign", conformal_set=None)]
    write_dicom_results(tmp_path / "o", "a", ref, header, (300, 260), findings, _provenance(), what="test")
    _, groups = sr_groups(tmp_path / "o" / f"a{SR_SUFFIX}")
    sets = [[v for k, v in g["evaluations"] if k == "CONFORMAL_SET"] for g in groups]
    assert sets == [["MASS_MAL", "MASS_BEN"], []]
    assert [[k for k, _ in g["evaluations"] if k == "OOD_WARNING"] for g in groups] == [["OOD_WARNING"], []]
    assert [g["finding"] for g in groups] == ["Mammographic breast mass", "Radiographic calcification finding"]
    dsrdump_ok(tmp_path / "o" / f"a{SR_SUFFIX}")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_full_or_read_only_folder_one_line_and_nothing_half_written(tmp_path, monkeypatch, code):
    src = write_mammo_dicom(tmp_path / "a.dcm", synthetic_mammogram()[:300, :260])
    ref, header = resolve_ref(read_mammogram(src).source_ref, src)
    real = dicom_out.atomic_write_bytes
    calls = []

    def failing(path, data):  # the second object of the image fails, as a full disk would
        calls.append(path)
        if len(calls) == 2:
            raise OSError(code, "No space left on device" if code == errno.ENOSPC else "Read-only file system",
                          str(path))
        real(path, data)
    monkeypatch.setattr(dicom_out, "atomic_write_bytes", failing)
    out = tmp_path / "o"
    with pytest.raises(MammoError) as exc:
        write_dicom_results(out, "a", ref, header, (300, 260), [_finding()], _provenance(), what="test",
                            marked_rgb=np.zeros((30, 26, 3), np.uint8))
    msg = str(exc.value)
    assert "\n" not in msg and "a.dcm" in msg and "cannot write DICOM results" in msg
    assert sorted(p.name for p in out.iterdir()) == []  # the first file was removed again


def test_bad_dicom_sources_read_or_refused_in_one_line_each(models, tmp_path, capsys):
    small = synthetic_mammogram()
    files = {syn: write_mammo_dicom(tmp_path / f"{syn}.dcm", small, syntax=syn, spacing_mm=SPACING)
             for syn in ("big", "deflate", "implicit", "jpeg2000")}
    files["multiframe"] = write_mammo_dicom(tmp_path / "multiframe.dcm", np.stack([small, small]))
    files["nouid"] = write_mammo_dicom(tmp_path / "nouid.dcm", small, spacing_mm=SPACING,
                                       drop=("SOPInstanceUID", "SeriesInstanceUID"))
    dout = tmp_path / "dicom"
    rc = main(["scan", *map(str, files.values()), "-o", str(tmp_path / "o"), "--dicom-out", str(dout),
               "--models-dir", str(models), "--no-progress", "--top-k", "2"])
    err = capsys.readouterr().err
    assert rc == 3, err
    for bad in ("jpeg2000", "multiframe"):
        lines = [ln for ln in err.splitlines() if f"{bad}.dcm" in ln and "cannot scan" in ln]
        assert len(lines) == 1, err
    assert "Traceback" not in err
    for ok in ("big", "deflate", "implicit", "nouid"):
        assert (dout / f"{ok}{SR_SUFFIX}").exists(), err
    src = pydicom.dcmread(files["nouid"], stop_before_pixels=True)
    source = pydicom.dcmread(dout / f"nouid{SOURCE_SUFFIX}")
    assert source.StudyInstanceUID == src.StudyInstanceUID  # kept; the missing ones are generated
    assert source.PatientID == src.PatientID and "GENERATED" in source.ImageComments
    _, groups = sr_groups(dout / f"nouid{SR_SUFFIX}")
    assert {g["sop"] for g in groups} == {source.SOPInstanceUID}


def test_big_endian_dicom_reads_the_same_pixels(tmp_path):
    from mammo_core.io import read_image

    px = (np.random.default_rng(1).integers(0, 4096, (60, 50))).astype(np.uint16)
    little = write_mammo_dicom(tmp_path / "l.dcm", px, bits_stored=12)
    big = write_mammo_dicom(tmp_path / "b.dcm", px, bits_stored=12, syntax="big")
    assert np.array_equal(read_image(little), px)
    assert np.array_equal(read_image(big), px)


def test_dicom_out_folder_that_is_a_file_is_a_usage_error(models, tmp_path, capsys):
    img = tmp_path / "a.png"
    assert cv2.imwrite(str(img), synthetic_mammogram()[:300, :260])
    (tmp_path / "file").write_text("x")
    rc = main(["scan", str(img), "-o", str(tmp_path / "o"), "--dicom-out", str(tmp_path / "file"),
               "--models-dir", str(models), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--dicom-out" in err and len(err.strip().splitlines()) == 1
