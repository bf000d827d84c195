"""The runtime protocol (issue 21 item 3) and the source identifiers a cut patch keeps (item 4):
one tissue level, one call rule (threshold and words from one constant) used by the ensemble
and the scan, hierarchy factors read from ``labels``, and ``SourceRef`` filled by the DICOM
reader, ``read_mammogram`` and the window cutter."""
from __future__ import annotations

import ast
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
from filemakers import write_cv2, write_dicom

from mammo_core import protocol
from mammo_core.ensemble import CALL_RULE, call_five_class, factor_estimates
from mammo_core.io import Patch, SourceRef, read_patches
from mammo_core.labels import CLASS_NAMES, FACTOR_LABELS, TASK_FACTORS, TASKS
from mammo_core.mammogram import read_mammogram

CORE = Path(__file__).resolve().parent.parent / "mammo_core"
APP = CORE.parent / "app"


def _code_files():
    return sorted([*CORE.rglob("*.py"), *APP.rglob("*.py")])


# --------------------------------------------------------------------------- the call
def test_call_rule_words_come_from_the_threshold():
    assert f"P(baseline) >= {protocol.CALL_BASELINE_AT * 100:g} %" in CALL_RULE
    assert CALL_RULE is protocol.CALL_RULE


def test_ensemble_call_at_the_threshold():
    at = protocol.CALL_BASELINE_AT
    below = np.nextafter(at, 0.0)
    p = np.array([[at, 1 - at, 0, 0, 0], [below, 0, 0, 1 - below, 0], [0.34, 0.2, 0.1, 0.16, 0.2]])
    assert [CLASS_NAMES[i] for i in call_five_class(p)] == ["baseline", "calcification_benign",
                                                           "mass_benign"]


def test_scan_calls_with_the_ensembles_rule():
    # the map alone: P(abnormal) = 0.5 is P(baseline) = 0.5, called baseline as the ensemble does
    for pa in (0.5, 0.49, 0.51, 0.0, 1.0):
        five = np.array([[1 - pa, pa, 0, 0, 0]])
        expect = "baseline" if call_five_class(five)[0] == 0 else "abnormal"
        assert protocol.call_of({"baseline": 1 - pa, "abnormal": pa}) == expect
    # a member without the ensemble: baseline first, then the most likely abnormal class
    assert protocol.call_of({"baseline": 0.4, "mass": 0.35, "calcification": 0.25}) == "mass"
    assert protocol.call_of({"mass": 0.3, "calcification": 0.7}) == "calcification"


def test_the_call_threshold_and_its_words_are_written_once():
    """No other module compares a probability with 0.5 to make a call or restates the rule."""
    scan_src = (CORE / "scan.py").read_text()
    assert ">= 0.5 else" not in scan_src and "max(probs, key=probs.get)" not in scan_src
    for f in _code_files():
        if f.name == "protocol.py":
            continue
        text = f.read_text()
        assert "P(baseline) >= 50" not in text and "P(baseline) >= 0.5" not in text, f


# --------------------------------------------------------------------------- tissue
def test_the_tissue_level_is_defined_once():
    """20 / 255 appears as code only in mammo_core/protocol.py (explain, scan, builders import it)."""
    hits = []
    for f in _code_files():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) \
                    and isinstance(node.left, ast.Constant) and node.left.value in (20, 20.0) \
                    and isinstance(node.right, ast.Constant) and node.right.value in (255, 255.0):
                hits.append(f.name)
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id in ("TISSUE_LEVEL", "TISSUE_LEVEL_8BIT")
                    for t in node.targets):
                hits.append(f.name)
    assert sorted(hits) == ["protocol.py", "protocol.py"]
    from mammo_core import explain

    assert explain.TISSUE_LEVEL == protocol.TISSUE_LEVEL == 20 / 255
    img = np.array([[20, 21]], np.uint8)
    assert protocol.tissue_threshold(img) == 20.0


# --------------------------------------------------------------------------- factors from labels
def test_hierarchy_has_no_task_chains():
    tree = ast.parse((CORE / "ensemble" / "hierarchy.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "task":
            assert not any(isinstance(c, ast.Constant) and isinstance(c.value, str)
                           for c in node.comparators), ast.unparse(node)


@pytest.mark.parametrize("task", list(TASK_FACTORS))
def test_factor_estimates_follow_the_labels_definitions(task):
    """A member sure of one class estimates each factor as FACTOR_LABELS defines it."""
    t = TASKS[task]
    for cls in range(t.n_classes):
        p = np.zeros((1, t.n_classes))
        p[0, cls] = 1.0
        labels = {lab for lab, c in t.remap.items() if c == cls}
        got = factor_estimates(task, p)
        assert set(got) == set(TASK_FACTORS[task])
        for f, v in got.items():
            domain, positive = FACTOR_LABELS[f]
            inside = labels if domain is None else labels & set(domain)
            if inside:  # the factor is defined on this class: 1 for its positive labels
                assert v[0] == float(inside <= set(positive)), (task, cls, f)
            else:       # undefined here: uninformative
                assert v[0] == 0.5, (task, cls, f)


# --------------------------------------------------------------------------- source identifiers
def test_dicom_patches_keep_their_uids_and_frame(tmp_path):
    import pydicom

    one = write_dicom(tmp_path / "one.dcm", np.full((150, 150), 100, np.uint16), bits_stored=12)
    multi = write_dicom(tmp_path / "multi.dcm", np.full((3, 150, 150), 7, np.uint16), bits_stored=12)
    png = write_cv2(tmp_path / "p.png", np.full((150, 150), 9, np.uint8))
    coll = read_patches([one, multi, png])
    assert not coll.errors
    by = {(Path(p.source).name, p.index): p for p in coll.patches}
    ds = pydicom.dcmread(one)
    ref = by[("one.dcm", None)].source_ref
    assert ref == SourceRef(str(one), None, None, str(ds.SOPInstanceUID), str(ds.SOPClassUID))
    assert [by[("multi.dcm", i)].source_ref.frame for i in range(3)] == [0, 1, 2]
    assert by[("p.png", None)].source_ref is None
    with pytest.raises(FrozenInstanceError):
        ref.frame = 2


def test_study_and_series_uids_and_json(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "m.dcm", np.full((400, 300), 50, np.uint16), bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.save_as(path)
    mammo = read_mammogram(path)
    assert (mammo.source_ref.study_uid, mammo.source_ref.series_uid) == ("1.2.3.4", "1.2.3.4.5")
    box = protocol.point_window(200, 150, 30, mammo.shape)
    patch = protocol.window_patch(mammo.pixels, box, mammo.source, mammo.source_ref, mammo.full_scale)
    assert isinstance(patch, Patch) and patch.pixels.shape == (150, 150)
    assert patch.source_ref.window == (box.top, box.left, box.height) == (152, 102, 96)
    assert patch.source_ref.study_uid == "1.2.3.4"
    j = patch.source_ref.to_json()
    assert j["window"] == [152, 102, 96] and j["series_uid"] == "1.2.3.4.5" and "frame" not in j


def test_png_mammogram_has_a_path_only_ref(tmp_path):
    path = write_cv2(tmp_path / "m.png", np.full((400, 300), 90, np.uint8))
    mammo = read_mammogram(path)
    assert mammo.source_ref == SourceRef(str(path))
    ref = protocol.window_ref(mammo.source, mammo.source_ref, protocol.Box(1, 2, 96, 96))
    assert ref.window == (1, 2, 96) and ref.sop_instance_uid is None and not ref.generated_uids


def test_source_ref_json_is_valid_utf8_on_one_line():
    import json
    import os

    bad = os.fsdecode(b"/in/bad\xff\xfe\nname.dcm")
    j = SourceRef(bad, study_uid="1.2\n3", window=(1, 2, 3)).to_json()
    text = json.dumps(j, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogates
    assert "\n" not in j["path"] and "\n" not in j["study_uid"] and j["window"] == [1, 2, 3]
