"""mammo_core.study: folders of mammograms grouped into studies, views placed in the hanging."""
from __future__ import annotations

import cv2
import numpy as np
from dicom_makers import write_mammo_dicom

from mammo_core.dicom_out import write_dicom_results
from mammo_core.study import HANGING, open_studies

PX = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 7) % 4096


def test_four_view_dicom_study_is_one_study_in_the_hanging(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.1"
    for lat in "RL":
        for view in ("CC", "MLO"):
            write_mammo_dicom(tmp_path / f"img_{lat}{view}.dcm", PX, patient="A", study_uid=uid,
                              laterality=lat, view=view)
    s = open_studies(tmp_path)
    assert len(s.studies) == 1 and s.failures == ()
    st = s.studies[0]
    assert st.study_uid == uid and st.patient_id == "A" and st.grouped_by == "StudyInstanceUID"
    assert [im.position for im in st.hanging()] == ["RCC", "LCC", "RMLO", "LMLO"]
    assert [(im.laterality, im.view) for im in st.hanging()] == list(HANGING)
    assert st.unplaced == ()
    assert all(im.ref.sop_instance_uid for im in st.images)


def test_a_folder_mixing_patients_is_grouped_never_merged(tmp_path):
    shared = "1.2.826.0.1.3680043.8.498.2"  # the same StudyInstanceUID on two patients' files
    write_mammo_dicom(tmp_path / "a_lcc.dcm", PX, patient="A", study_uid=shared, laterality="L", view="CC")
    write_mammo_dicom(tmp_path / "b_lcc.dcm", PX, patient="B", study_uid=shared, laterality="L", view="CC")
    write_mammo_dicom(tmp_path / "b_rcc.dcm", PX, patient="B", study_uid="1.2.3.4", laterality="R", view="CC")
    s = open_studies(tmp_path)
    by = {(st.patient_id, st.key): st for st in s.studies}
    assert set(by) == {("A", shared), ("B", shared), ("B", "1.2.3.4")}
    assert [im.path.endswith("a_lcc.dcm") for im in by[("A", shared)].images] == [True]
    assert all("kept apart" in st.notes[0] for k, st in by.items() if k[1] == shared)
    assert by[("B", "1.2.3.4")].notes == ()


def test_file_names_give_views_and_patients(tmp_path):
    for name in ("Calc-Test_P_00038_LEFT_CC", "Calc-Test_P_00038_LEFT_MLO", "Mass-Training_P_00001_RIGHT_CC",
                 "mdb001", "mdb002", "mdb003"):
        assert cv2.imwrite(str(tmp_path / f"{name}.png"), (PX >> 4).astype(np.uint8))
    s = open_studies(tmp_path)
    keys = [st.key for st in s.studies]
    assert keys == ["P_00001", "P_00038", "mini-MIAS woman 1", "mini-MIAS woman 2"]
    p38 = s.studies[1]
    assert [im and im.position for im in p38.hanging()] == [None, "LCC", None, "LMLO"]
    assert all(im.ref.generated_uids is False and im.ref.study_uid is None for im in p38.images)
    mias = s.studies[2]
    assert len(mias.images) == 2 and mias.hanging() == (None,) * 4 and len(mias.unplaced) == 2


def test_bad_files_are_one_line_each_and_results_are_skipped(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.3"
    good = write_mammo_dicom(tmp_path / "rcc.dcm", PX, patient="A", study_uid=uid, laterality="R", view="CC")
    write_mammo_dicom(tmp_path / "frames.dcm", np.stack([PX, PX]), patient="A", study_uid=uid)
    (tmp_path / "broken.dcm").write_bytes(b"DICM but not really")
    write_mammo_dicom(tmp_path / "noview.dcm", PX, patient="A", study_uid=uid, laterality=None, view=None)
    from mammo_core.dicom_out import Finding, resolve_ref
    from mammo_core.mammogram import read_mammogram
    from mammo_core.predictions import Provenance

    ref, header = resolve_ref(read_mammogram(good).source_ref, good)
    write_dicom_results(tmp_path, "rcc", ref, header, PX.shape,
                        [Finding(1, 0, 0, 10, 10, "baseline", {"baseline": 1.0}, 0.0)],
                        Provenance("0", "x", "t"), what="test")
    s = open_studies(tmp_path)
    assert sorted(f.source.rsplit("/", 1)[1] for f in s.failures) == ["broken.dcm", "frames.dcm"]
    assert all("\n" not in str(f) for f in s.failures)
    assert len(s.skipped) == 2  # the SR and the presentation state written beside the images
    (st,) = s.studies
    assert st.hanging()[0].path == str(good) and [im.position for im in st.unplaced] == ["??"]
