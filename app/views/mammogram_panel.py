"""The Mammogram tab: a toolbar (tools, radius, window presets, invert, map, opacity, cancel),
the :class:`~app.views.mammogram_view.MammogramView`, an info line, the DICOM header and the
ranked candidate list of the abnormality map.

The tab owns its widgets and talks to its :class:`~app.controllers.mammogram.MammogramController`
only: picks go to the controller, which cuts the region and runs the map; the tab draws what the
controller reports. It offers its actions (:meth:`MammogramPanel.tab_actions`) to the window,
which puts them in its menus. Several tabs (one per view of a study) may be made, each with its
own controller. Text from files (DICOM header, file names) is shown as plain text only.

Research use only — not a medical device.
"""
from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QSettings, Qt
from PyQt6.QtGui import QAction, QPixmap
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import imaging
from app.controllers.mammogram import MammogramController, Region
from app.text import NOTICE, REGION_HELP, class_short
from app.views.mammogram_view import DisplayPyramid, MammogramView, map_legend_image, window_presets
from mammo_core.mammogram import Mammogram
from mammo_core.scan import ScanResult

MAMMOGRAM_FILTER = "Mammograms (*.dcm *.dicom *.png *.pgm *.tif *.tiff *.npy);;All files (*)"


def plain_label(text: str, parent: QWidget | None = None) -> QLabel:
    """A QLabel that never interprets its text as markup (file names, DICOM values)."""
    label = QLabel(parent)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setText(text)
    return label


def plain_item(text: str) -> QTableWidgetItem:
    """A table cell with ``text`` as it is (items never render markup; stated for readers)."""
    return QTableWidgetItem(text)


class MammogramPanel(QWidget):
    """Toolbar + MammogramView + info/header/candidates. See the module docstring."""

    def __init__(self, controller: MammogramController | None = None,
                 settings: QSettings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller or MammogramController(parent=self)
        self.settings = settings
        self.pyramid: DisplayPyramid | None = None
        self.presets: dict[str, imaging.Window] = {}
        self._placed = False
        self.view = MammogramView(self)
        self._build()
        self._build_actions()
        self.view.pointPicked.connect(self._on_point)
        self.view.boxPicked.connect(self._on_box)
        self.view.hovered.connect(self.hover_label.setText)
        c = self.controller
        c.opened.connect(self._show_mammogram)
        c.regionCut.connect(lambda region: self.view.show_region(region.box))
        c.mapStarted.connect(self._on_map_started)
        c.mapProgress.connect(self.map_progress)
        c.mapFinished.connect(self._on_map_finished)
        c.mapFailed.connect(self._on_map_failed)

    @property
    def mammogram(self) -> Mammogram | None:
        return self.controller.mammogram

    def _build_actions(self) -> None:
        self.act_open = QAction("Open &mammogram…", self, shortcut="Ctrl+M")  # type: ignore[call-overload]
        self.act_open.setToolTip("Open a whole mammogram (DICOM, PNG, PGM, TIFF) to pick regions "
                                 "and map it")
        self.act_open.triggered.connect(self.open_dialog)
        self.act_map = QAction("Abnormality &map of the mammogram", self,  # type: ignore[call-overload]
                               shortcut="Ctrl+Shift+M")
        self.act_map.triggered.connect(self.request_map)

    def tab_actions(self) -> dict[str, list[QAction]]:
        """The tab's actions by the window menu they go in ("file", "analysis")."""
        return {"file": [self.act_open], "analysis": [self.act_map]}

    def _build(self) -> None:
        bar = QHBoxLayout()
        bar.setContentsMargins(2, 2, 2, 0)
        bar2 = QHBoxLayout()
        bar2.setContentsMargins(2, 0, 2, 2)
        self.tool_buttons: dict[str, QToolButton] = {}
        for tool, text, tip in (("pan", "Pan", "Pan and zoom (P)"),
                                ("point", "Point", "Click a lesion centre; the radius sets the window (C)"),
                                ("box", "Box", "Drag a box around a lesion (B)")):
            b = QToolButton(self)
            b.setText(text)
            b.setToolTip(tip)
            b.setCheckable(True)
            b.clicked.connect(lambda _=False, t=tool: self.set_tool(t))
            self.tool_buttons[tool] = b
            bar.addWidget(b)
        self.radius = QDoubleSpinBox(self)
        self.radius.setRange(1, 2000)
        self.radius.setDecimals(0)
        self.radius.setValue(48)
        self.radius.setPrefix("r ")
        self.radius.setSuffix(" px")
        self.radius.setToolTip("Lesion radius for the Point tool (window side = max(2 r, 96 px))")
        bar.addWidget(self.radius)
        self.preset_box = QComboBox(self)
        # the longest preset name shown whole ("Breast (auto)", "DICOM window")
        self.preset_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.preset_box.setMinimumContentsLength(13)
        self.preset_box.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        self.preset_box.setToolTip("Window/level presets (right-drag on the image adjusts; keys 0-3)")
        self.preset_box.activated.connect(lambda i: self.apply_preset(self.preset_box.itemText(i)))
        bar.addWidget(self.preset_box)
        self.invert_box = QCheckBox("Invert", self)
        self.invert_box.toggled.connect(self._on_invert)
        bar.addWidget(self.invert_box)
        self.fit_button = QToolButton(self)
        self.fit_button.setText("Fit")
        self.fit_button.clicked.connect(self.fit)
        bar.addWidget(self.fit_button)
        bar.addStretch(1)
        self.map_button = QPushButton("Abnormality map", self)
        self.map_button.setToolTip("Slide the training window over the breast and map P(abnormal) (M)")
        self.map_button.clicked.connect(self.request_map)
        bar2.addWidget(self.map_button)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_map)
        bar2.addWidget(self.cancel_button)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(120)
        self.progress.setVisible(False)
        bar2.addWidget(self.progress)
        bar2.addWidget(QLabel("opacity", self))
        self.opacity = QSlider(Qt.Orientation.Horizontal, self)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(40)
        self.opacity.setMaximumWidth(90)
        self.opacity.setToolTip("Opacity of the abnormality map")
        self.opacity.valueChanged.connect(lambda v: self.view.set_map_opacity(v / 100))
        bar2.addWidget(self.opacity)
        bar2.addStretch(1)
        self.side_button = QToolButton(self)
        self.side_button.setText("Side panel")
        self.side_button.setCheckable(True)
        self.side_button.setChecked(True)
        self.side_button.setToolTip("Show or fold the candidates / header panel (the image "
                                    "gets the room)")
        bar2.addWidget(self.side_button)

        side = QTabWidget(self)
        side.setDocumentMode(True)
        self.side_tabs = side
        info = QWidget(side)
        sl = QVBoxLayout(info)
        sl.setContentsMargins(2, 2, 2, 2)
        self.info_label = plain_label("Open a whole mammogram (File > Open mammogram…)", info)
        self.info_label.setWordWrap(True)
        sl.addWidget(self.info_label)
        sl.addWidget(QLabel("Double-click a candidate to open it as a patch", info))
        self.candidate_list = QListWidget(info)
        self.candidate_list.itemActivated.connect(self._on_candidate)
        sl.addWidget(self.candidate_list, 1)
        self.map_legend = QLabel(info)  # the colour bar of the map's P(abnormal) scale
        self.map_legend.setPixmap(QPixmap.fromImage(map_legend_image()))
        self.map_legend.setToolTip("Colour of the map: P(abnormal) of the windows, 0 (blue) to 1 (red)")
        self.map_legend.setVisible(False)
        sl.addWidget(self.map_legend)
        self.map_label = plain_label("", info)
        self.map_label.setWordWrap(True)
        sl.addWidget(self.map_label)
        side.addTab(info, "Candidates")
        self.header_table = QTableWidget(0, 2, side)
        self.header_table.setHorizontalHeaderLabels(["Field", "Value"])
        self.header_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.header_table.verticalHeader().setVisible(False)
        side.addTab(self.header_table, "Header")
        help_label = plain_label(REGION_HELP, side)
        help_label.setWordWrap(True)
        help_label.setAlignment(Qt.AlignmentFlag.AlignTop)
        side.addTab(help_label, "Region size")
        self.side_button.toggled.connect(side.setVisible)

        split = QSplitter(self)
        split.addWidget(self.view)
        split.addWidget(side)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 0)
        split.setSizes([700, 260])
        self.side_split = split
        self.hover_label = plain_label("", self)
        self.hover_label.setObjectName("dim")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addLayout(bar2)
        lay.addWidget(split, 1)
        lay.addWidget(self.hover_label)
        self.set_tool("pan")

    def showEvent(self, event):
        super().showEvent(event)
        if not self._placed:  # needs the real width, known once shown
            self._placed = True
            w = max(self.side_split.width(), 600)
            self.side_split.setSizes([int(w * 0.72), w - int(w * 0.72)])

    # --- opening ---------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        start = str(self.settings.value("last_folder", "") or "") if self.settings else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open a whole mammogram", start,
                                              MAMMOGRAM_FILTER)
        if path:
            self.controller.open_path(path)

    def open_mammogram(self, mammo: Mammogram) -> None:
        """Show ``mammo`` (already read): the controller's open mammogram from now on."""
        self.controller.set_mammogram(mammo)

    def _show_mammogram(self, mammo: Mammogram) -> None:
        self.pyramid = DisplayPyramid(mammo.pixels, mammo.full_scale)
        header = dict(mammo.header)
        self.presets = window_presets(self.pyramid, header)
        self.preset_box.clear()
        self.preset_box.addItems(list(self.presets))
        self.preset_box.setCurrentText("Breast (auto)")
        win = self.presets["Breast (auto)"]
        self.invert_box.blockSignals(True)
        self.invert_box.setChecked(False)
        self.invert_box.blockSignals(False)
        self.view.set_mammogram(mammo, self.pyramid, win)
        if mammo.mm_per_pixel is not None:  # default radius: half the training window, 9.6 mm
            self.radius.setValue(max(1, round(9.6 / mammo.mm_per_pixel)))
        self.info_label.setText(mammo.describe() + (f"\nlaterality/view from {mammo.orientation_source}"
                                                    if mammo.orientation_source else ""))
        self.header_table.setRowCount(0)
        rows = list(mammo.header) or [("(no DICOM header)", mammo.kind)]
        self.header_table.setRowCount(len(rows))
        for i, (k, v) in enumerate(rows):
            self.header_table.setItem(i, 0, plain_item(k))
            self.header_table.setItem(i, 1, plain_item(v))
        self.candidate_list.clear()
        self.map_label.setText("")
        cached = self.controller.current_map()
        if cached is not None:
            self._show_map(cached)

    # --- window / tools --------------------------------------------------------------------------
    def apply_preset(self, name: str) -> None:
        if name in self.presets:
            w = self.presets[name]
            self.view.set_window(imaging.Window(w.center, w.width, self.invert_box.isChecked()))

    def _on_invert(self, on: bool) -> None:
        w = self.view.window
        self.view.set_window(imaging.Window(w.center, w.width, on))

    def set_tool(self, tool: str) -> None:
        self.view.set_tool(tool)
        for t, b in self.tool_buttons.items():
            b.setChecked(t == tool)

    # --- regions ---------------------------------------------------------------------------------
    def pick_point(self, row: int, col: int, radius: float | None = None) -> Region:
        r = float(self.radius.value() if radius is None else radius)
        return self.controller.pick_point(row, col, r)

    def pick_box(self, top: int, left: int, height: int, width: int) -> Region:
        return self.controller.pick_box(top, left, height, width)

    def _on_point(self, r: int, c: int) -> None:
        self.pick_point(r, c)

    def _on_box(self, t: int, l_: int, h: int, w: int) -> None:
        self.pick_box(t, l_, h, w)

    def show_region_heat(self, key: str, heat: np.ndarray | None) -> None:
        """Draw the region of patch ``key`` (and its Grad-CAM when given) on the mammogram."""
        region = self.controller.region_for(key)
        if region is not None:
            self.view.show_heat(region.box, heat)

    def fit(self) -> None:
        self.view.fit()

    # --- the map ---------------------------------------------------------------------------------
    def request_map(self) -> None:
        self.controller.request_map()

    def cancel_map(self) -> None:
        if self.controller.cancel_map():
            self.map_label.setText("Cancelling…")

    def map_running(self) -> bool:
        return self.controller.map_running()

    def _on_map_started(self) -> None:
        self.map_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.map_label.setText("Computing the abnormality map…")

    def map_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def _on_map_finished(self, result: ScanResult | None) -> None:
        self._end_map()
        if result is None:
            self.map_label.setText("Map discarded: the models changed.")
            return
        if self.mammogram is not None and result.source == self.mammogram.source:
            self._show_map(result)

    def _on_map_failed(self, message: str) -> None:
        self._end_map()
        self.map_label.setText(f"Map failed: {message}")

    def _end_map(self) -> None:
        self.map_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)

    def _show_map(self, res: ScanResult) -> None:
        self.view.set_map(res.map, res.stride_px, self.opacity.value() / 100, res.coverage)
        self.map_legend.setVisible(True)
        self.view.set_candidates(res.candidates)
        self.candidate_list.clear()
        for k, c in enumerate(res.candidates, 1):
            it = QListWidgetItem(f"{k}. x {c.x}, y {c.y}  P(abnormal) {c.p_abnormal:.2f}  {class_short(c.call)}")
            it.setData(Qt.ItemDataRole.UserRole, k - 1)
            self.candidate_list.addItem(it)
        state = "" if res.complete else " (cancelled: partial map, no candidates)"
        members = res.members_text() + (
            "" if res.exact else " (approximate: a subset of the ensemble, one view per window or the dense map)")
        band = res.unscanned_mm()
        unit = "mm" if res.spacing_mm else "px"
        self.map_label.setText(
            f"{len(res.p_abnormal)} windows of {res.window_px} px, stride {res.stride_px} px, "
            f"{res.seconds:.1f} s{state}. Map members: {members}; {res.mode_text()}. Colour: "
            "P(abnormal) 0 (blue) to 1 "
            "(red); faint cells were covered by fewer windows. "
            + ("Every tissue pixel was scanned. " if band is None else
               f"Outer {band:.0f} {unit} of the breast along the skin line not scanned (no colour). ")
            + f"{NOTICE}.")

    def _on_candidate(self, item: QListWidgetItem) -> None:
        self.open_candidate(int(item.data(Qt.ItemDataRole.UserRole)))

    def open_candidate(self, k: int) -> Region | None:
        return self.controller.open_candidate(k)

    # --- keys ------------------------------------------------------------------------------------
    def keyPressEvent(self, event):
        key = event.key()
        K = Qt.Key
        presets = list(self.presets)
        if key == K.Key_F:
            self.view.fit()
        elif key == K.Key_P:
            self.set_tool("pan")
        elif key == K.Key_C:
            self.set_tool("point")
        elif key == K.Key_B:
            self.set_tool("box")
        elif key == K.Key_M:
            self.request_map()
        elif key == K.Key_Escape:
            self.cancel_map()
        elif K.Key_0 <= key <= K.Key_3 and key - K.Key_0 < len(presets):
            name = presets[key - K.Key_0]
            self.preset_box.setCurrentText(name)
            self.apply_preset(name)
        else:
            super().keyPressEvent(event)
            return
        event.accept()
