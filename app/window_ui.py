"""Widgets, menus and actions of the viewer's main window, held by a :class:`WindowUi` (the
window keeps one as ``win.ui``; what the widgets do is in :mod:`app.main_window`, the state and
work in :mod:`app.controllers`). Nothing here knows the window class: the window connects the
signals."""
from __future__ import annotations

from collections.abc import Callable

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QAction, QActionGroup, QKeySequence
from PyQt6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMenu,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.results_panel import ResultsPanel
from app.text import NOTICE
from app.views.browser_pane import PatchBrowserPane

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


class WindowUi:
    """The banner, the browser | tabs | results splitter, the status bar, menus and actions.
    ``menus`` holds the menus by key ("file", "analysis", "view", "help"), never by their text;
    ``tab_actions_before`` is where File menu actions of the tabs go."""

    def __init__(self, win: QMainWindow):
        self._build_layout(win)
        self._build_status(win)
        self._build_actions(win)

    def fill_recent(self, paths: list[str], open_path: Callable[[str], object]) -> None:
        """File ▸ Open recent: ``paths``, each opened by ``open_path``."""
        self.recent_menu.clear()
        for path in paths:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: open_path(p))
        self.recent_menu.setEnabled(bool(paths))

    def _build_layout(self, win: QMainWindow) -> None:
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
        win.setCentralWidget(central)

        # --- left: browser with filters
        self.browser = PatchBrowserPane(win)
        self.splitter.addWidget(self.browser)

        # --- centre: one tab per kind of image (MainWindow.add_tab)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.splitter.addWidget(self.tabs)

        # --- right: results
        self.results = ResultsPanel()
        self.splitter.addWidget(self.results)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([370, 650, 380])

    def _build_status(self, win: QMainWindow) -> None:
        """Status bar: message | progress + cancel | notice."""
        sb = win.statusBar()
        self.progress = QProgressBar()
        self.progress.setFixedWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)
        self.progress_area = ProgressArea(self.progress, self.cancel_button)
        self.status_notice = QLabel(NOTICE)
        self.status_notice.setObjectName("statusNotice")
        sb.addPermanentWidget(self.status_notice)

    def _build_actions(self, win: QMainWindow) -> None:
        """The menus, their shortcuts and the toolbar (connected by the window)."""
        mb = win.menuBar()
        fm = mb.addMenu("&File")
        self.act_open = QAction("&Open files…", win, shortcut=QKeySequence.StandardKey.Open)
        self.act_open_dir = QAction("Open &folder…", win, shortcut="Ctrl+Shift+O")
        self.recent_menu = fm.addMenu("Open &recent")
        self.act_samples = QAction("Open &sample patches", win)
        self.act_close_all = QAction("&Close all patches", win)
        self.act_models_dir = QAction("Choose &models folder…", win)
        self.act_export_current = QAction("Export report…", win, shortcut="Ctrl+E")
        self.act_export_sel = QAction("Export report: &selection…", win)
        self.act_export_all = QAction("Export report: &all patches…", win)
        self.act_quit = QAction("&Quit", win, shortcut=QKeySequence.StandardKey.Quit)
        fm.insertAction(self.recent_menu.menuAction(), self.act_open)
        fm.insertAction(self.recent_menu.menuAction(), self.act_open_dir)
        self.tab_actions_before = fm.addSeparator()  # the tabs' File actions go above this
        fm.addAction(self.act_samples)
        fm.addAction(self.act_close_all)
        fm.addSeparator()
        # the intensity scale of 16-bit files that hold fewer bits (issue 12): DICOM says it itself
        self.bits_menu = fm.addMenu("&Bits in 16-bit PNG/TIFF/npy files")
        self.bits_menu.setToolTipsVisible(True)
        self.bits_group = QActionGroup(win)
        self.bits_group.setExclusive(True)
        self.bits_actions: dict[int, QAction] = {}
        for bits in BITS_CHOICES:
            act = QAction("16 (as stored)" if bits == 16 else f"{bits} bits", win, checkable=True)
            act.setToolTip(f"Scale 16-bit files by 2^{bits} - 1 = {(1 << bits) - 1}")
            self.bits_group.addAction(act)
            self.bits_menu.addAction(act)
            self.bits_actions[bits] = act
        self.bits_actions[16].setChecked(True)
        fm.addAction(self.act_models_dir)
        fm.addSeparator()
        fm.addAction(self.act_export_current)
        fm.addAction(self.act_export_sel)
        fm.addAction(self.act_export_all)
        fm.addSeparator()
        fm.addAction(self.act_quit)

        am = mb.addMenu("&Analysis")
        self.act_run_all = QAction("&Run all", win, shortcut="Ctrl+R")
        self.act_run_all.setToolTip("Predict every open patch (Ctrl+R)")
        self.act_cancel = QAction("&Cancel", win, shortcut="Esc")
        am.addAction(self.act_run_all)
        am.addAction(self.act_cancel)
        # what runs the models (mammo_core/engine, docs/engines.md): remembered, named in reports
        em = am.addMenu("&Engine")
        group = QActionGroup(win)
        self.engine_actions = {}
        for name, text in (("auto", "&Auto (OpenVINO where it loads)"), ("keras", "&Keras (reference)"),
                           ("openvino", "&OpenVINO")):
            act = QAction(text, win, checkable=True)
            group.addAction(act)
            em.addAction(act)
            self.engine_actions[name] = act
        self.engine_actions["auto"].setChecked(True)
        em.addSeparator()
        self.act_bf16 = QAction("&bf16 precision (faster; deviation in docs/engines.md)", win, checkable=True)
        em.addAction(self.act_bf16)

        vm = mb.addMenu("&View")
        self.act_overlay = QAction("Grad-CAM &overlay", win, shortcut="G", checkable=True)
        self.act_side = QAction("&Side by side", win, shortcut="S", checkable=True)
        self.act_invert = QAction("&Invert", win, shortcut="I", checkable=True)
        self.act_fit = QAction("&Fit to window", win, shortcut="F")
        self.act_zoom_in = QAction("Zoom &in", win, shortcut=QKeySequence.StandardKey.ZoomIn)
        self.act_zoom_out = QAction("Zoom &out", win, shortcut=QKeySequence.StandardKey.ZoomOut)
        self.act_auto = QAction("&Auto contrast", win, shortcut="A")
        for a in (self.act_overlay, self.act_side, self.act_invert, self.act_fit,
                  self.act_zoom_in, self.act_zoom_out, self.act_auto):
            vm.addAction(a)

        hm = mb.addMenu("&Help")
        self.act_shortcuts = QAction("&Keyboard shortcuts", win,
                                     shortcut=QKeySequence.StandardKey.HelpContents)
        self.act_about = QAction("&About", win)
        hm.addAction(self.act_shortcuts)
        hm.addAction(self.act_about)
        win.addAction(self.act_shortcuts)
        self.menus: dict[str, QMenu] = {"file": fm, "analysis": am, "view": vm, "help": hm}

        tb = QToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        tb.addAction(self.act_open)
        tb.addAction(self.act_open_dir)
        tb.addSeparator()
        tb.addAction(self.act_run_all)
        tb.addAction(self.act_export_current)
        win.addToolBar(tb)
