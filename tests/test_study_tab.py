"""The Study tab: a four-view study as a hanging (R/L CC above R/L MLO, mirrored so the chest
walls meet), each view with its own map and candidates; keys switch views, toggle the marks,
show one view alone and go to the next study."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from dicom_makers import write_mammo_dicom
from fake_session import FakeSession as BaseFakeSession
from PyQt6.QtCore import Qt

from app.controllers.study import StudyController
from app.service import ModelService
from app.views.study_tab import StudyTab
from mammo_core.dicom_out import SR_SUFFIX
from mammo_core.labels import CLASS_NAMES
from mammo_core.predictions import ModelRecord, Provenance
from mammo_core.protocol import Box

pytestmark = pytest.mark.gui
WAIT = 10_000


class FakeSession(BaseFakeSession):
    """The cards, a load and the provenance the study's exports write."""

    def provenance_record(self):
        return Provenance("0.1.0", "research use only", "2026-01-01T00:00:00",
                          (ModelRecord("m1", "1", "0" * 64, "five_class", CLASS_NAMES),))


@pytest.fixture()
def service(qtbot, tmp_path):
    s = ModelService(tmp_path / "models", session_factory=FakeSession)
    with qtbot.waitSignal(s.modelsLoaded, timeout=WAIT):
        s.start_models()
    yield s
    s.shutdown(10)


def breast(seed: int) -> np.ndarray:
    """A 16-bit half disc of tissue resting on the image's LEFT edge (as stored)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:240, 0:200]
    img = np.zeros((240, 200))
    m = (yy - 120) ** 2 + xx ** 2 < 110 ** 2
    img[m] = 0.4 + 0.05 * rng.standard_normal(int(m.sum()))
    return (np.clip(img, 0, 1) * 4095).astype(np.uint16)


def fake_scan(mammo, session, settings, progress, cancel):
    """Each view's own map: a constant map whose value is the image's mean, one candidate."""
    progress(1, 1)
    amap = np.full((4, 4), float(mammo.pixels.mean()), np.float32)
    cand = SimpleNamespace(box=Box(10, 20, 30, 30), x=35, y=25, p_abnormal=0.5, call="mass_benign",
                           probabilities={"baseline": 0.5, "mass_benign": 0.5})
    return SimpleNamespace(source=mammo.source, complete=True, candidates=[cand], map=amap, stride_px=60,
                           window_px=30, members_text=lambda: "m1 (TTA none)")


def test_a_four_view_study_opens_as_a_hanging_with_a_map_per_view(qtbot, service, tmp_path):
    for k, (lat, view) in enumerate([("L", "MLO"), ("R", "CC"), ("L", "CC"), ("R", "MLO")]):
        write_mammo_dicom(tmp_path / f"a_{k}.dcm", breast(k), patient="A", study_uid="1.2.3.1",
                          laterality=lat, view=view, bits_stored=12)
    write_mammo_dicom(tmp_path / "b_lcc.dcm", breast(9), patient="B", study_uid="1.2.3.2",
                      laterality="L", view="CC", bits_stored=12)
    ctrl = StudyController(service, scan=fake_scan)
    tab = StudyTab(ctrl)
    qtbot.addWidget(tab)
    tab.resize(900, 700)
    tab.show()
    ctrl.open_path(tmp_path)
    qtbot.waitUntil(lambda: all(c.mammogram is not None for c in ctrl.views), timeout=WAIT)
    names = [c.mammogram.name for c in ctrl.views]
    assert names == ["a_1.dcm", "a_2.dcm", "a_3.dcm", "a_0.dcm"]  # R CC, L CC, R MLO, L MLO
    assert [(c.mammogram.laterality, c.mammogram.view) for c in ctrl.views] == [
        ("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    # tissue on the left edge: the right breast's views are mirrored so the chest walls meet
    assert [cell.view.mirrored for cell in tab.cells] == [True, False, True, False]
    assert tab.cells[0].view.transform().m11() < 0 < tab.cells[1].view.transform().m11()
    assert "Study 1 of 2" in tab.label.text() and "research use only" in tab.label.text().lower()

    assert ctrl.request_maps() == 4
    qtbot.waitUntil(lambda: all(cell.result is not None for cell in tab.cells), timeout=WAIT)
    for cell, c in zip(tab.cells, ctrl.views):  # each view shows its own map
        assert cell.result.source == c.mammogram.source
        assert cell.result.map[0, 0] == pytest.approx(float(c.mammogram.pixels.mean()))
        assert cell.view.map_shown()

    lines = ctrl.export_dicom(tmp_path / "dicom")  # the viewer's DICOM export: one SR per view
    assert len(lines) == 4 and all("_sr.dcm" in ln for ln in lines), lines
    assert sorted(p.name for p in (tmp_path / "dicom").glob(f"*{SR_SUFFIX}")) == [
        f"a_{k}{SR_SUFFIX}" for k in range(4)]

    qtbot.keyClick(tab, Qt.Key.Key_M)  # marks off, then on again
    assert not any(cell.view.map_shown() for cell in tab.cells)
    qtbot.keyClick(tab, Qt.Key.Key_M)
    assert all(cell.view.map_shown() for cell in tab.cells)

    qtbot.keyClick(tab, Qt.Key.Key_3)  # R MLO alone fills the tab
    qtbot.keyClick(tab, Qt.Key.Key_F)
    assert [cell.isVisible() for cell in tab.cells] == [False, False, True, False]
    qtbot.keyClick(tab, Qt.Key.Key_F)
    assert all(cell.isVisible() for cell in tab.cells)

    qtbot.keyClick(tab, Qt.Key.Key_N)  # next study: patient B, L CC only
    qtbot.waitUntil(lambda: ctrl.views[1].mammogram is not None
                    and ctrl.views[1].mammogram.name == "b_lcc.dcm", timeout=WAIT)
    assert ctrl.index == 1 and "Study 2 of 2" in tab.label.text()
    assert [cell.view.isVisible() for cell in tab.cells] == [False, True, False, False]
    assert "no image" in tab.cells[0].title.text()
