"""The viewer's main window: patch browser | large patch view with Grad-CAM | results.

All model work goes through ``mammo_core.session.Session`` in :class:`~app.workers.Worker`\\ s on
a one-thread pool (TensorFlow models are not shared between threads); reading files and
writing reports run on the global pool. Results and heatmaps are cached, so going back to a
patch is instant. Nothing here imports TensorFlow or Keras.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PyQt6.QtCore import QSettings, Qt, QThreadPool, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import imaging
from app.image_view import ImageView
from app.patch_browser import (
    PatchEntry,
    PatchFilterProxy,
    PatchTableModel,
    PatchTableView,
    patch_key,
)
from app.results_panel import ResultsPanel
from app.settings import get_bool, get_float, get_list, get_str, push_recent
from app.text import NOTICE, class_label
from app.workers import SerialExecutor, Worker

INTERACTIVE = 10  # worker priority of what the user is looking at
BACKGROUND = 0  # run-all chunks
RUN_ALL_CHUNK = 32
METHODS = (("Grad-CAM", "gradcam"), ("Grad-CAM++", "gradcam++"))
FILE_FILTER = ("Patches (*.npy *.png *.tif *.tiff *.jpg *.jpeg *.pgm *.pnm *.dcm *.dicom);;"
               "All files (*)")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    return msg or type(exc).__name__


class MainWindow(QMainWindow):
    """The viewer. ``open_paths`` / ``start_models`` drive it; signals report what is shown."""

    patchesOpened = pyqtSignal(int)  # number of patches added
    modelsLoaded = pyqtSignal(list)  # names loaded
    predictionShown = pyqtSignal(str)  # key of the patch whose results are on screen
    heatmapShown = pyqtSignal(str)  # key of the patch whose heatmap is on screen
    runAllFinished = pyqtSignal(int)  # patches predicted
    exportFinished = pyqtSignal(str)  # path written
    errorShown = pyqtSignal(str)  # the message shown

    def __init__(self, settings: QSettings, models_dir: Path | None = None,
                 interactive_dialogs: bool = True):
        super().__init__()
        self.settings = settings
        self.interactive_dialogs = interactive_dialogs  # False: errors only in status/log
        self.models_dir = Path(models_dir) if models_dir else None
        self.session = None
        self.models_ready = False
        self.models_loading = False
        self.models_state = "idle"  # idle / loading / ready / none / failed
        self.available_models: list[Any] = []
        self.messages: list[str] = []  # every error/notice shown, newest last
        self._model_pool = SerialExecutor()  # every TensorFlow call, one thread
        self._io_pool = QThreadPool.globalInstance()
        self._unit_cache: dict[str, np.ndarray] = {}
        self._heat_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._pending_pred: set[str] = set()
        self._pending_heat: set[tuple] = set()
        self._run_all: dict | None = None
        self.run_all_chunk = RUN_ALL_CHUNK
        self._window = imaging.Window()
        self._current: PatchEntry | None = None
        self._shown_heat_key: tuple | None = None
        self._wanted_heat: tuple | None = None  # read by the model thread to skip stale work
        self.timings: dict[str, float] = {}
        self._error_box: QMessageBox | None = None
        self._splitter_placed = False
        self._generation = 0  # bumped when the models change; older results are dropped

        self.setWindowTitle("Mammogram patch viewer — research use only")
        self.setAcceptDrops(True)
        self._build_ui()
        self._build_actions()
        self._restore_settings()
        self.view.set_message("Open patches to begin (File ▸ Open, or drop files here)")

    # ================================================================== UI construction
    def _build_ui(self) -> None:
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.banner = QLabel(f"\u26a0  {NOTICE}. Predictions must not be used for diagnosis.")
        self.banner.setObjectName("banner")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        outer.addWidget(self.banner)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        # --- left: browser with filters
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(8, 8, 4, 8)
        lv.setSpacing(4)
        self.browser_title = QLabel("Patches")
        self.browser_title.setObjectName("sectionTitle")
        lv.addWidget(self.browser_title)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Filter by name…")
        self.search_edit.setClearButtonEnabled(True)
        lv.addWidget(self.search_edit)
        frow = QHBoxLayout()
        self.pred_filter = QComboBox()
        self.pred_filter.setToolTip("Show only patches predicted as this class")
        self.true_filter = QComboBox()
        self.true_filter.setToolTip("Show only patches with this true label (patch arrays)")
        self.uncertain_only = QCheckBox("Uncertain")
        self.uncertain_only.setToolTip("Show only patches flagged: models disagree")
        from mammo_core.labels import CLASS_NAMES

        self.pred_filter.addItem("Any prediction", "")
        self.true_filter.addItem("Any true label", "")
        for name in CLASS_NAMES:
            self.pred_filter.addItem(class_label(name), name)
            self.true_filter.addItem(class_label(name), name)
        self.true_filter.addItem("Unknown", "unknown")
        for combo in (self.pred_filter, self.true_filter):
            combo.setMinimumContentsLength(6)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        frow.addWidget(self.pred_filter, 1)
        frow.addWidget(self.true_filter, 1)
        lv.addLayout(frow)
        lv.addWidget(self.uncertain_only)

        self.patch_model = PatchTableModel(self)
        self.proxy = PatchFilterProxy(self)
        self.proxy.setSourceModel(self.patch_model)
        self.table = PatchTableView()
        self.table.setModel(self.proxy)
        lv.addWidget(self.table, 1)
        self.count_label = QLabel("")
        self.count_label.setObjectName("dim")
        lv.addWidget(self.count_label)
        self.splitter.addWidget(left)

        # --- centre: controls + image
        centre = QWidget()
        cv = QVBoxLayout(centre)
        cv.setContentsMargins(4, 8, 4, 8)
        cv.setSpacing(4)
        row1 = QHBoxLayout()
        self.overlay_check = QCheckBox("Grad-CAM (G)")
        self.overlay_check.setToolTip("Show where the model looked (Grad-CAM heatmap)")
        self.side_check = QCheckBox("Side by side (S)")
        self.side_check.setToolTip("Original and overlay next to each other")
        self.heat_model = QComboBox()
        self.heat_model.setToolTip("Heatmap of the ensemble or of one member model")
        self.heat_model.setMinimumContentsLength(8)
        self.heat_model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method_combo = QComboBox()
        for label, value in METHODS:
            self.method_combo.addItem(label, value)
        self.target_combo = QComboBox()
        self.target_combo.setToolTip("Class the heatmap explains")
        self.target_combo.setMinimumContentsLength(10)
        self.target_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setMinimumWidth(60)
        self.opacity.setToolTip("Overlay opacity")
        row1.addWidget(self.overlay_check)
        row1.addWidget(self.side_check)
        row1.addSpacing(8)
        row1.addWidget(QLabel("Opacity"))
        row1.addWidget(self.opacity, 1)
        cv.addLayout(row1)
        row1 = QHBoxLayout()
        row1.addWidget(QLabel("Model"))
        row1.addWidget(self.heat_model, 1)
        row1.addWidget(self.method_combo)
        row1.addWidget(QLabel("Target"))
        row1.addWidget(self.target_combo, 1)
        cv.addLayout(row1)

        row2 = QHBoxLayout()
        self.level_slider = QSlider(Qt.Orientation.Horizontal)
        self.level_slider.setRange(0, 1000)
        self.level_slider.setToolTip("Level: centre of the displayed intensity range")
        self.width_slider = QSlider(Qt.Orientation.Horizontal)
        self.width_slider.setRange(1, 1000)
        self.width_slider.setToolTip("Window: width of the displayed intensity range (contrast)")
        self.auto_check = QCheckBox("Auto")
        self.auto_check.setToolTip("Auto contrast: window each patch to its own 0.5–99.5 % "
                                   "intensity range (A)")
        self.invert_check = QCheckBox("Invert (I)")
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit (F)")
        self.actual_button = QToolButton()
        self.actual_button.setText("1:1")
        self.actual_button.setToolTip("Actual pixels (one image pixel per screen pixel)")
        self.zoom_label = QLabel("")
        self.zoom_label.setObjectName("dim")
        self.zoom_label.setMinimumWidth(44)
        row2.addWidget(QLabel("Window"))
        row2.addWidget(self.width_slider, 1)
        row2.addWidget(QLabel("Level"))
        row2.addWidget(self.level_slider, 1)
        row2.addWidget(self.auto_check)
        row2.addWidget(self.invert_check)
        row2.addWidget(self.fit_button)
        row2.addWidget(self.actual_button)
        row2.addWidget(self.zoom_label)
        cv.addLayout(row2)
        for sl in (self.opacity, self.width_slider, self.level_slider):
            sl.setMinimumWidth(40)

        self.view = ImageView()
        self.view.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # arrows stay with the browser
        cv.addWidget(self.view, 1)
        self.heat_status = QLabel("")
        self.heat_status.setObjectName("dim")
        self.heat_status.setWordWrap(True)  # long texts must not widen the centre column
        self.heat_status.setMinimumWidth(50)
        cv.addWidget(self.heat_status)
        self.splitter.addWidget(centre)

        # --- right: results
        self.results = ResultsPanel()
        self.splitter.addWidget(self.results)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([370, 650, 380])

        # --- status bar: message | progress + cancel | notice
        sb = self.statusBar()
        self.progress = QProgressBar()
        self.progress.setFixedWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel_run_all)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)
        self.status_notice = QLabel(NOTICE)
        self.status_notice.setObjectName("statusNotice")
        sb.addPermanentWidget(self.status_notice)

        # --- wiring
        self.table.currentEntryChanged.connect(self._on_current_changed)
        self.search_edit.textChanged.connect(self._on_filter_changed)
        self.pred_filter.currentIndexChanged.connect(self._on_filter_changed)
        self.true_filter.currentIndexChanged.connect(self._on_filter_changed)
        self.uncertain_only.toggled.connect(self._on_filter_changed)
        self.overlay_check.toggled.connect(self._on_overlay_changed)
        self.side_check.toggled.connect(self._on_overlay_changed)
        self.heat_model.currentIndexChanged.connect(self._on_heat_model_changed)
        self.method_combo.currentIndexChanged.connect(self._on_overlay_changed)
        self.target_combo.currentIndexChanged.connect(self._on_overlay_changed)
        self.opacity.valueChanged.connect(self._on_opacity_changed)
        self.level_slider.valueChanged.connect(self._on_window_slider)
        self.width_slider.valueChanged.connect(self._on_window_slider)
        self.auto_check.toggled.connect(self._on_auto_toggled)
        self.invert_check.toggled.connect(self._on_invert_toggled)
        self.fit_button.clicked.connect(self.view.fit)
        self.actual_button.clicked.connect(self.view.actual_size)
        self.view.zoomChanged.connect(lambda z: self.zoom_label.setText(f"{100 * z:.0f}%"))
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.rowsRemoved.connect(self._update_count)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)

    def _build_actions(self) -> None:
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        self.act_open = QAction("&Open files…", self, shortcut=QKeySequence.StandardKey.Open)
        self.act_open.triggered.connect(self.open_files_dialog)
        self.act_open_dir = QAction("Open &folder…", self, shortcut="Ctrl+Shift+O")
        self.act_open_dir.triggered.connect(self.open_folder_dialog)
        self.recent_menu = fm.addMenu("Open &recent")
        self.act_samples = QAction("Open &sample patches", self)
        self.act_samples.triggered.connect(self.open_samples)
        self.act_close_all = QAction("&Close all patches", self)
        self.act_close_all.triggered.connect(self.close_all)
        self.act_models_dir = QAction("Choose &models folder…", self)
        self.act_models_dir.triggered.connect(self.choose_models_dir)
        self.act_export_current = QAction("Export report…", self,
                                          shortcut="Ctrl+E")
        self.act_export_current.triggered.connect(lambda: self.export_report("current"))
        self.act_export_sel = QAction("Export report: &selection…", self)
        self.act_export_sel.triggered.connect(lambda: self.export_report("selection"))
        self.act_export_all = QAction("Export report: &all patches…", self)
        self.act_export_all.triggered.connect(lambda: self.export_report("all"))
        self.act_quit = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        self.act_quit.triggered.connect(self.close)
        fm.insertAction(self.recent_menu.menuAction(), self.act_open)
        fm.insertAction(self.recent_menu.menuAction(), self.act_open_dir)
        fm.addAction(self.act_samples)
        fm.addAction(self.act_close_all)
        fm.addSeparator()
        fm.addAction(self.act_models_dir)
        fm.addSeparator()
        fm.addAction(self.act_export_current)
        fm.addAction(self.act_export_sel)
        fm.addAction(self.act_export_all)
        fm.addSeparator()
        fm.addAction(self.act_quit)

        am = mb.addMenu("&Analysis")
        self.act_run_all = QAction("&Run all", self, shortcut="Ctrl+R")
        self.act_run_all.triggered.connect(self.run_all)
        self.act_cancel = QAction("&Cancel", self, shortcut="Esc")
        self.act_cancel.triggered.connect(self.cancel_run_all)
        self.act_run_all.setToolTip("Predict every open patch (Ctrl+R)")
        am.addAction(self.act_run_all)
        am.addAction(self.act_cancel)

        vm = mb.addMenu("&View")
        self.act_overlay = QAction("Grad-CAM &overlay", self, shortcut="G", checkable=True)
        self.act_overlay.toggled.connect(self.overlay_check.setChecked)
        self.overlay_check.toggled.connect(self.act_overlay.setChecked)
        self.act_side = QAction("&Side by side", self, shortcut="S", checkable=True)
        self.act_side.toggled.connect(self.side_check.setChecked)
        self.side_check.toggled.connect(self.act_side.setChecked)
        self.act_invert = QAction("&Invert", self, shortcut="I", checkable=True)
        self.act_invert.toggled.connect(self.invert_check.setChecked)
        self.invert_check.toggled.connect(self.act_invert.setChecked)
        self.act_fit = QAction("&Fit to window", self, shortcut="F")
        self.act_fit.triggered.connect(self.view.fit)
        self.act_zoom_in = QAction("Zoom &in", self, shortcut=QKeySequence.StandardKey.ZoomIn)
        self.act_zoom_in.triggered.connect(lambda: self.view.zoom_by(1.25))
        self.act_zoom_out = QAction("Zoom &out", self, shortcut=QKeySequence.StandardKey.ZoomOut)
        self.act_zoom_out.triggered.connect(lambda: self.view.zoom_by(0.8))
        self.act_auto = QAction("&Auto contrast", self, shortcut="A")
        self.act_auto.triggered.connect(lambda: self.auto_check.setChecked(True))
        for a in (self.act_overlay, self.act_side, self.act_invert, self.act_fit,
                  self.act_zoom_in, self.act_zoom_out, self.act_auto):
            vm.addAction(a)

        hm = mb.addMenu("&Help")
        about = QAction("&About", self)
        about.triggered.connect(self._about)
        hm.addAction(about)

        tb = QToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        tb.addAction(self.act_open)
        tb.addAction(self.act_open_dir)
        tb.addSeparator()
        tb.addAction(self.act_run_all)
        tb.addAction(self.act_export_current)
        self.addToolBar(tb)
        self._refresh_recent_menu()

    def _about(self) -> None:
        from app.main import version

        QMessageBox.about(self, "About", f"<b>mammo-viewer</b> {version()}<br>{NOTICE}.<br>"
                          "Classifies 150 × 150 mammogram patches with the bundled CNNs and "
                          "their ensemble and shows Grad-CAM heatmaps.")

    # ================================================================== settings
    def _restore_settings(self) -> None:
        s = self.settings
        geom = s.value("window/geometry")
        if geom is not None:
            self.restoreGeometry(geom)
        else:
            self.resize(1400, 900)
        self.opacity.setValue(round(100 * get_float(s, "overlay/opacity", 0.4)))
        self.overlay_check.setChecked(get_bool(s, "overlay/on", True))
        self.side_check.setChecked(get_bool(s, "overlay/side_by_side", False))
        method = get_str(s, "overlay/method", "gradcam")
        i = self.method_combo.findData(method)
        self.method_combo.setCurrentIndex(max(i, 0))
        self.auto_check.setChecked(get_bool(s, "image/auto", True))
        self.invert_check.setChecked(get_bool(s, "image/invert", False))
        self._preferred_model = get_str(s, "overlay/model", "ensemble")

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/splitter", self.splitter.saveState())
        s.setValue("overlay/opacity", self.opacity.value() / 100.0)
        s.setValue("overlay/on", self.overlay_check.isChecked())
        s.setValue("overlay/side_by_side", self.side_check.isChecked())
        s.setValue("overlay/method", self.method_combo.currentData())
        model = self.heat_model.currentData()
        if model:
            s.setValue("overlay/model", model)
        s.setValue("image/auto", self.auto_check.isChecked())
        s.setValue("image/invert", self.invert_check.isChecked())
        s.sync()

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
        if self._model_pool is not None:
            self._model_pool.shutdown(timeout)

    def busy(self) -> bool:
        return self._model_pool.busy()

    def _refresh_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = get_list(self.settings, "recent")
        for path in recent:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.open_paths([p]))
        self.recent_menu.setEnabled(bool(recent))

    # ================================================================== messages
    def report_error(self, text: str, title: str = "Problem") -> None:
        """Show an error naming the file: status bar + (non-blocking) dialog; never raises."""
        self.messages.append(text)
        print(f"mammo-viewer: {text}", file=sys.stderr)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        summary = lines[0].rstrip(":") + (f": {lines[1]}" if len(lines) > 1 else "")
        if len(lines) > 2:
            summary += f" (+{len(lines) - 2} more)"
        self.statusBar().showMessage(summary, 20000)
        if self.interactive_dialogs:
            if self._error_box is not None:
                self._error_box.close()
            box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok,
                              self)
            box.setWindowModality(Qt.WindowModality.NonModal)
            box.show()
            self._error_box = box
        self.errorShown.emit(text)

    def status(self, text: str, ms: int = 8000) -> None:
        self.statusBar().showMessage(text, ms)

    # ================================================================== models
    def start_models(self, models_dir: Path | None = None) -> None:
        """Read the bundle cards (fast, no TensorFlow) and load the models in a worker."""
        from mammo_core.session import (
            Session,  # light: TensorFlow is imported by load()
        )

        if models_dir is not None:
            self.models_dir = Path(models_dir)
        self.models_ready = False
        self.models_loading = False
        self._generation += 1
        if self._run_all is not None:  # results of the old models are dropped: stop here
            self.cancel_run_all()
            self._finish_run_all()
        self._heat_cache.clear()
        self.patch_model.clear_predictions()
        try:
            self.session = Session(self.models_dir)
            self.available_models = list(self.session.available())
        except Exception as exc:  # noqa: BLE001 - a bad folder is a message, not a crash
            self.session = None
            self.available_models = []
            self.report_error(f"Cannot read the models folder: {_one_line(exc)}", "Models")
        where = str(self.models_dir) if self.models_dir else "the bundled models folder"
        if not self.available_models:
            msg = (f"No model bundles found in {where}. Predictions and heatmaps are not "
                   "available; patches can still be viewed. Use File ▸ Choose models folder.")
            self.results.set_models([])
            self.results.show_message(msg)
            self.status(msg, 0)
            self.messages.append(msg)
            self._set_model_actions(False)
            self.models_state = "none"
            return
        self.results.set_models(self.available_models)
        self.models_loading = True
        self.models_state = "loading"
        self._set_model_actions(False)
        self._show_progress(0, len(self.available_models), "Loading models…", cancellable=False)
        t0 = time.perf_counter()
        w = Worker(self.session.load, callbacks="progress", name="load models")
        w.on_progress(self._on_load_progress)
        w.on_return(lambda failures, g=self._generation: g == self._generation
                    and self._on_models_loaded(failures, time.perf_counter() - t0))
        w.on_error(self._on_models_error)
        w.start(self._model_pool, INTERACTIVE + 10)
        self._refresh_current()

    def _on_load_progress(self, value) -> None:
        try:
            done, total, name = value
        except (TypeError, ValueError):
            return
        self._show_progress(done, total, "Loading models", cancellable=False)
        if name:
            self.status(f"Loading model {name}…", 0)

    def _on_models_loaded(self, failures, seconds: float) -> None:
        self.models_loading = False
        self._hide_progress()
        self.timings["models_loaded_s"] = seconds
        loaded = list(self.session.loaded) if self.session is not None else []
        failures = list(failures or [])
        if failures:
            self.report_error(f"{len(failures)} model bundle(s) not loaded:\n"
                              + "\n".join(str(f) for f in failures), "Models")
        if not loaded:
            msg = "No model could be loaded; predictions are not available."
            self.results.show_message(msg)
            self.status(msg, 0)
            self.messages.append(msg)
            self.models_state = "failed"
            return
        self.models_ready = True
        self.models_state = "ready"
        self.results.set_models([m for m in self.available_models if m.name in loaded]
                                or self.available_models)
        self._fill_heat_models(loaded)
        self._set_model_actions(True)
        self.status(f"Models ready: {', '.join(loaded)} ({seconds:.1f} s)")
        self.modelsLoaded.emit(loaded)
        self._refresh_current()

    def _on_models_error(self, exc) -> None:
        self.models_loading = False
        self.models_state = "failed"
        self._hide_progress()
        self.report_error(f"Loading the models failed: {_one_line(exc)}", "Models")
        self.results.show_message("Models could not be loaded; predictions are not available.")

    def _set_model_actions(self, on: bool) -> None:
        for a in (self.act_run_all, self.act_export_current, self.act_export_sel,
                  self.act_export_all):
            a.setEnabled(on)

    def _fill_heat_models(self, loaded: Sequence[str]) -> None:
        self.heat_model.blockSignals(True)
        self.heat_model.clear()
        order = (["ensemble"] if "ensemble" in loaded else []) + [n for n in loaded
                                                                   if n != "ensemble"]
        for name in order:
            self.heat_model.addItem("Ensemble" if name == "ensemble" else name, name)
        i = self.heat_model.findData(self._preferred_model)
        self.heat_model.setCurrentIndex(max(i, 0))
        self.heat_model.blockSignals(False)
        self._fill_targets()

    def classes_of(self, model: str) -> tuple[str, ...]:
        from mammo_core.labels import CLASS_NAMES

        for info in self.available_models:
            if info.name == model:
                return tuple(info.classes)
        return tuple(CLASS_NAMES)

    def _fill_targets(self) -> None:
        model = self.heat_model.currentData()
        previous = self.target_combo.currentData()
        self.target_combo.blockSignals(True)
        self.target_combo.clear()
        self.target_combo.addItem("Predicted class", None)
        if model:
            for c in self.classes_of(model):
                self.target_combo.addItem(class_label(c), c)
        i = self.target_combo.findData(previous) if previous else 0
        self.target_combo.setCurrentIndex(max(i, 0))
        self.target_combo.blockSignals(False)

    def choose_models_dir(self) -> None:
        start = str(self.models_dir or "")
        folder = QFileDialog.getExistingDirectory(self, "Models folder", start)
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
        from mammo_core.paths import samples_dir

        folder = samples_dir()
        if not folder.is_dir() or not any(folder.iterdir()):
            self.report_error(f"{folder}: no bundled sample patches here", "Samples")
            return
        self.open_paths([str(folder)], remember=False)

    def open_paths(self, paths: Sequence[str | Path], remember: bool = True) -> Worker:
        """Read files/folders/stacked arrays in a worker; add what loads, report what fails."""
        from mammo_core.io import read_patches

        paths = [str(p) for p in paths]
        if remember:
            for p in paths:
                push_recent(self.settings, p)
            first = Path(paths[0]) if paths else None
            if first is not None:
                self.settings.setValue("last_folder",
                                       str(first if first.is_dir() else first.parent))
            self._refresh_recent_menu()
        self.status(f"Reading {', '.join(Path(p).name for p in paths)}…", 0)
        w = Worker(read_patches, paths, recursive=False, name="read patches")
        w.on_return(self._on_patches_read)
        w.on_error(lambda exc: self.report_error(f"Could not open {', '.join(paths)}: "
                                                 f"{_one_line(exc)}", "Open"))
        return w.start(self._io_pool)

    def _on_patches_read(self, collection) -> None:
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
            u = imaging.to_unit(entry.patch.pixels)
            if len(self._unit_cache) > 512:
                self._unit_cache.clear()
            self._unit_cache[entry.key] = u
        return u

    # ================================================================== predictions
    def _show_prediction_or_request(self, entry: PatchEntry) -> None:
        pred = self.patch_model.prediction(entry.key)
        if pred is not None:
            self.results.show_prediction(pred)
            self.predictionShown.emit(entry.key)
            return
        if self.models_ready:
            self.results.show_message("Predicting…")
            self._request_prediction(entry)
        elif self.models_loading:
            self.results.show_message("Loading models… the prediction follows when they are "
                                      "ready.")
        elif self.session is None or not self.available_models:
            where = self.models_dir or "the bundled models folder"
            self.results.show_message(f"No model bundles found in {where}; predictions are "
                                      "not available.")

    def _request_prediction(self, entry: PatchEntry) -> None:
        if entry.key in self._pending_pred or self.session is None:
            return
        self._pending_pred.add(entry.key)
        w = Worker(self.session.predict, [entry.patch], name="predict")
        w.on_return(lambda preds, e=entry, g=self._generation:
                    g == self._generation and self._on_single_prediction(e, preds))
        w.on_error(lambda exc, e=entry: self._on_prediction_error(e, exc))
        w.on_finish(lambda k=entry.key: self._pending_pred.discard(k))
        w.start(self._model_pool, INTERACTIVE, newest_first=True)

    def _on_single_prediction(self, entry: PatchEntry, preds) -> None:
        if not preds:
            return
        self.patch_model.set_prediction(entry.key, preds[0])
        self._update_count()
        if self._current is not None and self._current.key == entry.key:
            if "first_prediction_s" not in self.timings:
                self.timings["first_prediction_s"] = time.perf_counter()
            self.results.show_prediction(preds[0])
            self.predictionShown.emit(entry.key)
            self.render()  # the "predicted class" heatmap target is now known

    def _on_prediction_error(self, entry: PatchEntry, exc) -> None:
        msg = f"{entry.patch.source}: prediction failed: {_one_line(exc)}"
        if self._current is not None and self._current.key == entry.key:
            self.results.show_message(msg)
        self.report_error(msg, "Prediction")

    # ------------------------------------------------------------------ run all
    def run_all(self) -> None:
        if not self.models_ready or self._run_all is not None:
            return
        todo = [e for e in self.patch_model.entries()
                if self.patch_model.prediction(e.key) is None]
        if not todo:
            self.status("Every open patch already has a prediction.")
            self.runAllFinished.emit(0)
            return
        self._run_all = {"todo": todo, "pos": 0, "done": 0, "worker": None, "cancelled": False,
                         "t0": time.perf_counter()}
        self.act_run_all.setEnabled(False)
        self._show_progress(0, len(todo), "Predicting", cancellable=True)
        self._next_chunk()

    def _next_chunk(self) -> None:
        state = self._run_all
        if state is None:
            return
        todo, pos = state["todo"], state["pos"]
        # skip patches predicted meanwhile (e.g. the one being looked at)
        while pos < len(todo) and self.patch_model.prediction(todo[pos].key) is not None:
            pos += 1
            state["done"] += 1
        if state["cancelled"] or pos >= len(todo):
            self._finish_run_all()
            return
        chunk = todo[pos: pos + self.run_all_chunk]
        state["pos"] = pos + len(chunk)
        w = Worker(self.session.predict, [e.patch for e in chunk], callbacks=True,
                   name="run all")
        base = state["done"]
        w.on_progress(lambda v, b=base: self._on_chunk_progress(b, v))
        w.on_return(lambda preds, c=chunk, g=self._generation:
                    g == self._generation and self._on_chunk_done(c, preds))
        w.on_error(self._on_chunk_error)
        state["worker"] = w
        w.start(self._model_pool, BACKGROUND)

    def _on_chunk_progress(self, base: int, value) -> None:
        state = self._run_all
        if state is None:
            return
        try:
            done = int(value[0])
        except (TypeError, ValueError, IndexError):
            return
        self._set_progress(base + done, len(state["todo"]))

    def _on_chunk_done(self, chunk: list[PatchEntry], preds) -> None:
        state = self._run_all
        preds = list(preds or [])
        items = {e.key: p for e, p in zip(chunk, preds)}
        self.patch_model.set_predictions(items)
        self._update_count()
        if state is None:
            return
        state["done"] += len(items)
        self._set_progress(state["done"], len(state["todo"]))
        if self._current is not None and self._current.key in items:
            self.results.show_prediction(items[self._current.key])
            self.predictionShown.emit(self._current.key)
        if len(items) < len(chunk):  # the session stopped early: cancelled
            state["cancelled"] = True
        self._next_chunk()

    def _on_chunk_error(self, exc) -> None:
        self.report_error(f"Run all stopped: {_one_line(exc)}", "Run all")
        if self._run_all is not None:
            self._run_all["cancelled"] = True
            self._finish_run_all()

    def cancel_run_all(self) -> None:
        state = self._run_all
        if state is None:
            return
        state["cancelled"] = True
        if state["worker"] is not None:
            state["worker"].cancel()
        self.status("Cancelling…")

    def _finish_run_all(self) -> None:
        state = self._run_all
        self._run_all = None
        self._hide_progress()
        self.act_run_all.setEnabled(self.models_ready)
        if state is None:
            return
        secs = time.perf_counter() - state["t0"]
        word = "cancelled" if state["cancelled"] else "done"
        self.status(f"Run all {word}: {state['done']} of {len(state['todo'])} patches "
                    f"predicted in {secs:.1f} s")
        self._on_filter_changed()
        self.runAllFinished.emit(state["done"])

    def run_all_active(self) -> bool:
        return self._run_all is not None

    # ================================================================== progress
    def _show_progress(self, value: int, total: int, fmt: str, cancellable: bool) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(value)
        self.progress.setFormat(f"{fmt} %v/%m")
        self.progress.setToolTip(fmt)
        self.progress.show()
        self.cancel_button.setVisible(cancellable)

    def _set_progress(self, value: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(value, total))

    def _hide_progress(self) -> None:
        self.progress.hide()
        self.cancel_button.hide()

    # ================================================================== heatmaps
    def heat_request(self) -> tuple | None:
        """(sha256, model, method, target) of the heatmap the controls ask for, or None."""
        entry = self._current
        if entry is None or not self.models_ready or not self.overlay_check.isChecked():
            return None
        model = self.heat_model.currentData()
        if not model:
            return None
        method = self.method_combo.currentData()
        target = self.target_combo.currentData()
        if target is None:  # the predicted class: needs the prediction first
            pred = self.patch_model.prediction(entry.key)
            if pred is None:
                return None
            out = pred.ensemble if model == "ensemble" else pred.per_model.get(model)
            if out is None:
                return None
            target = out.predicted
        return (entry.patch.sha256, model, method, target)

    def _request_heatmap(self, entry: PatchEntry, key: tuple) -> None:
        if key in self._pending_heat or self.session is None:
            return
        self._pending_heat.add(key)
        _sha, model, method, target = key

        def compute(session=self.session, patch=entry.patch):
            if self._wanted_heat != key:  # the user moved on: skip (asked again if needed)
                return None
            heat = np.asarray(session.explain(patch, model=model, method=method, target=target),
                              dtype=np.float32)
            from mammo_core.explain import colorize

            return heat, np.asarray(colorize(heat), dtype=np.uint8)

        w = Worker(compute, name="explain")
        w.on_return(lambda res, k=key, g=self._generation:
                    g == self._generation and self._on_heatmap(k, res))
        w.on_error(lambda exc, e=entry, k=key: self._on_heatmap_error(e, k, exc))
        w.on_finish(lambda k=key: self._pending_heat.discard(k))
        w.start(self._model_pool, INTERACTIVE + 1, newest_first=True)

    def _on_heatmap(self, key: tuple, result) -> None:
        if result is None:  # skipped as stale
            if self.heat_request() == key:
                QTimer.singleShot(0, self.render)  # wanted again meanwhile: ask again
            return
        self._heat_cache[key] = result
        if len(self._heat_cache) > 256:
            self._heat_cache.pop(next(iter(self._heat_cache)))
        if self.heat_request() == key:
            self.render()

    def _on_heatmap_error(self, entry: PatchEntry, key: tuple, exc) -> None:
        msg = (f"{entry.patch.source}: heatmap ({key[1]}, {key[2]}) failed: {_one_line(exc)}")
        self.heat_status.setText(msg)
        self.report_error(msg, "Grad-CAM")

    def heatmap_cached(self, key: tuple) -> bool:
        return key in self._heat_cache

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
            if key is None:
                self.heat_status.setText("Grad-CAM: waiting for the prediction…")
            elif key in self._heat_cache:
                _heat, rgb = self._heat_cache[key]
                over = imaging.blend(grey, rgb, self.opacity.value() / 100.0)
                caption = (f"Grad-CAM{'++' if key[2] == 'gradcam++' else ''} · "
                           f"{self.heat_model.currentText()} · {class_label(key[3])}")
                over_img = imaging.to_qimage(over)
                images = ([images[0], (caption, over_img)] if self.side_check.isChecked()
                          else [(caption, over_img)])
                self._shown_heat_key = key
                self.heat_status.setText(
                    f"Heatmap: {self.method_combo.currentText()} of "
                    f"{self.heat_model.currentText()} for “{class_label(key[3])}” — red = "
                    "regions that raised this class's score most")
            else:
                self.heat_status.setText("Grad-CAM: computing…")
                wanted = self._wanted_heat = key
                self._request_heatmap(entry, key)
        self._wanted_heat = wanted
        self.view.set_images(images)
        if self._shown_heat_key is not None:
            self.heatmapShown.emit(entry.key)

    def shown_heat_key(self) -> tuple | None:
        return self._shown_heat_key

    # ================================================================== export
    def export_report(self, scope: str = "current", path: str | Path | None = None,
                      fmt: str | None = None) -> Worker | None:
        """Write a PDF/CSV/JSON report of the current patch, the selection or all patches."""
        if self.session is None or not self.models_ready:
            self.report_error("Export needs loaded models.", "Export")
            return None
        if scope == "current":
            entries = [self._current] if self._current is not None else []
        elif scope == "selection":
            entries = self.table.selected_entries()
        else:
            entries = self.patch_model.entries()
        if not entries:
            self.report_error("Nothing to export: no patch selected.", "Export")
            return None
        if path is None:
            start = Path(get_str(self.settings, "last_export_folder",
                                 get_str(self.settings, "last_folder", str(Path.home()))))
            default = start / ("report.pdf" if scope != "current"
                               else f"{Path(entries[0].name).stem}_report.pdf")
            path, chosen = QFileDialog.getSaveFileName(
                self, "Export report", str(default),
                "PDF report (*.pdf);;CSV table (*.csv);;JSON (*.json)")
            if not path:
                return None
            if not Path(path).suffix:
                path += {"CSV": ".csv", "JSON": ".json"}.get(chosen.split()[0], ".pdf")
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".") or "pdf").lower()
        self.settings.setValue("last_export_folder", str(path.parent))
        patches = [e.patch for e in entries]
        cached = {e.key: self.patch_model.prediction(e.key) for e in entries}
        heat = {}
        if self._current is not None and self._shown_heat_key is not None:
            model = self._shown_heat_key[1]
            pred = self.patch_model.prediction(self._current.key)
            if model == "ensemble" and pred is not None and pred.ensemble is not None:
                model = pred.ensemble.model  # the ensemble bundle's own name, as in reports
            if any(e.key == self._current.key for e in entries):
                heat[(self._current.key, model)] = self._heat_cache[
                    self._shown_heat_key][0]
        session = self.session

        def work():
            missing = [i for i, e in enumerate(entries) if cached[e.key] is None]
            preds = [cached[e.key] for e in entries]
            if missing:
                new = session.predict([patches[i] for i in missing])
                for i, p in zip(missing, new):
                    preds[i] = p
            return preds, session.export(path, fmt, patches, preds, heatmaps=heat or None)

        self.status(f"Writing {path}…", 0)
        w = Worker(work, name="export")
        w.on_return(lambda res: self._on_exported(entries, res))
        w.on_error(lambda exc: self.report_error(f"{path}: report not written: "
                                                 f"{_one_line(exc)}", "Export"))
        return w.start(self._model_pool, INTERACTIVE)

    def _on_exported(self, entries, result) -> None:
        preds, written = result
        self.patch_model.set_predictions({e.key: p for e, p in zip(entries, preds)})
        self.status(f"Report saved: {written}")
        self.exportFinished.emit(str(written))

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


__all__ = ["MainWindow", "patch_key"]
