"""`mammo send`: results on disk first, then C-STORE / STOW-RS to a real node on loopback
(Orthanc where installed, else pynetdicom's storage SCP); failures lose nothing."""
from __future__ import annotations

import json
import os
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_makers import write_mammo_dicom
from dicom_nodes import ORTHANC, dicom_node, free_port
from test_dicom_out import SPACING, box_of, dsrdump_ok, models  # noqa: F401 - models is a fixture
from test_scan import synthetic_mammogram

from mammo_core.cli import main
from mammo_core.dicom_out import GSPS_SUFFIX, MARKS_SUFFIX, SR_SUFFIX, Finding, resolve_ref, write_dicom_results
from mammo_core.labels import CLASS_NAMES
from mammo_core.mammogram import read_mammogram
from mammo_core.predictions import ModelRecord, Provenance

KINDS = [pytest.param("orthanc", marks=pytest.mark.skipif(ORTHANC is None, reason="Orthanc not installed")),
         "pynetdicom"]


@pytest.fixture(scope="module")
def scanned(models, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """A DICOM mammogram scanned with --dicom-out: (source header, candidates, results folder)."""
    tmp = tmp_path_factory.mktemp("scanned")
    src = write_mammo_dicom(tmp / "RCC.dcm", synthetic_mammogram(), laterality="R", view="CC",
                            spacing_mm=SPACING)
    dout = tmp / "dicom"
    rc = main(["scan", str(src), "-o", str(tmp / "o"), "--dicom-out", str(dout), "--models-dir", str(models),
               "--no-progress", "--top-k", "3"])
    assert rc == 0
    cands = json.loads((tmp / "o" / "RCC_candidates.json").read_text())["candidates"]
    return pydicom.dcmread(src, stop_before_pixels=True), cands, dout, src


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_a_real_node(scanned, tmp_path, capsys, kind):
    header, cands, dout, src = scanned
    with dicom_node(tmp_path / "node", kind) as node:
        rc = main(["send", str(src), str(dout), "--to", f"127.0.0.1:{node.port}", "--aet", node.aet,
                   "--timeout", "20"])
        err = capsys.readouterr().err
        assert rc == 0, err
        assert "sent 4 of 4" in err
        stored = {str(ds.SOPInstanceUID): ds for ds in node.stored()}
    assert header.SOPInstanceUID in stored  # the source went too: the references resolve there
    by_class = {}
    for ds in stored.values():
        by_class.setdefault(str(ds.SOPClassUID), []).append(ds)
    srs = by_class["1.2.840.10008.5.1.4.1.1.88.34"]
    assert len(srs) == 1
    sr = hd.sr.Comprehensive3DSR.from_dataset(srs[0])
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(cands) == 3
    for g, c in zip(groups, cands):
        ref = g.roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == header.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == header.SOPClassUID
        b = c["box"]
        assert box_of(np.asarray(g.roi.value)) == (b["top"], b["left"], b["height"], b["width"])
        p = {m.name.meaning: float(m.value) for m in g.get_measurements()}
        assert p["Probability of abnormality"] == pytest.approx(c["p_abnormal"], abs=1e-6)
    assert sr.StudyInstanceUID == header.StudyInstanceUID
    gsps = by_class["1.2.840.10008.5.1.4.1.1.11.1"][0]
    assert gsps.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID \
        == header.SOPInstanceUID
    marks = by_class["1.2.840.10008.5.1.4.1.1.7"][0]
    assert marks.StudyInstanceUID == header.StudyInstanceUID
    if shutil.which("dsrdump"):
        back = tmp_path / "back_sr.dcm"
        srs[0].save_as(back, enforce_file_format=True)
        dsrdump_ok(back)


@pytest.mark.skipif(ORTHANC is None, reason="Orthanc not installed")
def test_stow_rs_to_orthanc_dicomweb(scanned, tmp_path, capsys):
    _, _, dout, _ = scanned
    with dicom_node(tmp_path / "node", "orthanc") as node:
        if node.dicomweb is None:
            pytest.skip("Orthanc's DICOMweb plugin (orthanc-dicomweb) is not installed")
        rc = main(["send", str(dout), "--dicomweb", node.dicomweb])
        err = capsys.readouterr().err
        assert rc == 0, err
        stored = node.stored()
    assert {str(ds.SOPInstanceUID) for ds in stored} == {
        str(pydicom.dcmread(dout / f"RCC{s}", stop_before_pixels=True).SOPInstanceUID)
        for s in (SR_SUFFIX, GSPS_SUFFIX, MARKS_SUFFIX)}


def _results(tmp_path):
    src = write_mammo_dicom(tmp_path / "a.dcm", synthetic_mammogram()[:300, :260])
    ref, header = resolve_ref(read_mammogram(src).source_ref, src)
    prov = Provenance("0.1.0", "x", "2026-01-01T00:00:00",
                      (ModelRecord("m", "1", "0" * 64, "five_class", CLASS_NAMES),))
    f = Finding(1, 10, 20, 96, 96, "mass_benign", {"baseline": 0.3, "mass_benign": 0.7}, 0.7)
    out = tmp_path / "results"
    write_dicom_results(out, "a", ref, header, (300, 260), [f], prov, what="test")
    return out


def test_closed_port_one_line_non_zero_files_stay(tmp_path, capsys):
    out = _results(tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    port = free_port()  # bound and closed again: nothing listens there
    rc = main(["send", str(out), "--to", f"127.0.0.1:{port}", "--aet", "PACS", "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "stay on disk" in lines[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_dicomweb_unreachable_one_line_non_zero(tmp_path, capsys):
    out = _results(tmp_path)
    rc = main(["send", str(out), "--dicomweb", f"http://127.0.0.1:{free_port()}/dicom-web", "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "stay on disk" in err, err
    assert len(os.listdir(out)) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_called_aet_is_refused_in_one_line(tmp_path, capsys, kind):
    out = _results(tmp_path)
    with dicom_node(tmp_path / "node", kind) as node:
        rc = main(["send", str(out), "--to", f"127.0.0.1:{node.port}", "--aet", "WRONG", "--timeout", "10"])
        stored = node.stored()
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "rejected" in err, err
    assert stored == [] and len(os.listdir(out)) == 2


@pytest.mark.parametrize("argv, words", [
    (["--to", "nohostport"], "HOST:PORT"), (["--to", "h:99999"], "HOST:PORT"),
    (["--dicomweb", "ftp://x"], "http"), (["--to", "h:1", "--aet", "A" * 17], "AE title"),
])
def test_bad_targets_are_usage_errors(tmp_path, capsys, argv, words):
    rc = main(["send", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1


def test_unreadable_file_is_one_line_and_the_rest_is_sent(tmp_path, capsys):
    out = _results(tmp_path)
    (out / "junk.dcm").write_bytes(b"not dicom at all")
    with dicom_node(tmp_path / "node", "pynetdicom") as node:
        rc = main(["send", str(out), "--to", f"127.0.0.1:{node.port}", "--aet", node.aet, "--timeout", "10"])
        stored = node.stored()
    err = capsys.readouterr().err
    assert rc == 3, err
    assert [ln for ln in err.splitlines() if "junk.dcm" in ln] and "sent 2 of 2" in err
    assert len(stored) == 2
