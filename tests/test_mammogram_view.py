"""The whole-mammogram tab (app/views/mammogram_panel.py, app/views/mammogram_view.py,
app/controllers/mammogram.py), pytest-qt offscreen: opening a real
mini-MIAS mammogram and a 16-bit DICOM, picking a region with the mouse (the builder's pixels),
the abnormality map with Cancel, candidates opening as patches, the shortcut sheet."""
from __future__ import annotations

import numpy as np
import pytest
from filemakers import write_dicom
from PyQt6.QtCore import QEvent, QObject, QPoint, Qt

from app.controllers.mammogram import MammogramController, is_mammogram_file
from app.dialogs.shortcuts import ShortcutSheet, shortcut_rows
from app.service import ModelService
from app.text import REGION_HELP
from app.views.mammogram_panel import MammogramPanel
from app.views.mammogram_view import nice_length_mm
from mammo_core.mammogram import read_mammogram
from mammo_core.protocol import Box, box_window, cut_window, point_window

pytestmark = pytest.mark.gui
WAIT = 120_000


class ResizeStormGuard(QObject):
    """Counts the resize events of a view's viewport; past ``limit`` it records a storm and leaves fit
    mode (public ``set_zoom``), which ends a fit/scroll-bar resize loop, so such a loop fails
    the test instead of hanging it (a QTimer or waitUntil timeout never fires inside it)."""

    def __init__(self, view, limit: int = 200):
        super().__init__()
        self.view, self.limit, self.resizes, self.stormed = view, limit, 0, False
        view.viewport().installEventFilter(self)

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Resize:
            self.resizes += 1
            if self.resizes > self.limit and not self.stormed:
                self.stormed = True
                self.view.set_zoom(self.view.zoom())
        return False


def _panel(qtbot, guard: bool = False, controller: MammogramController | None = None) -> MammogramPanel:
    p = MammogramPanel(controller)
    qtbot.addWidget(p)
    if guard:
        p.storm_guard = ResizeStormGuard(p.view)
    p.resize(1000, 800)
    p.show()
    qtbot.waitExposed(p)
    return p


def _click_scene(qtbot, view, row: int, col: int) -> None:
    pos = view.mapFromScene(col + 0.5, row + 0.5)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def _scene_pos(view, row, col) -> QPoint:
    return view.mapFromScene(col + 0.5, row + 0.5)


def test_16bit_dicom_opens_fitted_from_a_pyramid_level(qtbot, tmp_path):
    rng = np.random.default_rng(0)
    px = rng.integers(0, 65536, size=(2800, 2000), dtype=np.uint16)
    folder = tmp_path / "Calc-Test_P_00038_RIGHT_MLO"
    folder.mkdir()
    path = write_dicom(folder / "1-1.dcm", px, bits_stored=16)
    import pydicom

    ds = pydicom.dcmread(str(path))
    ds.ImagerPixelSpacing = [0.05, 0.05]
    ds.WindowCenter, ds.WindowWidth = 30000, 20000
    ds.save_as(str(path))
    assert is_mammogram_file(path)
    p = _panel(qtbot)
    p.open_mammogram(read_mammogram(path))
    v = p.view
    assert v.zoom() < 0.5 and v.shown_level() >= 1  # fitted: a shrunk level, not full resolution
    assert max(p.pyramid.levels[v.shown_level()].shape) <= 1400
    assert "DICOM window" in p.presets and p.header_table.rowCount() > 5
    assert "right" in p.info_label.text() and "50 µm" in p.info_label.text()
    assert p.mammogram.laterality == "R" and p.mammogram.view == "MLO"
    assert "value" in v.hover_text(100, 200) and "mm" in v.hover_text(100, 200)
    assert str(int(px[100, 200])) in v.hover_text(100, 200)
    v.set_zoom(1.0)
    assert v.shown_level() == 0                     # zoomed in: full resolution
    img = v.grab().toImage()
    assert not img.isNull()
    before = v.window
    qtbot.mousePress(v.viewport(), Qt.MouseButton.RightButton, pos=QPoint(300, 300))
    from PyQt6.QtCore import QEvent, QPointF
    from PyQt6.QtGui import QMouseEvent

    ev = QMouseEvent(QEvent.Type.MouseMove, QPointF(360, 260), QPointF(360, 260),
                     Qt.MouseButton.NoButton, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier)
    v.mouseMoveEvent(ev)
    qtbot.mouseRelease(v.viewport(), Qt.MouseButton.RightButton, pos=QPoint(360, 260))
    assert v.window.width > before.width and v.window.center > before.center
    p.invert_box.setChecked(True)
    assert v.window.invert


def test_scale_bar_never_covers_the_notice_and_the_side_panel_folds(qtbot, tmp_path):
    """Issue 27: in a narrow view the 50 mm bar was drawn over "Research use only"; the preset
    combo read "Breast (a"."""
    px = np.zeros((1024, 1024), dtype=np.uint8)
    px[100:900, 50:600] = 140
    from mammo_core.mammogram import Mammogram

    p = _panel(qtbot)
    p.open_mammogram(Mammogram(px, str(tmp_path / "mdb001.png"), spacing_mm=(0.2, 0.2)))
    for width in (1000, 700, 420):
        p.resize(width, 800)
        qtbot.wait(20)
        p.view.fit()
        x0, x1, y, _label = p.view.scale_bar_geometry()
        notice = p.view.notice_rect()
        bar_top, bar_bottom = y - 8 - 14, y + 5  # the label above the bar, the end ticks
        overlaps_x = x0 < notice.right() and notice.left() < x1
        overlaps_y = bar_top < notice.bottom() and notice.top() < bar_bottom
        assert not (overlaps_x and overlaps_y), (width, (x0, x1, y), notice)
    fm = p.preset_box.fontMetrics()
    assert p.preset_box.width() > fm.horizontalAdvance("Breast (auto)")
    p.side_button.setChecked(False)
    assert not p.side_tabs.isVisible()
    p.side_button.setChecked(True)
    assert p.side_tabs.isVisible()


def test_scale_bar_lengths_are_round():
    assert nice_length_mm(0.2, 120) in (20.0, 50.0)
    assert nice_length_mm(0.01, 120) in (1.0, 2.0)


@pytest.mark.shared
def test_point_and_box_on_real_mini_mias_cut_the_builders_window(qtbot, mias_dir):
    """mdb005's first lesion (x 477, y 133 from the bottom, r 30): a click with the Point tool
    and a dragged box give the protocol-v1 window and its 150 x 150 pixels."""
    m = read_mammogram(mias_dir / "mdb005.png")
    p = _panel(qtbot)
    p.open_mammogram(m)
    assert p.mammogram.spacing_mm == (0.2, 0.2)
    row, col, r = 1024 - 133, 477, 30
    expected_box = point_window(row, col, r, m.shape)
    expected = cut_window(m.pixels, expected_box)
    p.set_tool("point")
    p.radius.setValue(r)
    p.view.set_zoom(4.0)  # a screen pixel is a quarter of a source pixel: the click is exact
    p.view.centerOn(col, row)
    with qtbot.waitSignal(p.controller.regionCut) as sig:
        _click_scene(qtbot, p.view, row, col)
    region = sig.args[0]
    assert region.box == expected_box
    np.testing.assert_array_equal(region.patch.pixels, expected)
    assert region.patch.source.startswith(str(mias_dir / "mdb005.png") + " [window top=")
    p.set_tool("box")
    p.view.set_zoom(1.0)
    p.view.centerOn(col, row)
    a, b = _scene_pos(p.view, row - r, col - r), _scene_pos(p.view, row + r, col + r)
    with qtbot.waitSignal(p.controller.regionCut) as sig:
        qtbot.mousePress(p.view.viewport(), Qt.MouseButton.LeftButton, pos=a)
        from PyQt6.QtCore import QEvent, QPointF
        from PyQt6.QtGui import QMouseEvent

        p.view.mouseMoveEvent(QMouseEvent(QEvent.Type.MouseMove, QPointF(b), QPointF(b),
                                          Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton,
                                          Qt.KeyboardModifier.NoModifier))
        qtbot.mouseRelease(p.view.viewport(), Qt.MouseButton.LeftButton, pos=b)
    got = sig.args[0].box
    # the dragged box is (row - r, col - r, 2r, 2r) up to the screen pixel: same window
    assert abs(got.top - expected_box.top) <= 1 and abs(got.left - expected_box.left) <= 1
    assert got.height == expected_box.height
    assert sig.args[0].box == box_window(Box(got.top + got.height // 2 - r, got.left + got.width // 2 - r,
                                             2 * r, 2 * r), m.shape)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from bundle_factory import models_dir_with

    from mammo_core.session import Session

    s = Session(models_dir_with(tmp_path_factory.mktemp("models"),
                                ["mass_calc", "benign_malignant", "baseline_mass_calc"]))
    assert s.load(["ensemble"]) == []
    return s


def _synthetic(tmp_path):
    import cv2
    from test_scan import synthetic_mammogram

    path = tmp_path / "synthetic_L_CC.png"
    assert cv2.imwrite(str(path), synthetic_mammogram())
    return read_mammogram(path, spacing_mm=19.2 / 150)


@pytest.fixture(params=["plain", "create_app"])
def app_style(request):
    """The shared QApplication as the tests leave it, or with create_app()'s real style
    (conftest's dark_style, restored afterwards)."""
    if request.param == "create_app":
        request.getfixturevalue("dark_style")
    return request.param


def test_map_with_cancel_then_complete_and_candidates_open_as_patches(qtbot, tmp_path, session, app_style):
    """Also under create_app()'s style sheet: there the fitted view's scroll bars came and went
    for ever (each refit on resize toggled them), the test spun at full CPU until killed."""
    from mammo_core.scan import ScanSettings

    service = ModelService(session.models_dir, session_factory=lambda _d: session)
    try:
        with qtbot.waitSignal(service.modelsLoaded, timeout=WAIT):
            service.start_models()
        ctrl = MammogramController(service, ScanSettings(batch_size=4))
        p = _panel(qtbot, guard=True, controller=ctrl)
        p.open_mammogram(_synthetic(tmp_path))
        # cancel at the first progress report
        first = []

        def on_progress(*_):
            if not first:
                first.append(1)
                p.cancel_map()
        jobs_worker_progress = p.progress.valueChanged
        jobs_worker_progress.connect(on_progress)
        p.map_button.click()
        assert p.map_running() and p.cancel_button.isEnabled()
        qtbot.waitUntil(lambda: not p.map_running(), timeout=WAIT)
        assert p.candidate_list.count() == 0 and "cancelled" in p.map_label.text()
        assert p.mammogram.source not in ctrl.maps        # a partial map is not cached
        jobs_worker_progress.disconnect(on_progress)
        p.request_map()
        qtbot.waitUntil(lambda: not p.map_running(), timeout=WAIT)
        assert p.candidate_list.count() > 0 and p.view.map_shown()
        assert p.mammogram.source in ctrl.maps and "Map members" in p.map_label.text()
        res = ctrl.maps[p.mammogram.source]
        # the cache: asking again shows the cached map at once
        p.request_map()
        assert not p.map_running()
        p.opacity.setValue(80)
        with qtbot.waitSignal(p.controller.regionCut) as sig:
            p.candidate_list.itemActivated.emit(p.candidate_list.item(0))
        region = sig.args[0]
        assert region.box == res.candidates[0].box and region.how == "candidate 1"
        np.testing.assert_array_equal(region.patch.pixels, cut_window(p.mammogram.pixels, region.box))
        p.show_region_heat(f"{region.patch.source}", np.random.default_rng(0).random((150, 150)))
        qtbot.waitUntil(lambda: ctrl.worker is None, timeout=WAIT)
        p.view.fit()
        qtbot.wait(50)
        assert not p.storm_guard.stormed, f"{p.storm_guard.resizes} resizes of the mammogram viewport"
    finally:
        service.shutdown()


def test_shortcut_sheet_lists_keys_mouse_and_region_note(qtbot):
    from PyQt6.QtGui import QAction, QKeySequence

    a = QAction("&Open files…")
    a.setShortcut(QKeySequence("Ctrl+O"))
    rows = shortcut_rows([a])
    assert ("Ctrl+O", "Open files") in rows
    assert any(k == "Right-drag" for k, _ in rows) and any("Point tool" in v for _, v in rows)
    sheet = ShortcutSheet([a])
    qtbot.addWidget(sheet)
    assert sheet.table.rowCount() == len(rows)
    from PyQt6.QtWidgets import QLabel

    assert any(lbl.text() == REGION_HELP for lbl in sheet.findChildren(QLabel))
    assert "19.2 mm" in REGION_HELP and "max(2 x lesion radius, 96 px)" in REGION_HELP


# --------------------------------------------------------------------------- in the main window
@pytest.fixture()
def win(qtbot, tmp_path, session):
    from PyQt6.QtCore import QSettings

    from app.main import build_window

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "cfg"))
    w = build_window(session.models_dir, interactive_dialogs=False)
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.shutdown(60)


def test_window_opens_a_mammogram_instead_of_shrinking_it_and_classifies_a_region(qtbot, win, tmp_path):
    """Attack from issue 15: a whole mammogram opened as patches was silently shrunk to
    150 x 150 and classified. Now it opens in the Mammogram tab; a picked region joins the patch
    list with its provenance, is predicted, and its Grad-CAM is drawn on the mammogram."""
    import cv2
    from test_scan import synthetic_mammogram

    path = tmp_path / "whole_R_CC.png"
    assert cv2.imwrite(str(path), synthetic_mammogram())
    win.start_models()
    with qtbot.waitSignal(win.mammogramsOpened, timeout=WAIT) as sig:
        win.open_paths([str(path)], remember=False)
    assert sig.args[0] == [str(path)]
    panel = win.mammo_tab
    qtbot.waitUntil(lambda: panel.mammogram is not None, timeout=WAIT)
    assert win.browser.patch_model.rowCount() == 0 and not win.messages  # no error, nothing shrunk
    assert win.showing(panel) and panel.mammogram.laterality == "R"
    assert not win.browser.isVisible()  # the mammogram gets the screen: the patch list folds
    qtbot.waitUntil(lambda: win.models_ready, timeout=WAIT)
    with qtbot.waitSignal(win.heatmapShown, timeout=WAIT):
        region = panel.pick_point(560, 330, 75)
    key = region.patch.source
    assert win.browser.patch_model.row_of(key) is not None and win.current_entry().key == key
    assert "[window top=485 left=255 side=150]" in key
    pred = win.controller.prediction(key)
    assert pred is not None and pred.ensemble is not None and len(pred.per_model) == 3
    assert not panel.view._heat_item.pixmap().isNull()  # Grad-CAM drawn on the mammogram
    out = tmp_path / "report.json"
    with qtbot.waitSignal(win.exportFinished, timeout=WAIT):
        win.export_report("current", out, "json")
    import json

    d = json.loads(out.read_text())
    assert {p["source"] for p in d["predictions"]} == {key}


def test_f1_opens_the_shortcut_sheet(qtbot, win):
    from PyQt6.QtGui import QKeySequence

    assert win.ui.act_shortcuts.shortcut() == QKeySequence(QKeySequence.StandardKey.HelpContents)
    win.ui.act_shortcuts.trigger()
    sheet = win.sheet
    qtbot.waitExposed(sheet)
    keys = [sheet.table.item(i, 0).text() for i in range(sheet.table.rowCount())]
    assert "Ctrl+M" in keys and "Ctrl+R" in keys and "F1" in keys and "Right-drag" in keys
    sheet.close()


def test_screenshot_cli_shows_a_mammogram_with_its_map_and_best_candidate(tmp_path, session):
    """`mammo-viewer MAMMOGRAM --screenshot`: the mammogram view, its abnormality map and the
    best candidate opened as a patch (predicted, Grad-CAM drawn) before the picture is taken."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import cv2
    from test_scan import synthetic_mammogram

    path = tmp_path / "case_L_CC.dcm"
    write_dicom(path, synthetic_mammogram())
    import pydicom

    ds = pydicom.dcmread(str(path))
    ds.PixelSpacing = [19.2 / 150, 19.2 / 150]  # 150 px windows, like the tiny models' data
    ds.save_as(str(path))
    shot = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TF_CPP_MIN_LOG_LEVEL="3",
               XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "app", str(path), "--models-dir", str(session.models_dir),
                          "--screenshot", str(shot), "--screenshot-timeout", "240"],
                         capture_output=True, text=True, check=False, env=env, timeout=300, cwd=str(repo))
    assert res.returncode == 0, res.stderr[-3000:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[1] >= 1200 and img.std() > 10
