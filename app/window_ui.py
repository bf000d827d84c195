"""Widgets, menus and actions of the viewer's main window (layout only: what they do is in
:mod:`app.main_window`, the state and work in :mod:`app.controller`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QAction, QActionGroup, QKeySequence, QPixmap
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
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
from app.patch_browser import PatchFilterProxy, PatchTableModel, PatchTableView
from app.results_panel import ResultsPanel
from app.text import NOTICE, class_label
from mammo_core import __version__
from mammo_core.labels import CLASS_NAMES
from mammo_core.predictions import ENSEMBLE

if TYPE_CHECKING:  # pragma: no cover
    from app.main_window import MainWindow

METHODS = (("Grad-CAM", "gradcam"), ("Grad-CAM++", "gradcam++"))
BITS_CHOICES = (16, 15, 14, 12, 10)  # bits a 16-bit PNG / TIFF / .npy container really holds


class ProgressArea:
    """The status bar's progress bar and its Cancel button."""

    def __init__(self, bar: QProgressBar, cancel: QPushButton):
        self.bar, self.cancel = bar, cancel

    def start(self, value: int, total: int, fmt: str, cancellable: bool) -> None:
        self.set(value, total)
        self.bar.setFormat(f"{fmt} %v/%m")
        self.bar.setToolTip(fmt)
        self.bar.show()
        self.cancel.setVisible(cancellable)

    def set(self, value: int, total: int) -> None:
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(min(value, total))

    def stop(self) -> None:
        self.bar.hide()
        self.cancel.hide()


def error_box(win: MainWindow, title: str, text: str, details: str = "") -> QMessageBox:
    """A non-blocking warning naming the problem, the traceback under "Show Details…"."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, win)
    if details:
        box.setDetailedText(details)
    box.setWindowModality(Qt.WindowModality.NonModal)
    box.show()
    return box


def ask_report_path(win: MainWindow, default: Path) -> Path | None:
    """Where to write a report (None: cancelled); a name without suffix gets the chosen type's."""
    path, chosen = QFileDialog.getSaveFileName(
        win, "Export report", str(default), "PDF report (*.pdf);;CSV table (*.csv);;JSON (*.json)")
    if not path:
        return None
    if not Path(path).suffix:
        path += {"CSV": ".csv", "JSON": ".json"}.get(chosen.split()[0], ".pdf")
    return Path(path)


def show_about(win: MainWindow) -> None:
    QMessageBox.about(win, "About", f"<b>mammo-viewer</b> {__version__}<br>{NOTICE}.<br>"
                      "Classifies 150 × 150 mammogram patches with the bundled CNNs and "
                      "their ensemble and shows Grad-CAM heatmaps.")


def build_ui(win: MainWindow) -> None:
    """The banner, the browser | view | results splitter and the status bar."""
    central = QWidget()
    outer = QVBoxLayout(central)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.setSpacing(0)
    win.banner = QLabel(f"\u26a0  {NOTICE}. Predictions must not be used for diagnosis.")
    win.banner.setObjectName("banner")
    win.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
    outer.addWidget(win.banner)

    win.splitter = QSplitter(Qt.Orientation.Horizontal)
    outer.addWidget(win.splitter, 1)
    win.setCentralWidget(central)

    # --- left: browser with filters
    left = QWidget()
    lv = QVBoxLayout(left)
    lv.setContentsMargins(8, 8, 4, 8)
    lv.setSpacing(4)
    win.browser_title = QLabel("Patches")
    win.browser_title.setObjectName("sectionTitle")
    lv.addWidget(win.browser_title)
    win.search_edit = QLineEdit()
    win.search_edit.setPlaceholderText("Filter by name…")
    win.search_edit.setClearButtonEnabled(True)
    lv.addWidget(win.search_edit)
    frow = QHBoxLayout()
    win.pred_filter = QComboBox()
    win.pred_filter.setToolTip("Show only patches predicted as this class")
    win.true_filter = QComboBox()
    win.true_filter.setToolTip("Show only patches with this true label (patch arrays)")
    win.uncertain_only = QCheckBox("Uncertain")
    win.uncertain_only.setToolTip("Show only patches flagged: models disagree")
    win.pred_filter.addItem("Any prediction", "")
    win.true_filter.addItem("Any true label", "")
    for name in CLASS_NAMES:
        win.pred_filter.addItem(class_label(name), name)
        win.true_filter.addItem(class_label(name), name)
    win.true_filter.addItem("Unknown", "unknown")
    for combo in (win.pred_filter, win.true_filter):
        combo.setMinimumContentsLength(6)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    frow.addWidget(win.pred_filter, 1)
    frow.addWidget(win.true_filter, 1)
    lv.addLayout(frow)
    lv.addWidget(win.uncertain_only)

    win.patch_model = PatchTableModel(win)
    win.proxy = PatchFilterProxy(win)
    win.proxy.setSourceModel(win.patch_model)
    win.table = PatchTableView()
    win.table.setModel(win.proxy)
    lv.addWidget(win.table, 1)
    win.count_label = QLabel("")
    win.count_label.setObjectName("dim")
    lv.addWidget(win.count_label)
    win.splitter.addWidget(left)

    # --- centre: controls + image
    centre = QWidget()
    cv = QVBoxLayout(centre)
    cv.setContentsMargins(4, 8, 4, 8)
    cv.setSpacing(4)
    row1 = QHBoxLayout()
    win.overlay_check = QCheckBox("Grad-CAM (G)")
    win.overlay_check.setToolTip("Show where the model looked (Grad-CAM heatmap)")
    win.side_check = QCheckBox("Side by side (S)")
    win.side_check.setToolTip("Original and overlay next to each other")
    win.heat_model = QComboBox()
    win.heat_model.setToolTip("Heatmap of the ensemble or of one member model")
    win.heat_model.setMinimumContentsLength(8)
    win.heat_model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    win.method_combo = QComboBox()
    for label, value in METHODS:
        win.method_combo.addItem(label, value)
    win.target_combo = QComboBox()
    win.target_combo.setToolTip("Class the heatmap explains")
    win.target_combo.setMinimumContentsLength(10)
    win.target_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    win.opacity = QSlider(Qt.Orientation.Horizontal)
    win.opacity.setRange(0, 100)
    win.opacity.setMinimumWidth(60)
    win.opacity.setToolTip("Overlay opacity")
    row1.addWidget(win.overlay_check)
    row1.addWidget(win.side_check)
    row1.addSpacing(8)
    row1.addWidget(QLabel("Opacity"))
    row1.addWidget(win.opacity, 1)
    cv.addLayout(row1)
    row1 = QHBoxLayout()
    row1.addWidget(QLabel("Model"))
    row1.addWidget(win.heat_model, 1)
    row1.addWidget(win.method_combo)
    row1.addWidget(QLabel("Target"))
    row1.addWidget(win.target_combo, 1)
    cv.addLayout(row1)

    row2 = QHBoxLayout()
    win.level_slider = QSlider(Qt.Orientation.Horizontal)
    win.level_slider.setRange(0, 1000)
    win.level_slider.setToolTip("Level: centre of the displayed intensity range")
    win.width_slider = QSlider(Qt.Orientation.Horizontal)
    win.width_slider.setRange(1, 1000)
    win.width_slider.setToolTip("Window: width of the displayed intensity range (contrast)")
    win.auto_check = QCheckBox("Auto")
    win.auto_check.setToolTip("Auto contrast: window each patch to its own 0.5–99.5 % "
                               "intensity range (A)")
    win.invert_check = QCheckBox("Invert (I)")
    win.fit_button = QToolButton()
    win.fit_button.setText("Fit (F)")
    win.actual_button = QToolButton()
    win.actual_button.setText("1:1")
    win.actual_button.setToolTip("Actual pixels (one image pixel per screen pixel)")
    win.zoom_label = QLabel("")
    win.zoom_label.setObjectName("dim")
    win.zoom_label.setMinimumWidth(44)
    row2.addWidget(QLabel("Window"))
    row2.addWidget(win.width_slider, 1)
    row2.addWidget(QLabel("Level"))
    row2.addWidget(win.level_slider, 1)
    row2.addWidget(win.auto_check)
    row2.addWidget(win.invert_check)
    row2.addWidget(win.fit_button)
    row2.addWidget(win.actual_button)
    row2.addWidget(win.zoom_label)
    cv.addLayout(row2)
    for sl in (win.opacity, win.width_slider, win.level_slider):
        sl.setMinimumWidth(40)

    win.view = ImageView()
    win.view.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # arrows stay with the browser
    cv.addWidget(win.view, 1)
    win.heat_status = QLabel("")
    win.heat_status.setObjectName("dim")
    win.heat_status.setWordWrap(True)  # long texts must not widen the centre column
    win.heat_status.setMinimumWidth(50)
    cv.addWidget(win.heat_status)
    # the colour bar of the heatmap: 0 .. 1 per patch, shown with the overlay
    win.colour_bar = QWidget()
    bar_row = QHBoxLayout(win.colour_bar)
    bar_row.setContentsMargins(0, 0, 0, 0)
    low = QLabel("0 (none)")
    low.setObjectName("dim")
    win.colour_bar_image = QLabel()
    win.colour_bar_image.setFixedHeight(12)
    win.colour_bar_image.setScaledContents(True)
    win.colour_bar_image.setMinimumWidth(40)
    win.colour_bar_image.setPixmap(QPixmap.fromImage(imaging.to_qimage(imaging.colour_bar())))
    high = QLabel("1 (most, per patch)")
    high.setObjectName("dim")
    bar_row.addWidget(low)
    bar_row.addWidget(win.colour_bar_image, 1)
    bar_row.addWidget(high)
    win.colour_bar.setToolTip("Heatmap scale: each map is scaled so its strongest point is 1; "
                              "background below the tissue threshold is not coloured")
    win.colour_bar.hide()
    cv.addWidget(win.colour_bar)
    win.splitter.addWidget(centre)

    # --- right: results
    win.results = ResultsPanel()
    win.splitter.addWidget(win.results)
    win.splitter.setStretchFactor(0, 0)
    win.splitter.setStretchFactor(1, 1)
    win.splitter.setStretchFactor(2, 0)
    win.splitter.setSizes([370, 650, 380])

    # --- status bar: message | progress + cancel | notice
    sb = win.statusBar()
    win.progress = QProgressBar()
    win.progress.setFixedWidth(220)
    win.progress.setTextVisible(True)
    win.progress.hide()
    win.cancel_button = QPushButton("Cancel")
    win.cancel_button.hide()
    win.cancel_button.clicked.connect(win.cancel_run_all)
    sb.addPermanentWidget(win.progress)
    sb.addPermanentWidget(win.cancel_button)
    win.progress_area = ProgressArea(win.progress, win.cancel_button)
    win.status_notice = QLabel(NOTICE)
    win.status_notice.setObjectName("statusNotice")
    sb.addPermanentWidget(win.status_notice)


def connect_widgets(win: MainWindow) -> None:
    """The widgets' signals to the window's slots."""
    win.table.currentEntryChanged.connect(win._on_current_changed)
    win.search_edit.textChanged.connect(win._on_filter_changed)
    win.pred_filter.currentIndexChanged.connect(win._on_filter_changed)
    win.true_filter.currentIndexChanged.connect(win._on_filter_changed)
    win.uncertain_only.toggled.connect(win._on_filter_changed)
    win.overlay_check.toggled.connect(win._on_overlay_changed)
    win.side_check.toggled.connect(win._on_overlay_changed)
    win.heat_model.currentIndexChanged.connect(win._on_heat_model_changed)
    win.method_combo.currentIndexChanged.connect(win._on_overlay_changed)
    win.target_combo.currentIndexChanged.connect(win._on_overlay_changed)
    win.opacity.valueChanged.connect(win._on_opacity_changed)
    win.level_slider.valueChanged.connect(win._on_window_slider)
    win.width_slider.valueChanged.connect(win._on_window_slider)
    win.auto_check.toggled.connect(win._on_auto_toggled)
    win.invert_check.toggled.connect(win._on_invert_toggled)
    win.fit_button.clicked.connect(win.view.fit)
    win.actual_button.clicked.connect(win.view.actual_size)
    win.view.zoomChanged.connect(lambda z: win.zoom_label.setText(f"{100 * z:.0f}%"))
    win.proxy.rowsInserted.connect(win._update_count)
    win.proxy.rowsRemoved.connect(win._update_count)
    win.proxy.modelReset.connect(win._update_count)
    win.proxy.layoutChanged.connect(win._update_count)
    # after any choice in a combo box, Up/Down move through patches again
    for combo in (win.pred_filter, win.true_filter, win.heat_model, win.method_combo,
                  win.target_combo):
        combo.activated.connect(win.focus_patches)


def fill_heat_models(combo: QComboBox, loaded: Sequence[str], preferred: str) -> None:
    """The heatmap's model choice: the ensemble first, then each member."""
    combo.blockSignals(True)
    combo.clear()
    for name in ([ENSEMBLE] if ENSEMBLE in loaded else []) + [n for n in loaded if n != ENSEMBLE]:
        combo.addItem("Ensemble" if name == ENSEMBLE else name, name)
    combo.setCurrentIndex(max(combo.findData(preferred), 0))
    combo.blockSignals(False)


def fill_targets(combo: QComboBox, classes: Sequence[str]) -> None:
    """The heatmap's target choice: the predicted class, then each class (the choice kept)."""
    previous = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    combo.addItem("Predicted class", None)
    for c in classes:
        combo.addItem(class_label(c), c)
    combo.setCurrentIndex(max(combo.findData(previous) if previous else 0, 0))
    combo.blockSignals(False)


def build_actions(win: MainWindow) -> None:
    """The menus, their shortcuts and the toolbar."""
    mb = win.menuBar()
    fm = mb.addMenu("&File")
    win.act_open = QAction("&Open files…", win, shortcut=QKeySequence.StandardKey.Open)
    win.act_open.triggered.connect(win.open_files_dialog)
    win.act_open_dir = QAction("Open &folder…", win, shortcut="Ctrl+Shift+O")
    win.act_open_dir.triggered.connect(win.open_folder_dialog)
    win.recent_menu = fm.addMenu("Open &recent")
    win.act_samples = QAction("Open &sample patches", win)
    win.act_samples.triggered.connect(win.open_samples)
    win.act_close_all = QAction("&Close all patches", win)
    win.act_close_all.triggered.connect(win.close_all)
    win.act_models_dir = QAction("Choose &models folder…", win)
    win.act_models_dir.triggered.connect(win.choose_models_dir)
    win.act_export_current = QAction("Export report…", win,
                                      shortcut="Ctrl+E")
    win.act_export_current.triggered.connect(lambda: win.export_report("current"))
    win.act_export_sel = QAction("Export report: &selection…", win)
    win.act_export_sel.triggered.connect(lambda: win.export_report("selection"))
    win.act_export_all = QAction("Export report: &all patches…", win)
    win.act_export_all.triggered.connect(lambda: win.export_report("all"))
    win.act_quit = QAction("&Quit", win, shortcut=QKeySequence.StandardKey.Quit)
    win.act_quit.triggered.connect(win.close)
    fm.insertAction(win.recent_menu.menuAction(), win.act_open)
    fm.insertAction(win.recent_menu.menuAction(), win.act_open_dir)
    fm.addAction(win.act_samples)
    fm.addAction(win.act_close_all)
    fm.addSeparator()
    # the intensity scale of 16-bit files that hold fewer bits (issue 12): DICOM says it itself
    win.bits_menu = fm.addMenu("&Bits in 16-bit PNG/TIFF/npy files")
    win.bits_menu.setToolTipsVisible(True)
    win.bits_group = QActionGroup(win)
    win.bits_group.setExclusive(True)
    win.bits_actions = {}
    for bits in BITS_CHOICES:
        act = QAction("16 (as stored)" if bits == 16 else f"{bits} bits", win, checkable=True)
        act.setToolTip(f"Scale 16-bit files by 2^{bits} - 1 = {(1 << bits) - 1}")
        act.triggered.connect(lambda _on, b=bits: win.set_read_bits(b))
        win.bits_group.addAction(act)
        win.bits_menu.addAction(act)
        win.bits_actions[bits] = act
    win.bits_actions[16].setChecked(True)
    fm.addAction(win.act_models_dir)
    fm.addSeparator()
    fm.addAction(win.act_export_current)
    fm.addAction(win.act_export_sel)
    fm.addAction(win.act_export_all)
    fm.addSeparator()
    fm.addAction(win.act_quit)

    am = mb.addMenu("&Analysis")
    win.act_run_all = QAction("&Run all", win, shortcut="Ctrl+R")
    win.act_run_all.triggered.connect(win.run_all)
    win.act_cancel = QAction("&Cancel", win, shortcut="Esc")
    win.act_cancel.triggered.connect(win.cancel_run_all)
    win.act_run_all.setToolTip("Predict every open patch (Ctrl+R)")
    am.addAction(win.act_run_all)
    am.addAction(win.act_cancel)
    # what runs the models (mammo_core/engine; docs/engines.md): remembered, named in reports
    em = am.addMenu("&Engine")
    em.setToolTipsVisible(True)
    group = QActionGroup(win)
    group.setExclusive(True)
    win.engine_actions = {}
    for name, text in (("auto", "&Auto (OpenVINO where it loads)"), ("keras", "&Keras (reference)"),
                       ("openvino", "&OpenVINO")):
        act = QAction(text, win, checkable=True)
        act.triggered.connect(lambda _on, n=name: win.set_engine(n, win.act_bf16.isChecked()))
        group.addAction(act)
        em.addAction(act)
        win.engine_actions[name] = act
    win.engine_actions["auto"].setChecked(True)
    em.addSeparator()
    win.act_bf16 = QAction("&bf16 precision (faster, deviates: docs/engines.md)", win, checkable=True)
    win.act_bf16.setToolTip("OpenVINO only; its measured deviation from Keras f32 is in every report")
    win.act_bf16.triggered.connect(
        lambda on: win.set_engine(next(n for n, a in win.engine_actions.items() if a.isChecked()), on))
    em.addAction(win.act_bf16)

    vm = mb.addMenu("&View")
    win.act_overlay = QAction("Grad-CAM &overlay", win, shortcut="G", checkable=True)
    win.act_overlay.toggled.connect(win.overlay_check.setChecked)
    win.overlay_check.toggled.connect(win.act_overlay.setChecked)
    win.act_side = QAction("&Side by side", win, shortcut="S", checkable=True)
    win.act_side.toggled.connect(win.side_check.setChecked)
    win.side_check.toggled.connect(win.act_side.setChecked)
    win.act_invert = QAction("&Invert", win, shortcut="I", checkable=True)
    win.act_invert.toggled.connect(win.invert_check.setChecked)
    win.invert_check.toggled.connect(win.act_invert.setChecked)
    win.act_fit = QAction("&Fit to window", win, shortcut="F")
    win.act_fit.triggered.connect(win.view.fit)
    win.act_zoom_in = QAction("Zoom &in", win, shortcut=QKeySequence.StandardKey.ZoomIn)
    win.act_zoom_in.triggered.connect(lambda: win.view.zoom_by(1.25))
    win.act_zoom_out = QAction("Zoom &out", win, shortcut=QKeySequence.StandardKey.ZoomOut)
    win.act_zoom_out.triggered.connect(lambda: win.view.zoom_by(0.8))
    win.act_auto = QAction("&Auto contrast", win, shortcut="A")
    win.act_auto.triggered.connect(lambda: win.auto_check.setChecked(True))
    for a in (win.act_overlay, win.act_side, win.act_invert, win.act_fit,
              win.act_zoom_in, win.act_zoom_out, win.act_auto):
        vm.addAction(a)

    hm = mb.addMenu("&Help")
    about = QAction("&About", win)
    about.triggered.connect(lambda: show_about(win))
    hm.addAction(about)

    tb = QToolBar("Main")
    tb.setObjectName("mainToolbar")
    tb.setMovable(False)
    tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    tb.addAction(win.act_open)
    tb.addAction(win.act_open_dir)
    tb.addSeparator()
    tb.addAction(win.act_run_all)
    tb.addAction(win.act_export_current)
    win.addToolBar(tb)
    win._refresh_recent_menu()

