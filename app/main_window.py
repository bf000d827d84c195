"""The viewer's main window: patch browser | tabs (Patch, Mammogram) | results.

The window composes: the shared :class:`~app.service.ModelService`, one controller per tab
(:mod:`app.controllers`), the tab widgets (:mod:`app.views`), added through
:meth:`MainWindow.add_tab`, and the widgets of :class:`~app.window_ui.WindowUi` (``self.ui``).
It routes between them (a region cut from a mammogram joins the patch list) and shows
messages; the state and work live in the controllers. Nothing here imports TensorFlow or Keras.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from PyQt6.QtCore import QSettings, Qt, pyqtSignal
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import QMainWindow, QWidget

from app.controllers.mammogram import MammogramController, Region
from app.controllers.patches import PatchController, RunAllJob
from app.controllers.study import StudyController
from app.dialogs.about import show_about
from app.dialogs.errors import ErrorReporter
from app.dialogs.open_files import ask_models_folder, ask_patch_paths
from app.dialogs.report_path import choose_report_path
from app.dialogs.shortcuts import ShortcutSheet
from app.patch_browser import PatchEntry, patch_key
from app.service import ModelService, ModelsState
from app.settings import get_list, get_str, place_splitter, push_recent, restore_window, save_window
from app.text import WINDOW_TITLE, unreadable_text
from app.views.mammogram_panel import MammogramPanel
from app.views.patch_tab import PatchTab
from app.views.study_tab import StudyTab
from app.window_ui import WindowUi
from app.workers import Worker
from mammo_core.engine import EngineSettings
from mammo_core.paths import samples_dir
from mammo_core.predictions import HeatKey

log = logging.getLogger("mammo-viewer")

OPEN_HINT = "Open patches to begin (File ▸ Open, or drop files here)"


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
        self.service = ModelService(models_dir, parent=self)
        self.controller = PatchController(service=self.service, parent=self)
        self.mammo = MammogramController(self.service, parent=self)
        self.errors = ErrorReporter(self, interactive_dialogs)
        self.errors.errorShown.connect(self.errorShown)
        self.messages = self.errors.messages  # every error/notice shown, newest last
        self._current: PatchEntry | None = None
        self._splitter_placed = False
        self._opened: list[str] = []  # paths opened, read again when the bit depth changes
        self.sheet: ShortcutSheet | None = None
        # ends with the application display name, so Qt does not append it again
        self.setWindowTitle(WINDOW_TITLE)
        self.setAcceptDrops(True)
        self.ui = WindowUi(self)
        self.browser = self.ui.browser
        self.patch_tab = PatchTab(self.controller)
        self.mammo_tab = MammogramPanel(self.mammo, settings)
        self.add_tab("Patch", self.patch_tab, {})
        self.add_tab("Mammogram", self.mammo_tab, self.mammo_tab.tab_actions())
        self.study_tab = StudyTab(StudyController(self.service, parent=self))
        self.add_tab("Study", self.study_tab, self.study_tab.tab_actions())
        self._wire()
        self._wire_actions()
        self._refresh_recent_menu()
        self._restore_settings()
        self.patch_tab.clear(OPEN_HINT)

    def add_tab(self, title: str, widget: QWidget,
                actions: Mapping[str, Sequence[QAction]]) -> int:
        """A tab in the centre; its ``actions`` go into the window's menus by key ("file":
        with the opening actions, else at the end of that menu) and work in every tab."""
        for menu, acts in actions.items():
            for a in acts:
                if menu == "file":
                    self.ui.menus[menu].insertAction(self.ui.tab_actions_before, a)
                else:
                    self.ui.menus[menu].addAction(a)
                self.addAction(a)
        return self.ui.tabs.addTab(widget, title)

    def showing(self, widget: QWidget) -> bool:
        return self.ui.tabs.currentWidget() is widget

    def _wire(self) -> None:
        ui, tab = self.ui, self.patch_tab
        b = self.browser
        b.table.currentEntryChanged.connect(self._on_current_changed)
        # after any choice in a combo box, Up/Down move through patches again
        for combo in (b.pred_filter, b.true_filter):
            combo.activated.connect(self.focus_patches)
        tab.comboChosen.connect(self.focus_patches)
        tab.heatmapShown.connect(self._on_heat_shown)
        ui.tabs.currentChanged.connect(self._on_tab_changed)
        ui.cancel_button.clicked.connect(self.cancel_run_all)
        c = self.controller
        c.modelsStateChanged.connect(self._on_models_state)
        c.loadProgress.connect(self._on_load_progress)
        c.modelsLoaded.connect(self._on_models_loaded)
        c.patchesRead.connect(self._on_patches_read)
        c.predictionsReady.connect(self._on_predictions)
        c.predictionFailed.connect(self._on_prediction_failed)
        c.runAllStarted.connect(self._on_run_all_started)
        c.runAllProgress.connect(ui.progress_area.set)
        c.runAllFinished.connect(self._on_run_all_finished)
        c.exportFinished.connect(self.exportFinished.emit)
        c.errorOccurred.connect(self.report_error)
        c.statusMessage.connect(self.status)
        m = self.mammo
        m.regionCut.connect(self._on_region)
        m.opened.connect(lambda _mammo: ui.tabs.setCurrentWidget(self.mammo_tab))
        m.errorOccurred.connect(self.report_error)
        m.statusMessage.connect(self.status)
        m.mapFailed.connect(lambda msg: self.status(f"Map failed: {msg}"))
        self.study_tab.controller.connect_messages(self.report_error, self.status)
        self.predictionShown.connect(lambda key: self.mammo_tab.show_region_heat(key, None))

    def _wire_actions(self) -> None:
        ui, tab = self.ui, self.patch_tab
        ui.act_open.triggered.connect(lambda: self.open_dialog(folder=False))
        ui.act_open_dir.triggered.connect(lambda: self.open_dialog(folder=True))
        ui.act_samples.triggered.connect(self.open_samples)
        ui.act_close_all.triggered.connect(self.close_all)
        ui.act_models_dir.triggered.connect(self.choose_models_dir)
        ui.act_export_current.triggered.connect(lambda: self.export_report("current"))
        ui.act_export_sel.triggered.connect(lambda: self.export_report("selection"))
        ui.act_export_all.triggered.connect(lambda: self.export_report("all"))
        ui.act_quit.triggered.connect(self.close)
        for bits, act in ui.bits_actions.items():
            act.triggered.connect(lambda _on, b=bits: self.set_read_bits(b))
        for name, act in ui.engine_actions.items():
            act.triggered.connect(lambda _on, n=name: self.set_engine(n, ui.act_bf16.isChecked()))
        ui.act_bf16.triggered.connect(lambda on: self.set_engine(
            next(n for n, a in ui.engine_actions.items() if a.isChecked()), on))
        ui.act_run_all.triggered.connect(self.run_all)
        ui.act_cancel.triggered.connect(self.cancel_run_all)
        ui.act_cancel.triggered.connect(self.mammo_tab.cancel_map)
        for act, check in ((ui.act_overlay, tab.overlay_check), (ui.act_side, tab.side_check),
                           (ui.act_invert, tab.invert_check)):
            act.toggled.connect(check.setChecked)
            check.toggled.connect(act.setChecked)
        ui.act_fit.triggered.connect(self.fit_current)
        ui.act_zoom_in.triggered.connect(lambda: tab.view.zoom_by(1.25))
        ui.act_zoom_out.triggered.connect(lambda: tab.view.zoom_by(0.8))
        ui.act_auto.triggered.connect(lambda: tab.auto_check.setChecked(True))
        ui.act_shortcuts.triggered.connect(self.show_shortcuts)
        ui.act_about.triggered.connect(lambda: show_about(self))

    def fit_current(self) -> None:
        """F: fit the image of the tab shown."""
        if self.showing(self.mammo_tab):
            self.mammo_tab.fit()
        else:
            self.patch_tab.view.fit()

    def _on_tab_changed(self, _index: int) -> None:
        # the mammogram gets the screen: the patch list folds away in its tab
        self.browser.setVisible(not self.showing(self.mammo_tab))

    def show_shortcuts(self) -> ShortcutSheet:
        """F1: every shortcut of the window's actions, the views' keys, the mouse."""
        self.sheet = ShortcutSheet.show_for(self.findChildren(QAction), self)
        return self.sheet

    # ================================================================== controller state
    @property
    def models_state(self) -> ModelsState:
        return self.service.state

    @property
    def models_ready(self) -> bool:
        return self.service.models_ready

    # ================================================================== settings
    def _restore_settings(self) -> None:
        bits = restore_window(self, self.patch_tab, self.settings)
        self.set_read_bits(bits if bits in self.ui.bits_actions else 16, reopen=False)
        engine = get_str(self.settings, "engine/name", "auto")
        self.set_engine(engine if engine in self.ui.engine_actions else "auto",
                        get_str(self.settings, "engine/precision", "") == "bf16")

    def set_engine(self, engine: str, bf16: bool = False) -> None:
        """Analysis > Engine: what runs the models; remembered (docs/engines.md)."""
        self.settings.setValue("engine/name", engine)
        self.settings.setValue("engine/precision", "bf16" if bf16 else "")
        self.ui.engine_actions[engine].setChecked(True)
        self.ui.act_bf16.setChecked(bf16)
        self.service.set_engine(EngineSettings(engine, "bf16" if bf16 else None))

    def save_settings(self) -> None:
        save_window(self, self.ui, self.patch_tab, self.settings)

    def showEvent(self, event):
        super().showEvent(event)
        if not self._splitter_placed:  # needs the real width, known once shown
            self._splitter_placed = True
            place_splitter(self.ui.splitter, self.settings)

    def closeEvent(self, event):
        self.cancel_run_all()
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the model thread (queued work dropped, the running call allowed to end)."""
        self.controller.shutdown(timeout)

    def _refresh_recent_menu(self) -> None:
        self.ui.fill_recent(get_list(self.settings, "recent"), lambda p: self.open_paths([p]))

    # ================================================================== messages
    def report_error(self, text: str, title: str = "Problem", details: str = "") -> None:
        """Show an error naming the file (status bar, dialog with the traceback, log)."""
        self.errors.report(text, title, details)

    def status(self, text: str, ms: int = 8000) -> None:
        self.statusBar().showMessage(text, ms)

    def _notice(self, msg: str) -> None:
        """A lasting message in the results panel and the status bar."""
        self.ui.results.show_message(msg)
        self.status(msg, 0)
        self.messages.append(msg)

    # ================================================================== models
    def start_models(self, models_dir: Path | None = None) -> None:
        """Read the bundle cards (fast, no TensorFlow) and load the models in a worker."""
        self.browser.patch_model.clear_predictions()
        self.controller.start_models(models_dir)

    def _on_models_state(self, state: ModelsState) -> None:
        self._set_model_actions(state is ModelsState.READY)
        if state is ModelsState.NONE:
            where = str(self.service.models_dir or "the bundled models folder")
            self.ui.progress_area.stop()
            self.ui.results.set_models([])
            self._notice(f"No model bundles found in {where}. Predictions and heatmaps are not "
                         "available; patches can still be viewed. Use File ▸ Choose models "
                         "folder.")
        elif state is ModelsState.LOADING:
            self.ui.results.set_models(self.service.available_models)
            self.ui.progress_area.start(0, len(self.service.available_models), "Loading models…",
                                        cancellable=False)
            self._refresh_current()
        elif state is ModelsState.FAILED:
            self.ui.progress_area.stop()
            self._notice("No model could be loaded; predictions are not available.")

    def _on_load_progress(self, done: int, total: int, name: str) -> None:
        self.ui.progress_area.start(done, total, "Loading models", cancellable=False)
        if name:
            self.status(f"Loading model {name}…", 0)

    def _on_models_loaded(self, loaded: list[str], seconds: float) -> None:
        self.ui.progress_area.stop()
        self.ui.results.set_models(self.controller.loaded_infos())
        self.patch_tab.fill_heat_models(loaded)
        self.status(f"Models ready: {', '.join(loaded)} ({seconds:.1f} s)")
        self.modelsLoaded.emit(loaded)
        self._refresh_current()

    def _set_model_actions(self, on: bool) -> None:
        for a in (self.ui.act_run_all, self.ui.act_export_current, self.ui.act_export_sel,
                  self.ui.act_export_all):
            a.setEnabled(on)

    def choose_models_dir(self) -> None:
        folder = ask_models_folder(self, str(self.service.models_dir or ""))
        if folder:
            self.start_models(Path(folder))

    # ================================================================== opening patches
    def open_dialog(self, folder: bool = False) -> None:
        paths = ask_patch_paths(self, get_str(self.settings, "last_folder"), folder)
        if paths:
            self.open_paths(paths)

    def open_samples(self) -> None:
        folder = samples_dir()
        if not folder.is_dir() or not any(folder.iterdir()):
            self.report_error(f"{folder}: no bundled sample patches here", "Samples")
            return
        self.open_paths([str(folder)], remember=False)

    def set_read_bits(self, bits: int, reopen: bool = True) -> None:
        """How many bits 16-bit PNG / TIFF / .npy files hold (16: as stored; DICOM uses its own
        BitsStored). Remembered; the open patches are read again with it (their predictions
        and heatmaps, made for the old scale, are dropped)."""
        self.settings.setValue("read/bits", int(bits))
        if int(bits) in self.ui.bits_actions:
            self.ui.bits_actions[int(bits)].setChecked(True)
        if not self.controller.set_bits(bits) or not reopen:
            return
        self.browser.patch_model.clear_predictions()
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
        added = self.browser.patch_model.add_patches(collection.patches)
        self.status(f"Opened {added} patch{'es' if added != 1 else ''}"
                    + (f"; {len(collection.errors)} file(s) could not be read"
                       if collection.errors else ""))
        if collection.errors:
            self.report_error(unreadable_text(collection.errors), "Some files could not be read")
        if not self.browser.table.currentIndex().isValid() and self.browser.proxy.rowCount() > 0:
            self.browser.table.select_row(0)
            self.browser.table.setFocus()
        self.browser.update_count()
        self.patchesOpened.emit(added)

    def close_all(self) -> None:
        self._opened = []
        self.cancel_run_all()
        self.browser.patch_model.set_patches([])
        self._current = None
        self.patch_tab.clear(OPEN_HINT)
        self.ui.results.show_message("No patch selected", "No patch selected")

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event):
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_paths(paths)
            event.acceptProposedAction()

    # ================================================================== browser
    def _on_current_changed(self, entry: PatchEntry | None) -> None:
        self._current = entry
        self._refresh_current()

    def current_entry(self) -> PatchEntry | None:
        return self._current

    def _refresh_current(self) -> None:
        entry = self._current
        if entry is None:
            return
        self.ui.results.set_patch(entry.name, entry.true_label, entry.split)
        self._show_prediction_or_request(entry)
        self.patch_tab.set_entry(entry)

    # ================================================================== predictions
    def _show_prediction_or_request(self, entry: PatchEntry) -> None:
        pred = self.controller.prediction(entry.key)
        if pred is not None:
            self.ui.results.show_prediction(pred)
            self.predictionShown.emit(entry.key)
            return
        state = self.models_state
        if state is ModelsState.READY:
            self.ui.results.show_message("Predicting…")
            self.controller.request_prediction(entry.patch)
        elif state is ModelsState.LOADING:
            self.ui.results.show_message("Loading models… the prediction follows when they are "
                                      "ready.")
        elif self.service.session is None or not self.service.available_models:
            where = self.service.models_dir or "the bundled models folder"
            self.ui.results.show_message(f"No model bundles found in {where}; predictions are "
                                      "not available.")

    def _on_predictions(self, items: dict) -> None:
        self.browser.patch_model.set_predictions(items)
        self.browser.update_count()
        entry = self._current
        if entry is not None and entry.key in items:
            self.ui.results.show_prediction(items[entry.key])
            self.predictionShown.emit(entry.key)
            self.patch_tab.render()  # the "predicted class" heatmap target is now known

    def _on_prediction_failed(self, key: str, msg: str) -> None:
        if self._current is not None and self._current.key == key:
            self.ui.results.show_message(msg)

    # ------------------------------------------------------------------ run all
    def run_all(self) -> None:
        """Predict every open patch that has no prediction yet (in the background)."""
        self.controller.run_all([e.patch for e in self.browser.patch_model.entries()])

    def _on_run_all_started(self, total: int) -> None:
        self.ui.act_run_all.setEnabled(False)
        self.ui.progress_area.start(0, total, "Predicting", cancellable=True)

    def _on_run_all_finished(self, job: RunAllJob) -> None:
        if not job.total:
            self.status("Every open patch already has a prediction.")
            self.runAllFinished.emit(0)
            return
        self.ui.progress_area.stop()
        self.ui.act_run_all.setEnabled(self.models_ready)
        word = "cancelled" if job.cancelled else "done"
        self.status(f"Run all {word}: {job.done} of {job.total} patches predicted in "
                    f"{job.seconds:.1f} s")
        self.browser.apply_filters()
        self.runAllFinished.emit(job.done)

    def cancel_run_all(self) -> None:
        if self.controller.cancel_run_all():
            self.status("Cancelling…")

    # ================================================================== heatmaps
    def shown_heat_key(self) -> HeatKey | None:
        return self.patch_tab.shown_heat_key()

    def _on_heat_shown(self, key: str) -> None:
        self.heatmapShown.emit(key)
        hk = self.patch_tab.shown_heat_key()
        cached = self.controller.heatmap(hk) if hk is not None else None
        if cached is not None:
            self.mammo_tab.show_region_heat(key, cached[0])

    # ================================================================== regions of mammograms
    def _on_region(self, region: Region) -> None:
        """A region cut from a mammogram joins the patch list and is classified there."""
        key = patch_key(region.patch)
        if self.browser.patch_model.row_of(key) is None:
            self.browser.patch_model.add_patches([region.patch])
            self.browser.update_count()
        self.browser.select_key(key)
        self.status(f"Cut {region.how}: window top {region.box.top}, left {region.box.left}, "
                    f"side {region.box.height} px -> 150 x 150 patch; classifying…")

    def focus_patches(self, *_) -> None:
        """Give the keyboard back to the patch list (after a combo box choice)."""
        self.browser.table.setFocus(Qt.FocusReason.OtherFocusReason)

    # ================================================================== export
    def export_report(self, scope: str = "current", path: str | Path | None = None,
                      fmt: str | None = None) -> Worker | None:
        """Write a PDF/CSV/JSON report of the current patch, the selection or all patches."""
        if scope == "current":
            entries = [self._current] if self._current is not None else []
        elif scope == "selection":
            entries = self.browser.table.selected_entries()
        else:
            entries = self.browser.patch_model.entries()
        problem = self.controller.export_problem(entries)
        if problem:
            self.report_error(problem, "Export")
            return None
        path = Path(path) if path is not None else choose_report_path(
            self, self.settings, "report" if scope != "current" else Path(entries[0].name).stem)
        if path is None:
            return None
        fmt = (fmt or path.suffix.lstrip(".") or "pdf").lower()
        hk = self.patch_tab.shown_heat_key()
        shown = None if self._current is None or hk is None else (self._current.patch, hk)
        return self.controller.export([e.patch for e in entries], path, fmt, shown)

__all__ = ["MainWindow"]
