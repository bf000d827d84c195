"""What the clinician sees in the running viewer (tiny real bundles, offscreen): a clean window
title, the displayed heatmap normalised and masked with its colour bar and target class,
member quality in the results panel, and the keyboard back on the patch list after any combo
box choice."""
from __future__ import annotations

import numpy as np
import pytest
from bundle_factory import models_dir_with, synthetic_patches
from PyQt6.QtCore import QSettings, Qt
from PyQt6.QtWidgets import QApplication

from app.text import APP_DISPLAY_NAME, NOTICE
from mammo_core.explain import tissue_mask
from mammo_core.io import to_model_input

pytestmark = pytest.mark.gui
WAIT = 120_000


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return models_dir_with(tmp_path_factory.mktemp("models"))


@pytest.fixture(autouse=True)
def _tmp_settings(tmp_path):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "cfg"))


@pytest.fixture
def edge_folder(tmp_path):
    """Patches cut at the image edge: black film border on the left."""
    imgs, _labels = synthetic_patches(4, seed=3)
    imgs[:, :, :40] = 0
    np.save(tmp_path / "edge.npy", imgs)
    return tmp_path / "edge.npy"


@pytest.fixture
def window(qtbot, models_root):
    from app.main import build_window

    # no create_app(): its style sheet would stay on the shared QApplication for later tests
    win = build_window(models_root, interactive_dialogs=False)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.shutdown(60)


def test_title_heatmap_quality_and_focus(qtbot, window, edge_folder):
    win = window
    # Qt appends the display name unless the title ends with it: it must appear once
    title = win.windowTitle()
    assert title.endswith(APP_DISPLAY_NAME)  # create_app() sets this display name
    assert title.count(APP_DISPLAY_NAME) == 1 and NOTICE in title

    win.patch_tab.overlay_check.setChecked(True)
    win.start_models()
    with qtbot.waitSignal(win.patchesOpened, timeout=WAIT):
        win.open_paths([str(edge_folder)])
    qtbot.waitUntil(lambda: win.current_entry() is not None and win.shown_heat_key() is not None,
                    timeout=WAIT)
    entry = win.current_entry()
    key = win.shown_heat_key()
    heat, _rgb = win.controller.heatmap(key)
    mask = tissue_mask(to_model_input(entry.patch)[0])
    assert (~mask).sum() >= 150 * 40
    assert (heat[~mask] == 0).all() and (heat.max() >= 0.99 or heat.max() == heat.min())
    assert win.patch_tab.colour_bar.isVisible()
    assert key.target and key.target.replace("_", " ").split()[0].lower() in win.patch_tab.heat_status.text().lower()
    # member quality in the results panel (the tiny bundles' cards have no metrics: greyed)
    titles = win.ui.results.member_titles()
    assert titles and all(t.property("quality") == "not measured" for t in titles)
    assert not any(bold for b in win.ui.results.member_bars() for _l, _p, bold in b.rows())

    # after choosing in a combo box with the keyboard, Up/Down move through patches again
    tab = win.patch_tab
    for combo in (tab.heat_model, tab.method_combo, tab.target_combo, win.browser.pred_filter):
        row = win.browser.table.currentIndex().row()
        combo.setFocus()
        qtbot.waitUntil(lambda c=combo: QApplication.focusWidget() is c, timeout=5000)
        before = combo.currentIndex()
        qtbot.keyClick(combo, Qt.Key.Key_Down)
        assert combo.currentIndex() != before or combo.count() == 1
        qtbot.waitUntil(lambda: QApplication.focusWidget() is win.browser.table, timeout=5000)
        if combo is win.browser.pred_filter:
            combo.setCurrentIndex(0)  # show every patch again
            win.focus_patches()
        qtbot.keyClick(win.browser.table, Qt.Key.Key_Down)
        assert win.browser.table.currentIndex().row() in (row + 1, win.browser.proxy.rowCount() - 1)
        qtbot.keyClick(win.browser.table, Qt.Key.Key_Home)


def test_bits_setting_rereads_16bit_files(qtbot, window, tmp_path):
    """A 16-bit PNG holding 12-bit data: with the setting at 12 bits the patch is read again,
    scaled by 4095 instead of 65535, and its old prediction is dropped."""
    import cv2

    imgs, _ = synthetic_patches(1, seed=9, labels=np.array([2]))
    twelve = (imgs[0].astype(np.float64) / 65535 * 4095).round().astype(np.uint16)
    png = tmp_path / "twelve_bit.png"
    assert cv2.imwrite(str(png), twelve)
    win = window
    win.start_models()
    with qtbot.waitSignal(win.patchesOpened, timeout=WAIT):
        win.open_paths([str(png)])
    qtbot.waitUntil(lambda: win.current_entry() is not None
                    and win.browser.patch_model.prediction(win.current_entry().key) is not None, timeout=WAIT)
    first = win.current_entry()
    assert first.patch.bits == 16
    before = win.browser.patch_model.prediction(first.key)
    assert win.patch_tab._unit(first).max() == pytest.approx(twelve.max() / 65535, abs=1e-6)

    with qtbot.waitSignal(win.patchesOpened, timeout=WAIT):
        win.ui.bits_actions[12].trigger()
    assert win.settings.value("read/bits") in (12, "12")
    qtbot.waitUntil(lambda: win.current_entry() is not None, timeout=WAIT)
    entry = win.current_entry()
    assert entry.patch.bits == 12 and win.browser.patch_model.rowCount() == 1
    assert win.patch_tab._unit(entry).max() == pytest.approx(twelve.max() / 4095, abs=1e-6)
    qtbot.waitUntil(lambda: win.browser.patch_model.prediction(entry.key) is not None, timeout=WAIT)
    after = win.browser.patch_model.prediction(entry.key)
    assert after is not before and after.bits == 12


def test_bits_setting_is_remembered(qtbot, models_root):
    from app.main import build_window
    from app.settings import make_settings

    s = make_settings()
    s.setValue("read/bits", 12)
    s.sync()
    win = build_window(models_root, interactive_dialogs=False)
    qtbot.addWidget(win)
    try:
        assert win.controller.bits == 12 and win.ui.bits_actions[12].isChecked()
    finally:
        win.shutdown(10)
    s.setValue("read/bits", "junk")
    win = build_window(models_root, interactive_dialogs=False)
    qtbot.addWidget(win)
    try:
        assert win.controller.bits is None and win.ui.bits_actions[16].isChecked()
    finally:
        win.shutdown(10)
