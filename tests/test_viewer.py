"""The viewer end to end with tiny real Keras bundles (tests/bundle_factory.py): open patches,
wait for predictions and heatmaps, toggle the overlay, change the target, run all, export,
broken files and bundles, settings, --screenshot. pytest-qt, offscreen."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import models_dir_with, synthetic_patches
from PyQt6.QtCore import QSettings, Qt

from mammo_core.paths import models_dir as bundled_models_dir
from mammo_core.paths import samples_dir

pytestmark = pytest.mark.gui
REPO = Path(__file__).resolve().parents[1]
WAIT = 120_000  # ms: generous, the CI machine may be busy


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    return models_dir_with(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def cbis_folder(tmp_path_factory) -> Path:
    """A CBIS-DDSM-layout folder of synthetic uint16 patches with labels (pairs)."""
    folder = tmp_path_factory.mktemp("cbis")
    imgs, labels = synthetic_patches(16, seed=11)
    np.save(folder / "train_tensor.npy", imgs[:10])
    np.save(folder / "train_labels.npy", labels[:10])
    np.save(folder / "public_test_tensor.npy", imgs[10:])
    np.save(folder / "public_test_labels.npy", labels[10:])
    return folder


@pytest.fixture(autouse=True)
def _tmp_settings(tmp_path):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "cfg"))


def _window(qtbot, models_root):
    from app.main import build_window

    win = build_window(models_root, interactive_dialogs=False)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    return win


@pytest.fixture
def window(qtbot, models_root):
    win = _window(qtbot, models_root)
    yield win
    win.shutdown(60)


def _open(qtbot, win, paths):
    with qtbot.waitSignal(win.patchesOpened, timeout=WAIT):
        win.open_paths([str(p) for p in paths])


def _wait_ready(qtbot, win):
    """The current patch's prediction and heatmap are on screen."""
    qtbot.waitUntil(lambda: win.current_entry() is not None
                    and win.browser.patch_model.prediction(win.current_entry().key) is not None
                    and win.shown_heat_key() is not None, timeout=WAIT)


def test_open_predict_overlay_target_export(qtbot, window, cbis_folder, tmp_path):
    win = window
    win.start_models()
    _open(qtbot, win, [cbis_folder])
    assert win.browser.patch_model.rowCount() == 16
    entry = win.current_entry()
    assert entry is not None and entry.split in ("train", "public_test")
    assert entry.true_label is not None  # labels of the CBIS layout are shown
    _wait_ready(qtbot, win)
    assert set(win.service.session.loaded) >= {"ensemble"}
    pred = win.browser.patch_model.prediction(entry.key)
    bars = win.ui.results.ensemble_bars.rows()
    assert len(bars) == 5 and abs(sum(p for _, p, _ in bars) - 1.0) < 1e-3
    assert len(win.ui.results.member_bars()) == 3
    assert win.ui.results.verdict_label.isVisible()
    assert "not a medical device" in win.ui.status_notice.text()
    assert "not a medical device" in win.ui.banner.text()
    key = win.shown_heat_key()
    assert key[1] == "ensemble" and key[3] == pred.ensemble.predicted
    assert len(win.patch_tab.view.images()) == 1

    # overlay off and on with the G shortcut
    qtbot.keyClick(win, Qt.Key.Key_G)
    assert not win.patch_tab.overlay_check.isChecked() and win.shown_heat_key() is None
    qtbot.keyClick(win, Qt.Key.Key_G)
    assert win.patch_tab.overlay_check.isChecked() and win.shown_heat_key() == key  # cached: instant

    # side by side: original | overlay
    win.patch_tab.side_check.setChecked(True)
    assert len(win.patch_tab.view.images()) == 2

    # another target class: a new heatmap, computed in the worker
    other = next(c for c in ("mass_malignant", "calcification_benign")
                 if c != pred.ensemble.predicted)
    win.patch_tab.target_combo.setCurrentIndex(win.patch_tab.target_combo.findData(other))
    qtbot.waitUntil(lambda: win.shown_heat_key() is not None
                    and win.shown_heat_key()[3] == other, timeout=WAIT)
    new_heat = win.controller.heatmap(win.shown_heat_key())[0]
    assert new_heat.shape == (150, 150) and 0.0 <= new_heat.min() <= new_heat.max() <= 1.0

    # one member's heatmap with Grad-CAM++
    win.patch_tab.heat_model.setCurrentIndex(win.patch_tab.heat_model.findData("tiny_mass_calc_0"))
    win.patch_tab.method_combo.setCurrentIndex(win.patch_tab.method_combo.findData("gradcam++"))
    win.patch_tab.target_combo.setCurrentIndex(0)  # predicted class of that member
    qtbot.waitUntil(lambda: (win.shown_heat_key() or (None,) * 4)[1:3]
                    == ("tiny_mass_calc_0", "gradcam++"), timeout=WAIT)
    assert win.shown_heat_key()[3] in ("mass", "calcification")

    # opacity and contrast change only the drawing
    before = win.patch_tab.view.images()[1]
    win.patch_tab.opacity.setValue(90)
    assert win.patch_tab.view.images()[1] != before
    win.patch_tab.invert_check.setChecked(True)
    assert not win.patch_tab.auto_check.isChecked() or win.patch_tab._window.invert

    # export the current patch: JSON, CSV and PDF parse
    for fmt in ("json", "csv", "pdf"):
        out = tmp_path / f"report.{fmt}"
        with qtbot.waitSignal(win.exportFinished, timeout=WAIT) as sig:
            win.export_report("current", out)
        assert Path(sig.args[0]) == out and out.is_file()
    doc = json.loads((tmp_path / "report.json").read_text())
    assert "not a medical device" in json.dumps(doc)
    assert {p["source"] for p in doc["predictions"]} == {str(entry.patch.source)}
    lines = (tmp_path / "report.csv").read_text().splitlines()
    assert "not a medical device" in lines[0]
    rows = list(csv.DictReader(ln for ln in lines if not ln.startswith("#")))
    assert rows and all(r["source"] == str(entry.patch.source) for r in rows)
    assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert not list(tmp_path.glob("*.tmp*"))  # atomic: no leftovers


def test_run_all_then_instant_navigation_and_filters(qtbot, window, cbis_folder, tmp_path):
    win = window
    win.controller.run_all_chunk = 4
    win.start_models()
    _open(qtbot, win, [cbis_folder])
    qtbot.waitUntil(lambda: win.models_ready, timeout=WAIT)
    with qtbot.waitSignal(win.runAllFinished, timeout=WAIT) as sig:
        win.run_all()
        assert win.ui.progress.isVisible() and win.ui.cancel_button.isVisible()
    assert sig.args[0] >= 15  # all (the first may have been predicted on its own)
    assert all(win.browser.patch_model.prediction(e.key) is not None for e in win.browser.patch_model.entries())
    assert not win.ui.progress.isVisible()
    # moving between patches shows cached results at once (no worker round trip)
    win.browser.table.setFocus()
    shown = []
    win.predictionShown.connect(shown.append)
    qtbot.keyClick(win.browser.table, Qt.Key.Key_End)
    assert shown and shown[-1] == win.current_entry().key
    qtbot.keyClick(win.browser.table, Qt.Key.Key_Up)
    assert shown[-1] == win.current_entry().key
    # filter by predicted class
    cls = win.browser.patch_model.prediction(win.current_entry().key).ensemble.predicted
    win.browser.pred_filter.setCurrentIndex(win.browser.pred_filter.findData(cls))
    n = win.browser.proxy.rowCount()
    assert 1 <= n <= 16
    assert all(win.browser.patch_model.prediction(win.browser.proxy.index(r, 0).data(
        win.browser.patch_model.EntryRole).key).ensemble.predicted == cls for r in range(n))
    win.browser.pred_filter.setCurrentIndex(0)
    # export all as JSON: one ensemble row per patch
    out = tmp_path / "all.json"
    with qtbot.waitSignal(win.exportFinished, timeout=WAIT):
        win.export_report("all", out)
    doc = json.loads(out.read_text())
    assert len({(p["source"], p["index"]) for p in doc["predictions"]}) == 16


def test_run_all_cancel_is_prompt(qtbot, window, tmp_path):
    win = window
    imgs, _ = synthetic_patches(96, seed=2)
    np.save(tmp_path / "stack.npy", imgs)
    win.controller.run_all_chunk = 8
    win.start_models()
    _open(qtbot, win, [tmp_path / "stack.npy"])
    qtbot.waitUntil(lambda: win.models_ready, timeout=WAIT)
    with qtbot.waitSignal(win.runAllFinished, timeout=WAIT) as sig:
        win.run_all()
        qtbot.waitUntil(lambda: win.ui.progress.value() > 0, timeout=WAIT)
        win.ui.cancel_button.click()
    assert sig.args[0] < 96
    assert not win.controller.run_all_active()


def test_broken_files_are_reported_and_the_rest_opens(qtbot, window, tmp_path):
    win = window
    good = tmp_path / "good.npy"
    np.save(good, synthetic_patches(2, seed=4)[0][1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    wrong = tmp_path / "wrong_shape.npy"
    np.save(wrong, np.zeros((3, 7, 7, 2), np.uint8))
    errors = []
    win.errorShown.connect(errors.append)
    win.start_models()
    _open(qtbot, win, [good, broken, wrong, tmp_path / "missing.tif"])
    assert win.browser.patch_model.rowCount() == 1
    assert errors, "no message shown"
    text = errors[-1]
    for path in (broken, wrong, tmp_path / "missing.tif"):
        assert str(path) in text
    assert win.isVisible()
    _wait_ready(qtbot, win)  # the good patch still gets its prediction and heatmap


def test_no_models_shows_a_message_and_patches_still_open(qtbot, tmp_path, cbis_folder):
    empty = tmp_path / "no_models"
    empty.mkdir()
    win = _window(qtbot, empty)
    try:
        win.start_models()
        assert win.models_state == "none"
        assert "No model bundles found" in win.ui.results.state_label.text()
        assert str(empty) in win.ui.results.state_label.text()
        _open(qtbot, win, [cbis_folder])
        assert win.current_entry() is not None
        assert len(win.patch_tab.view.images()) == 1 and not win.ui.act_run_all.isEnabled()
        assert "No model bundles" in win.ui.results.state_label.text()
    finally:
        win.shutdown(10)


def test_corrupt_bundle_is_named_and_the_others_load(qtbot, tmp_path, models_root, cbis_folder):
    root = tmp_path / "models"
    shutil.copytree(models_root, root)
    bad = root / "tiny_benign_malignant_0" / "model.keras"
    bad.write_bytes(bad.read_bytes()[:-100] + b"corrupted" * 10)
    win = _window(qtbot, root)
    errors = []
    win.errorShown.connect(errors.append)
    try:
        with qtbot.waitSignal(win.modelsLoaded, timeout=WAIT) as sig:
            win.start_models()
        assert "tiny_benign_malignant_0" not in sig.args[0]
        assert "tiny_mass_calc_0" in sig.args[0]
        assert any("tiny_benign_malignant_0" in e for e in errors)
        _open(qtbot, win, [cbis_folder])
        qtbot.waitUntil(lambda: win.browser.patch_model.prediction(win.current_entry().key) is not None,
                        timeout=WAIT)
    finally:
        win.shutdown(60)


def test_settings_persist(qtbot, models_root, tmp_path):
    from app.settings import make_settings

    win = _window(qtbot, models_root)
    win.patch_tab.opacity.setValue(73)
    win.patch_tab.side_check.setChecked(True)
    win.ui.engine_actions["keras"].trigger()  # Analysis > Engine > Keras
    win.close()  # saves
    s = make_settings()
    assert Path(s.fileName()).is_relative_to(tmp_path / "cfg")  # never the user's settings
    assert float(s.value("overlay/opacity")) == pytest.approx(0.73)
    win2 = _window(qtbot, models_root)
    try:
        assert win2.patch_tab.opacity.value() == 73 and win2.patch_tab.side_check.isChecked()
        from mammo_core.engine import EngineSettings

        assert win2.ui.engine_actions["keras"].isChecked() and win2.service.engine == EngineSettings("keras")
    finally:
        win2.shutdown(10)


def test_gui_never_imports_tensorflow_until_models_load(tmp_path, cbis_folder):
    code = textwrap.dedent(f"""
        import sys, time
        from PyQt6.QtCore import QSettings
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, {str(tmp_path)!r})
        t0 = time.perf_counter()
        import app.main
        from app.main import create_app, build_window
        qapp = create_app()
        win = build_window({str(tmp_path / 'none')!r}, interactive_dialogs=False)
        win.show()
        qapp.processEvents()
        shown = time.perf_counter() - t0
        win.open_paths([{str(cbis_folder)!r}])
        deadline = time.time() + 60
        while win.browser.patch_model.rowCount() == 0 and time.time() < deadline:
            qapp.processEvents()
        assert win.browser.patch_model.rowCount() == 16
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras',
                                                               'tf_keras_vis'))
        print('HEAVY', bad)
        print('SHOWN', shown)
        win.shutdown(5)
    """)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env,
                         timeout=120, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "HEAVY []" in res.stdout, res.stdout
    shown = float(res.stdout.split("SHOWN")[1].split()[0])
    assert shown < 10.0  # the window does not wait for TensorFlow (about 0.3 s here)


def test_screenshot_cli(tmp_path, models_root, cbis_folder):
    shot = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TF_CPP_MIN_LOG_LEVEL="3",
               XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    res = subprocess.run([sys.executable, "-m", "app", str(cbis_folder), "--models-dir",
                          str(models_root), "--screenshot", str(shot),
                          "--screenshot-timeout", "240"],
                         capture_output=True, text=True, check=False, env=env, timeout=300, cwd=str(REPO))
    assert res.returncode == 0, res.stderr[-3000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width >= 1200 and im.height >= 800
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 10  # not a blank image

    # failure path: no models -> non-zero exit with a message
    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run([sys.executable, "-m", "app", str(cbis_folder), "--models-dir",
                          str(empty), "--screenshot", str(tmp_path / "no.png"),
                          "--screenshot-timeout", "60"],
                         capture_output=True, text=True, check=False, env=env, timeout=120, cwd=str(REPO))
    assert res.returncode == 1 and "No model bundles found" in res.stderr
    assert not (tmp_path / "no.png").exists()


def _has_files(folder: Path) -> bool:
    from mammo_core.io import READ_EXTENSIONS

    return folder.is_dir() and any(p.is_file() and p.suffix.lower() in READ_EXTENSIONS
                                   for p in folder.iterdir())


@pytest.mark.skipif(not _has_files(samples_dir()), reason=f"no sample patches in {samples_dir()}")
def test_bundled_samples(qtbot, models_root):
    """The real sample patches, with the bundled models when there are any (else the tiny
    test bundles): they open, and the first gets its prediction and heatmap."""
    from app.main import build_window

    bundled = bundled_models_dir()
    use = bundled if any(bundled.glob("*/card.json")) else models_root
    win = build_window(use, interactive_dialogs=False)
    qtbot.addWidget(win)
    win.show()
    try:
        win.start_models()
        with qtbot.waitSignal(win.patchesOpened, timeout=WAIT):
            win.open_samples()
        assert win.browser.patch_model.rowCount() > 0
        _wait_ready(qtbot, win)
        assert win.models_state == "ready", win.messages
    finally:
        win.shutdown(60)


def test_drop_and_recent_files_open_patches(qtbot, tmp_path, cbis_folder):
    from PyQt6.QtCore import QMimeData, QPointF, QUrl
    from PyQt6.QtGui import QDropEvent

    empty = tmp_path / "no_models"
    empty.mkdir()
    win = _window(qtbot, empty)
    try:
        one = tmp_path / "one.npy"
        np.save(one, synthetic_patches(2, seed=9)[0][0])
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(one))])
        drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                          Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
        with qtbot.waitSignal(win.patchesOpened, timeout=WAIT):
            win.dropEvent(drop)
        assert win.browser.patch_model.rowCount() == 1
        # the dropped file is now the first recent file; opening the folder from the menu
        _open(qtbot, win, [cbis_folder])
        recent = [a.text() for a in win.ui.recent_menu.actions()]
        assert recent[:2] == [str(cbis_folder), str(one)]
        win.close_all()
        assert win.browser.patch_model.rowCount() == 0
        with qtbot.waitSignal(win.patchesOpened, timeout=WAIT):
            win.ui.recent_menu.actions()[1].trigger()
        assert win.browser.patch_model.rowCount() == 1
    finally:
        win.shutdown(10)


def test_switching_models_folder_reloads(qtbot, window, models_root, cbis_folder, tmp_path):
    win = window
    with qtbot.waitSignal(win.modelsLoaded, timeout=WAIT):
        win.start_models()
    _open(qtbot, win, [cbis_folder])
    _wait_ready(qtbot, win)
    only_one = tmp_path / "one_model"
    only_one.mkdir()
    shutil.copytree(models_root / "tiny_mass_calc_0", only_one / "tiny_mass_calc_0")
    from mammo_core.bundle import write_manifest

    write_manifest(only_one)
    with qtbot.waitSignal(win.modelsLoaded, timeout=WAIT) as sig:
        win.start_models(only_one)
    assert sig.args[0] == ["tiny_mass_calc_0"]
    # no ensemble: the member's own heatmap and probabilities are shown
    qtbot.waitUntil(lambda: win.browser.patch_model.prediction(win.current_entry().key) is not None,
                    timeout=WAIT)
    pred = win.browser.patch_model.prediction(win.current_entry().key)
    assert pred.ensemble is None and list(pred.per_model) == ["tiny_mass_calc_0"]
    assert "not available" in win.ui.results.ensemble_title.text()
    qtbot.waitUntil(lambda: win.shown_heat_key() is not None, timeout=WAIT)
    assert win.shown_heat_key()[1] == "tiny_mass_calc_0"


def test_error_dialog_names_the_file_and_does_not_block(qtbot, tmp_path):
    from PyQt6.QtWidgets import QMessageBox

    from app.main import build_window

    empty = tmp_path / "no_models"
    empty.mkdir()
    win = build_window(empty, interactive_dialogs=True)
    qtbot.addWidget(win)
    win.show()
    try:
        broken = tmp_path / "scan.dcm"
        broken.write_bytes(b"DICM but not really")
        with qtbot.waitSignal(win.errorShown, timeout=WAIT):
            win.open_paths([broken])
        boxes = [w for w in win.findChildren(QMessageBox) if w.isVisible()]
        assert len(boxes) == 1 and str(broken) in boxes[0].text()
        assert str(broken) in win.statusBar().currentMessage()
        boxes[0].accept()
        assert win.isVisible()
    finally:
        win.shutdown(10)
