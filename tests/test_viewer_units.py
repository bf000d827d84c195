"""Viewer pieces that need no model: the worker, pixels for the screen, the patch browser, the
image view. pytest-qt, offscreen."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import QSettings, Qt

from app import imaging
from app.workers import SerialExecutor, Worker, live_workers

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _tmp_settings(tmp_path):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "cfg"))


# ------------------------------------------------------------------------------- workers
def _sum_with_progress(n, progress, cancel):
    total = 0
    for i in range(n):
        if cancel():
            return -1
        total += i
        progress(i + 1, n)
    return total


def _boom(path):
    raise OSError(f"{path}: cannot read")


@pytest.mark.parametrize("pool", ["qt", "serial"])
def test_worker_returns_and_reports_progress(qtbot, pool):
    executor = SerialExecutor() if pool == "serial" else None
    got, progress = [], []
    w = Worker(_sum_with_progress, 5, callbacks=True)
    w.on_return(got.append).on_progress(progress.append)
    with qtbot.waitSignal(w.signals.finished, timeout=10_000):
        w.start(executor)
    qtbot.waitUntil(lambda: got == [10], timeout=5_000)
    assert progress[-1] == (5, 5) and len(progress) == 5
    qtbot.waitUntil(lambda: live_workers() == 0, timeout=5_000)
    if executor is not None:
        assert executor.shutdown(5)


def test_worker_turns_exceptions_into_signals(qtbot):
    errors, returned = [], []
    w = Worker(_boom, "/x/broken.png").on_error(errors.append).on_return(returned.append)
    with qtbot.waitSignal(w.signals.finished, timeout=10_000):
        w.start()
    qtbot.waitUntil(lambda: len(errors) == 1, timeout=5_000)
    assert isinstance(errors[0], OSError) and "/x/broken.png" in str(errors[0])
    assert returned == [] and "OSError" in w.traceback


def test_serial_executor_runs_by_priority_and_cancels(qtbot):
    ex = SerialExecutor()
    order = []
    import threading

    gate = threading.Event()
    blocker = Worker(gate.wait, 10)
    blocker.start(ex)  # occupies the thread while the others queue up
    low = Worker(lambda: order.append("low")).start(ex, priority=0)
    high = Worker(lambda: order.append("high")).start(ex, priority=10)
    gate.set()
    qtbot.waitUntil(lambda: len(order) == 2, timeout=10_000)
    assert order == ["high", "low"]
    assert low and high
    w = Worker(_sum_with_progress, 10_000_000, callbacks=True)
    result = []
    w.on_return(result.append)
    w.cancel()  # cancelled before it starts: returns at once
    with qtbot.waitSignal(w.signals.finished, timeout=10_000):
        w.start(ex)
    qtbot.waitUntil(lambda: result == [-1], timeout=5_000)
    assert ex.shutdown(5)


# ------------------------------------------------------------------------------- imaging
def test_window_level_and_invert():
    unit = np.linspace(0, 1, 150 * 150, dtype=np.float32).reshape(150, 150)
    full = imaging.apply_window(unit, imaging.Window(0.5, 1.0))
    assert full.dtype == np.uint8 and full.min() == 0 and full.max() == 255
    narrow = imaging.apply_window(unit, imaging.Window(0.5, 0.2))
    assert (narrow[unit < 0.4] == 0).all() and (narrow[unit > 0.6] == 255).all()
    inv = imaging.apply_window(unit, imaging.Window(0.5, 1.0, invert=True))
    assert int(inv[0, 0]) == 255 and int(inv[-1, -1]) == 0


def test_to_unit_uses_bit_depth_and_auto_window():
    px16 = np.full((150, 150), 65535 // 2, dtype=np.uint16)
    px16[:10] = 60000
    unit = imaging.to_unit(px16)
    assert unit.dtype == np.float32 and abs(float(unit[50, 50]) - 0.5) < 1e-3
    win = imaging.auto_window(unit)
    assert 0.45 < win.low < 0.55 and win.high > 0.9
    assert imaging.to_unit(np.full((150, 150), 255, np.uint8)).max() == pytest.approx(1.0)
    flat = imaging.auto_window(np.zeros((150, 150), np.float32))
    assert flat.width > 0


def test_blend_and_qimage_round_trip(qapp):
    grey = np.full((150, 150), 100, np.uint8)
    red = np.zeros((150, 150, 3), np.uint8)
    red[..., 0] = 255
    out = imaging.blend(grey, red, 0.5)
    assert tuple(out[0, 0]) == (178, 50, 50)
    assert (imaging.blend(grey, red, 0.0)[..., 0] == 100).all()
    img = imaging.to_qimage(out)
    assert (img.width(), img.height()) == (150, 150)
    assert np.array_equal(imaging.qimage_to_array(img), out)
    assert np.array_equal(imaging.qimage_to_array(imaging.to_qimage(grey))[..., 1], grey)
    with pytest.raises(ValueError):
        imaging.blend(grey, red[:10], 0.5)


# ------------------------------------------------------------------------------- browser
def _patches(n, labels=None):
    from mammo_core.io import Patch

    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        px = rng.integers(0, 65535, (150, 150), dtype=np.uint16)
        out.append(Patch(px, "/data/train_tensor.npy", i,
                         None if labels is None else int(labels[i])))
    return out


def _prediction(patch, predicted, flagged, unc):
    from mammo_core.labels import CLASS_NAMES
    from mammo_core.session import ModelOutput, PatchPrediction

    probs = {c: (0.8 if c == predicted else 0.05) for c in CLASS_NAMES}
    ens = ModelOutput("ensemble", "five_class", probs, predicted)
    return PatchPrediction(patch.source, patch.index, patch.sha256, {}, ens, unc, flagged)


def test_browser_sorts_filters_and_navigates(qtbot):
    from app.patch_browser import (
        PatchFilterProxy,
        PatchTableModel,
        PatchTableView,
        patch_key,
    )

    labels = [0, 1, 0, 2, 0, 4]
    patches = _patches(6, labels)
    model = PatchTableModel()
    model.set_patches(patches)
    assert model.thumbnails_made == 0  # lazy: nothing painted yet
    proxy = PatchFilterProxy()
    proxy.setSourceModel(model)
    view = PatchTableView()
    view.setModel(proxy)
    qtbot.addWidget(view)
    view.resize(500, 300)
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: model.thumbnails_made > 0, timeout=5_000)  # made when painted
    assert model.thumbnails_made <= 6
    assert model.entry(3).split == "train" and model.entry(3).true_label == "mass_malignant"

    preds = {"baseline": 0.1, "mass_benign": 0.2, "mass_malignant": 0.7}
    kinds = ["baseline", "mass_benign", "baseline", "mass_malignant", "baseline", "mass_malignant"]
    model.set_predictions({patch_key(p): _prediction(p, k, flagged=(i == 3),
                                                     unc=preds.get(k, 0.1) + i / 100)
                           for i, (p, k) in enumerate(zip(patches, kinds))})
    proxy.set_predicted_filter("mass_malignant")
    assert proxy.rowCount() == 2
    proxy.set_uncertain_only(True)
    assert proxy.rowCount() == 1
    assert "\u26a0" in proxy.index(0, PatchTableModel.COL_PRED).data()
    proxy.set_uncertain_only(False)
    proxy.set_predicted_filter("")
    proxy.set_true_filter("baseline")
    assert proxy.rowCount() == 3
    proxy.set_true_filter("")
    # sort by uncertainty, highest first
    view.sortByColumn(PatchTableModel.COL_UNC, Qt.SortOrder.DescendingOrder)
    top = proxy.index(0, 0).data(PatchTableModel.EntryRole)
    assert top.patch.index == 5
    # keyboard: Home / End / Down / PageDown reach whole patches
    view.setFocus()
    seen = []
    view.currentEntryChanged.connect(seen.append)
    view.select_row(2)
    qtbot.keyClick(view, Qt.Key.Key_Home)
    assert view.current_entry() is top
    qtbot.keyClick(view, Qt.Key.Key_End)
    assert view.currentIndex().row() == 5
    qtbot.keyClick(view, Qt.Key.Key_Home)
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert view.currentIndex().row() == 1
    qtbot.keyClick(view, Qt.Key.Key_PageDown)
    assert view.currentIndex().row() > 1
    assert seen and seen[-1] is view.current_entry()


def test_browser_ignores_duplicates(qapp):
    from app.patch_browser import PatchTableModel

    patches = _patches(3)
    model = PatchTableModel()
    assert model.add_patches(patches) == 3
    assert model.add_patches(patches[:2]) == 0
    assert model.rowCount() == 3


# ------------------------------------------------------------------------------- image view
def test_image_view_zoom_fit_and_pair(qtbot):
    from app.views.image_view import ImageView

    view = ImageView()
    qtbot.addWidget(view)
    view.resize(600, 400)
    view.show()
    qtbot.waitExposed(view)
    img = imaging.to_qimage(np.zeros((150, 150), np.uint8))
    view.set_images([("Original", img)])
    assert view.is_fit() and view.zoom() > 1.0  # 150 px fitted into ~400 px
    fitted = view.zoom()
    view.zoom_by(2.0)
    assert not view.is_fit() and view.zoom() == pytest.approx(2 * fitted)
    view.set_images([("Original", img)])  # same layout: zoom kept
    assert view.zoom() == pytest.approx(2 * fitted)
    view.fit()
    view.set_images([("Original", img), ("Overlay", img)])  # pair side by side, refitted
    assert len(view.images()) == 2 and view.zoom() < fitted
    view.set_zoom(1000)
    assert view.zoom() == view.MAX_ZOOM


# ------------------------------------------------------------------------------- errors
def test_error_message_has_details_and_goes_to_the_log_file(qtbot, tmp_path):
    import logging
    import sys

    from PyQt6.QtWidgets import QMessageBox

    from app.main import _install_excepthook, build_window
    from mammo_core import logsetup

    empty = tmp_path / "no_models"
    empty.mkdir()
    logfile = tmp_path / "data" / "viewer.log"
    assert logsetup.configure("mammo-viewer", log_file=logfile) == logfile
    old_hook = sys.excepthook
    win = build_window(empty, interactive_dialogs=True)
    qtbot.addWidget(win)
    try:
        try:
            raise KeyError("probabilities")
        except KeyError as exc:
            _install_excepthook([win])
            with qtbot.waitSignal(win.errorShown, timeout=5_000):
                sys.excepthook(type(exc), exc, exc.__traceback__)
        boxes = [w for w in win.findChildren(QMessageBox) if w.isVisible()]
        assert len(boxes) == 1 and "Unexpected error: KeyError" in boxes[0].text()
        details = boxes[0].detailedText()
        assert "Traceback" in details and "test_viewer_units.py" in details
        # a worker's failure: the traceback the worker kept is under Details too
        win.controller.errorOccurred.emit("/x/scan.dcm: prediction failed: boom", "Prediction",
                                          "Traceback (most recent call last):\n  ValueError: boom")
        box = [w for w in win.findChildren(QMessageBox) if w.isVisible()][-1]
        assert "ValueError: boom" in box.detailedText()
        for h in logging.getLogger().handlers:
            h.flush()
        text = logfile.read_text(encoding="utf-8")
        assert "Unexpected error: KeyError" in text and "test_viewer_units.py" in text
        assert "/x/scan.dcm: prediction failed: boom" in text and "ValueError: boom" in text
    finally:
        sys.excepthook = old_hook
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_mammo_handler", False)]:
            root.removeHandler(h)
            h.close()
        win.shutdown(10)
