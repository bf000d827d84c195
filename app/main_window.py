"""The viewer's main window: patch browser | large patch view with Grad-CAM | results.

The window holds widgets, actions, settings and rendering; the session, the model thread, the
prediction and heatmap caches, the run-all job and export live in
:class:`~app.controller.ViewerController`, whose signals the window observes. Nothing here
imports TensorFlow or Keras.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QSettings, Qt, pyqtSignal
from PyQt6.QtWidgets import QFileDialog, QMainWindow, QMessageBox

from app import imaging
from app.controller import ModelsState, RunAllJob, ViewerController
from app.mammogram_view import MammogramTab
from app.patch_browser import PatchEntry, patch_key
from app.settings import get_list, get_str, push_recent, restore_window, save_window
from app.text import WINDOW_TITLE, class_label
from app.window_ui import (
    METHODS,
    ask_report_path,
    build_actions,
    build_ui,
    connect_widgets,
    error_box,
    fill_heat_models,
    fill_targets,
)
from app.workers import Worker
from mammo_core.engine import EngineSettings
from mammo_core.explain import tissue_mask
from mammo_core.paths import samples_dir
from mammo_core.predictions import HeatKey

log = logging.getLogger("mammo-viewer")

FILE_FILTER = ("Patches (*.npy *.png *.tif *.tiff *.jpg *.jpeg *.pgm *.pnm *.dcm *.dicom);;"
               "All files (*)")


class MainWindow(QMainWindow):
    """The viewer. ``open_paths`` / ``start_models`` drive it; signals report what is shown."""

    patchesOpened = pyqtSignal(int)  # number of patches added
    modelsLoaded = pyqtSignal(list)  # names loaded
    predictionShown = pyqtSignal(str)  # key of the patch whose results are on screen
    heatmapShown = pyqtSignal(str)  # key of the patch whose heatmap is on screen
    runAllFinished = pyqtSignal(int)  # patches predicted
    exportFinished = pyqtSignal(str)  # path written
    errorShown = pyqtSignal(str)  # the message shown
    mammogramsOpened = pyqtSignal(list)  # paths opened as whole mammograms, not patches

    def __init__(self, settings: QSettings, models_dir: Path | None = None,
                 interactive_dialogs: bool = True):
        super().__init__()
        self.settings = settings
        self.interactive_dialogs = interactive_dialogs  # False: errors only in status/log
        self.controller = ViewerController(models_dir, parent=self)
        self.messages: list[str] = []  # every error/notice shown, newest last
        self._unit_cache: dict[str, np.ndarray] = {}
        self._window = imaging.Window()
        self._current: PatchEntry | None = None
        self._shown_heat_key: HeatKey | None = None
        self._error_box: QMessageBox | None = None
        self._splitter_placed = False
        self._opened: list[str] = []  # paths opened, read again when the bit depth changes

        # ends with the application display name, so Qt does not append it again
        self.setWindowTitle(WINDOW_TITLE)
        self.setAcceptDrops(True)
        build_ui(self)
        self._wire()
        build_actions(self)
        self.mammo = MammogramTab(self)  # whole mammograms: a tab beside the patch view
        self._restore_settings()
        self.view.set_message("Open patches to begin (File ▸ Open, or drop files here)")

    def _wire(self) -> None:
        connect_widgets(self)
        c = self.controller
        c.modelsStateChanged.connect(self._on_models_state)
        c.loadProgress.connect(self._on_load_progress)
        c.modelsLoaded.connect(self._on_models_loaded)
        c.patchesRead.connect(self._on_patches_read)
        c.predictionsReady.connect(self._on_predictions)
        c.predictionFailed.connect(self._on_prediction_failed)
        c.heatmapReady.connect(self._on_heatmap)
        c.heatmapFailed.connect(lambda _key, msg: self.heat_status.setText(msg))
        c.runAllStarted.connect(self._on_run_all_started)
        c.runAllProgress.connect(self.progress_area.set)
        c.runAllFinished.connect(self._on_run_all_finished)
        c.exportFinished.connect(self.exportFinished.emit)
        c.errorOccurred.connect(self.report_error)
        c.statusMessage.connect(self.status)

    # ================================================================== controller state
    @property
    def session(self):
        return self.controller.session

    @property
    def models_dir(self) -> Path | None:
        return self.controller.models_dir

    @property
    def models_state(self) -> ModelsState:
        return self.controller.state

    @property
    def models_ready(self) -> bool:
        return self.controller.models_ready

    @property
    def run_all_chunk(self) -> int:
        return self.controller.run_all_chunk

    @run_all_chunk.setter
    def run_all_chunk(self, n: int) -> None:
        self.controller.run_all_chunk = n

    # ================================================================== settings
    def _restore_settings(self) -> None:
        self._preferred_model = restore_window(self, self.settings)

    def save_settings(self) -> None:
        save_window(self, self.settings)

    def showEvent(self, event):
        super().showEvent(event)
        if not self._splitter_placed:  # needs the real width, known once shown
            self._splitter_placed = True
            state = self.settings.value("window/splitter")
            if state is None or not self.splitter.restoreState(state):
                total = max(self.splitter.width(), 1000)
                left, right = int(total * 0.27), int(total * 0.27)
                self.splitter.setSizes([left, total - left - right, right])

    def closeEvent(self, event):
        self.cancel_run_all()
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the model thread (queued work dropped, the running call allowed to end)."""
        self.controller.shutdown(timeout)

    def busy(self) -> bool:
        return self.controller.busy()

    def _refresh_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = get_list(self.settings, "recent")
        for path in recent:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.open_paths([p]))
        self.recent_menu.setEnabled(bool(recent))

    # ================================================================== messages
    def report_error(self, text: str, title: str = "Problem", details: str = "") -> None:
        """Show an error naming the file: status bar + (non-blocking) dialog with the traceback
        under "Show Details…" when there is one; logged (traceback too); never raises."""
        self.messages.append(text)
        log.warning("%s", text, extra={"details": details})
        lines = [ln for ln in text.splitlines() if ln.strip()]
        summary = lines[0].rstrip(":") + (f": {lines[1]}" if len(lines) > 1 else "")
        if len(lines) > 2:
            summary += f" (+{len(lines) - 2} more)"
        self.statusBar().showMessage(summary, 20000)
        if self.interactive_dialogs:
            if self._error_box is not None:
                self._error_box.close()
            self._error_box = error_box(self, title, text, details)
        self.errorShown.emit(text)

    def status(self, text: str, ms: int = 8000) -> None:
        self.statusBar().showMessage(text, ms)

    def _notice(self, msg: str) -> None:
        """A lasting message in the results panel and the status bar."""
        self.results.show_message(msg)
        self.status(msg, 0)
        self.messages.append(msg)

    # ================================================================== models
    def start_models(self, models_dir: Path | None = None) -> None:
        """Read the bundle cards (fast, no TensorFlow) and load the models in a worker."""
        self.patch_model.clear_predictions()
        self.controller.start_models(models_dir)

    def _on_models_state(self, state: ModelsState) -> None:
        self._set_model_actions(state is ModelsState.READY)
        if state is ModelsState.NONE:
            where = str(self.models_dir) if self.models_dir else "the bundled models folder"
            self.progress_area.stop()
            self.results.set_models([])
            self._notice(f"No model bundles found in {where}. Predictions and heatmaps are not "
                         "available; patches can still be viewed. Use File ▸ Choose models "
                         "folder.")
        elif state is ModelsState.LOADING:
            self.results.set_models(self.controller.available_models)
            self.progress_area.start(0, len(self.controller.available_models), "Loading models…",
                                cancellable=False)
            self._refresh_current()
        elif state is ModelsState.FAILED:
            self.progress_area.stop()
            self._notice("No model could be loaded; predictions are not available.")

    def _on_load_progress(self, done: int, total: int, name: str) -> None:
        self.progress_area.start(done, total, "Loading models", cancellable=False)
        if name:
            self.status(f"Loading model {name}…", 0)

    def _on_models_loaded(self, loaded: list[str], seconds: float) -> None:
        self.progress_area.stop()
        self.results.set_models(self.controller.loaded_infos())
        self._fill_heat_models(loaded)
        self.status(f"Models ready: {', '.join(loaded)} ({seconds:.1f} s)")
        self.modelsLoaded.emit(loaded)
        self._refresh_current()

    def _set_model_actions(self, on: bool) -> None:
        for a in (self.act_run_all, self.act_export_current, self.act_export_sel,
                  self.act_export_all):
            a.setEnabled(on)

    def _fill_heat_models(self, loaded: Sequence[str]) -> None:
        fill_heat_models(self.heat_model, loaded, self._preferred_model)
        self._fill_targets()

    def classes_of(self, model: str) -> tuple[str, ...]:
        return self.controller.classes_of(model)

    def _fill_targets(self) -> None:
        model = self.heat_model.currentData()
        fill_targets(self.target_combo, self.classes_of(model) if model else ())

    def choose_models_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Models folder", str(self.models_dir or ""))
        if folder:
            self.start_models(Path(folder))

    # ================================================================== opening patches
    def open_files_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open patches",
                                                get_str(self.settings, "last_folder"), FILE_FILTER)
        if files:
            self.open_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open folder of patches",
                                                  get_str(self.settings, "last_folder"))
        if folder:
            self.open_paths([folder])

    def open_samples(self) -> None:
        folder = samples_dir()
        if not folder.is_dir() or not any(folder.iterdir()):
            self.report_error(f"{folder}: no bundled sample patches here", "Samples")
            return
        self.open_paths([str(folder)], remember=False)

    def set_engine(self, engine: str, bf16: bool = False) -> None:
        """What runs the models (Analysis > Engine: auto / keras / openvino, bf16 or f32);
        remembered. Predictions made with the previous setting are dropped; reports name the
        engine and precision that computed theirs."""
        self.settings.setValue("engine/name", engine)
        self.settings.setValue("engine/precision", "bf16" if bf16 else "")
        self.engine_actions[engine].setChecked(True)
        self.act_bf16.setChecked(bf16)
        if self.controller.set_engine(EngineSettings(engine, "bf16" if bf16 else None)):
            self.patch_model.clear_predictions()

    def set_read_bits(self, bits: int, reopen: bool = True) -> None:
        """How many bits 16-bit PNG / TIFF / .npy files hold (16: as stored; DICOM uses its own
        BitsStored). Remembered; the open patches are read again with it (their predictions
        and heatmaps, made for the old scale, are dropped)."""
        self.settings.setValue("read/bits", int(bits))
        if int(bits) in self.bits_actions:
            self.bits_actions[int(bits)].setChecked(True)
        if not self.controller.set_bits(bits) or not reopen:
            return
        self.patch_model.clear_predictions()
        self.status(f"16-bit PNG/TIFF/npy files are read as {bits}-bit"
                    + (" (as stored)" if bits == 16 else f" (scaled by {(1 << bits) - 1})"))
        paths = list(self._opened)
        if paths:
            self.close_all()
            self.open_paths(paths, remember=False)

    def open_paths(self, paths: Sequence[str | Path], remember: bool = True) -> Worker:
        """Read files/folders/stacked arrays in a worker; add what loads, report what fails."""
        paths = [str(p) for p in paths]
        self._opened.extend(p for p in paths if p not in self._opened)
        if remember:
            for p in paths:
                push_recent(self.settings, p)
            first = Path(paths[0]) if paths else None
            if first is not None:
                self.settings.setValue("last_folder",
                                       str(first if first.is_dir() else first.parent))
            self._refresh_recent_menu()
        self.status(f"Reading {', '.join(Path(p).name for p in paths)}…", 0)
        return self.controller.read(paths)

    def _on_patches_read(self, collection) -> None:
        # images far larger than a patch are never shrunk to one: they open as mammograms
        whole = [e for e in collection.errors if getattr(e, "whole_image", False)]
        if whole:
            collection.errors = [e for e in collection.errors if e not in whole]
            for e in whole:
                self.mammo.open_path(e.source)
            self.mammogramsOpened.emit([e.source for e in whole])
        added = self.patch_model.add_patches(collection.patches)
        self.status(f"Opened {added} patch{'es' if added != 1 else ''}"
                    + (f"; {len(collection.errors)} file(s) could not be read"
                       if collection.errors else ""))
        if collection.errors:
            lines = [str(f) for f in collection.errors[:12]]
            more = len(collection.errors) - len(lines)
            text = (f"{len(collection.errors)} file(s) could not be read:\n" + "\n".join(lines)
                    + (f"\n… and {more} more" if more > 0 else ""))
            self.report_error(text, "Some files could not be read")
        if not self.table.currentIndex().isValid() and self.proxy.rowCount() > 0:
            self.table.select_row(0)
            self.table.setFocus()
        self._update_count()
        self.patchesOpened.emit(added)

    def close_all(self) -> None:
        self._opened = []
        self.cancel_run_all()
        self.patch_model.set_patches([])
        self._unit_cache.clear()
        self._current = None
        self.view.set_message("Open patches to begin (File ▸ Open, or drop files here)")
        self.results.show_message("No patch selected", "No patch selected")

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event):
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_paths(paths)
            event.acceptProposedAction()

    # ================================================================== browser
    def _on_filter_changed(self, *_):
        self.proxy.set_text_filter(self.search_edit.text())
        self.proxy.set_predicted_filter(self.pred_filter.currentData() or "")
        self.proxy.set_true_filter(self.true_filter.currentData() or "")
        self.proxy.set_uncertain_only(self.uncertain_only.isChecked())
        self._update_count()

    def _update_count(self, *_):
        total = self.patch_model.rowCount()
        shown = self.proxy.rowCount()
        done = sum(1 for e in self.patch_model.entries()
                   if self.patch_model.prediction(e.key) is not None) if total < 20000 else 0
        txt = f"{shown} of {total} patches shown" if shown != total else f"{total} patches"
        if total:
            txt += f" · {done} predicted"
        self.count_label.setText(txt)

    def _on_current_changed(self, entry: PatchEntry | None) -> None:
        self._current = entry
        self._refresh_current()

    def current_entry(self) -> PatchEntry | None:
        return self._current

    def _refresh_current(self) -> None:
        entry = self._current
        if entry is None:
            return
        self.results.set_patch(entry.name, entry.true_label, entry.split)
        if self.auto_check.isChecked():
            self._set_window(imaging.auto_window(self._unit(entry)), keep_invert=True)
        self._show_prediction_or_request(entry)
        self.render()

    def _unit(self, entry: PatchEntry) -> np.ndarray:
        u = self._unit_cache.get(entry.key)
        if u is None:
            u = imaging.to_unit(entry.patch)  # the patch's own bit depth, as the models
            if len(self._unit_cache) > 512:
                self._unit_cache.clear()
            self._unit_cache[entry.key] = u
        return u

    # ================================================================== predictions
    def _show_prediction_or_request(self, entry: PatchEntry) -> None:
        pred = self.controller.prediction(entry.key)
        if pred is not None:
            self.results.show_prediction(pred)
            self.predictionShown.emit(entry.key)
            return
        state = self.models_state
        if state is ModelsState.READY:
            self.results.show_message("Predicting…")
            self.controller.request_prediction(entry.patch)
        elif state is ModelsState.LOADING:
            self.results.show_message("Loading models… the prediction follows when they are "
                                      "ready.")
        elif self.session is None or not self.controller.available_models:
            where = self.models_dir or "the bundled models folder"
            self.results.show_message(f"No model bundles found in {where}; predictions are "
                                      "not available.")

    def _on_predictions(self, items: dict) -> None:
        self.patch_model.set_predictions(items)
        self._update_count()
        entry = self._current
        if entry is not None and entry.key in items:
            self.results.show_prediction(items[entry.key])
            self.predictionShown.emit(entry.key)
            self.render()  # the "predicted class" heatmap target is now known

    def _on_prediction_failed(self, key: str, msg: str) -> None:
        if self._current is not None and self._current.key == key:
            self.results.show_message(msg)

    # ------------------------------------------------------------------ run all
    def run_all(self) -> None:
        """Predict every open patch that has no prediction yet (in the background)."""
        self.controller.run_all([e.patch for e in self.patch_model.entries()])

    def _on_run_all_started(self, total: int) -> None:
        self.act_run_all.setEnabled(False)
        self.progress_area.start(0, total, "Predicting", cancellable=True)

    def _on_run_all_finished(self, job: RunAllJob) -> None:
        if not job.total:
            self.status("Every open patch already has a prediction.")
            self.runAllFinished.emit(0)
            return
        self.progress_area.stop()
        self.act_run_all.setEnabled(self.models_ready)
        word = "cancelled" if job.cancelled else "done"
        self.status(f"Run all {word}: {job.done} of {job.total} patches predicted in "
                    f"{job.seconds:.1f} s")
        self._on_filter_changed()
        self.runAllFinished.emit(job.done)

    def cancel_run_all(self) -> None:
        if self.controller.cancel_run_all():
            self.status("Cancelling…")

    def run_all_active(self) -> bool:
        return self.controller.run_all_active()

    # ================================================================== heatmaps
    def heat_request(self) -> HeatKey | None:
        """The heatmap the controls ask for (sha256, model, method, target), or None."""
        entry = self._current
        if entry is None or not self.overlay_check.isChecked():
            return None
        return self.controller.heat_key(entry.patch, self.heat_model.currentData(),
                                        self.method_combo.currentData(),
                                        self.target_combo.currentData())

    def _on_heatmap(self, key: HeatKey) -> None:
        if self.heat_request() == key:
            self.render()

    def heatmap_cached(self, key: HeatKey) -> bool:
        return self.controller.heatmap(key) is not None

    # ================================================================== rendering
    def _set_window(self, window: imaging.Window, keep_invert: bool = False) -> None:
        invert = self.invert_check.isChecked() if keep_invert else window.invert
        self._window = imaging.Window(window.center, window.width, invert)
        for sl, val in ((self.level_slider, window.center), (self.width_slider, window.width)):
            sl.blockSignals(True)
            sl.setValue(round(val * 1000))
            sl.blockSignals(False)

    def _on_window_slider(self, *_):
        self.auto_check.blockSignals(True)
        self.auto_check.setChecked(False)
        self.auto_check.blockSignals(False)
        self._window = imaging.Window(self.level_slider.value() / 1000.0,
                                      max(self.width_slider.value(), 1) / 1000.0,
                                      self.invert_check.isChecked())
        self.render()

    def _on_auto_toggled(self, on: bool) -> None:
        if on and self._current is not None:
            self._set_window(imaging.auto_window(self._unit(self._current)), keep_invert=True)
        elif on:
            return
        self.render()

    def _on_invert_toggled(self, on: bool) -> None:
        self._window = imaging.Window(self._window.center, self._window.width, on)
        self.render()

    def _on_opacity_changed(self, *_):
        self.render()

    def _on_heat_model_changed(self, *_):
        self._fill_targets()
        self.render()

    def _on_overlay_changed(self, *_):
        self.render()

    def toggle_overlay(self) -> None:
        self.overlay_check.setChecked(not self.overlay_check.isChecked())

    def render(self) -> None:
        """Redraw the current patch with the window, invert, overlay and layout chosen."""
        entry = self._current
        if entry is None:
            return
        grey = imaging.apply_window(self._unit(entry), self._window)
        images = [("Original", imaging.to_qimage(grey))]
        self._shown_heat_key = None
        wanted = None
        if not self.overlay_check.isChecked():
            self.heat_status.setText("Grad-CAM overlay off (press G to show it)")
        elif not self.models_ready:
            self.heat_status.setText("Grad-CAM: waiting for the models")
        else:
            key = self.heat_request()
            cached = self.controller.heatmap(key) if key is not None else None
            if key is None:
                self.heat_status.setText("Grad-CAM: waiting for the prediction…")
            elif cached is not None:
                # the background (below the tissue threshold) is not part of the map
                mask = tissue_mask(self._unit(entry))
                over = imaging.blend(grey, cached[1], self.opacity.value() / 100.0, mask)
                caption = (f"Grad-CAM{'++' if key.method == 'gradcam++' else ''} · "
                           f"{self.heat_model.currentText()} · {class_label(key.target)}")
                over_img = imaging.to_qimage(over)
                images = ([images[0], (caption, over_img)] if self.side_check.isChecked()
                          else [(caption, over_img)])
                self._shown_heat_key = key
                self.heat_status.setText(
                    f"Heatmap: {self.method_combo.currentText()} of "
                    f"{self.heat_model.currentText()} for “{class_label(key.target)}” — red = "
                    "regions that raised this class's score most (scaled per patch; "
                    "background not coloured)")
            else:
                self.heat_status.setText("Grad-CAM: computing…")
                wanted = key
        self.colour_bar.setVisible(self._shown_heat_key is not None)
        self.controller.want_heatmap(entry.patch, wanted)  # anything else queued is dropped
        self.view.set_images(images)
        if self._shown_heat_key is not None:
            self.heatmapShown.emit(entry.key)

    def focus_patches(self, *_) -> None:
        """Give the keyboard back to the patch list (after a combo box choice)."""
        self.table.setFocus(Qt.FocusReason.OtherFocusReason)

    def shown_heat_key(self) -> HeatKey | None:
        return self._shown_heat_key

    # ================================================================== export
    def export_report(self, scope: str = "current", path: str | Path | None = None,
                      fmt: str | None = None) -> Worker | None:
        """Write a PDF/CSV/JSON report of the current patch, the selection or all patches."""
        if scope == "current":
            entries = [self._current] if self._current is not None else []
        elif scope == "selection":
            entries = self.table.selected_entries()
        else:
            entries = self.patch_model.entries()
        problem = self.controller.export_problem(entries)
        if problem:
            self.report_error(problem, "Export")
            return None
        if path is None:
            start = Path(get_str(self.settings, "last_export_folder",
                                 get_str(self.settings, "last_folder", str(Path.home()))))
            path = ask_report_path(self, start / ("report.pdf" if scope != "current" else
                                                  f"{Path(entries[0].name).stem}_report.pdf"))
            if path is None:
                return None
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".") or "pdf").lower()
        self.settings.setValue("last_export_folder", str(path.parent))
        shown = (None if self._current is None or self._shown_heat_key is None
                 else (self._current.patch, self._shown_heat_key))
        return self.controller.export([e.patch for e in entries], path, fmt, shown)

    # ================================================================== helpers for tests
    def select_index(self, row: int) -> None:
        self.table.select_row(row)

    def select_key(self, key: str) -> bool:
        row = self.patch_model.row_of(key)
        if row is None:
            return False
        idx = self.proxy.mapFromSource(self.patch_model.index(row, 0))
        if not idx.isValid():
            return False
        self.table.select_row(idx.row())
        return True


__all__ = ["METHODS", "MainWindow", "patch_key"]
