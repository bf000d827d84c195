"""The Study tab: a screening study as a 2 x 2 hanging — right and left CC above right and left
MLO, each view mirrored as needed so the chest walls meet in the middle — every view with its
own abnormality map and candidates (its own :class:`~app.controllers.mammogram.MammogramController`
in the :class:`~app.controllers.study.StudyController`). One view can fill the tab.

Keys (the tab's actions): 1-4 or Tab: select a view; F (or a double click): that view alone /
back to the hanging; M: show / hide the marks (maps and candidates); N / Shift+N: next /
previous study; Ctrl+Shift+A: the maps of every view.
"""
from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QAction, QKeySequence, QTransform
from PyQt6.QtWidgets import QFileDialog, QGridLayout, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from app.controllers.mammogram import MammogramController
from app.controllers.study import StudyController
from app.text import NOTICE
from app.views.mammogram_view import DisplayPyramid, MammogramView, window_presets
from mammo_core.breast import chest_wall_side, tissue_mask
from mammo_core.mammogram import Mammogram
from mammo_core.scan import ScanResult
from mammo_core.study import HANGING, Study, StudySet

#: Where each column's chest wall goes: the right-breast column's on its right edge, the
#: left-breast column's on its left edge (back to back).
CHEST_WALL_TOWARDS = {"R": "right", "L": "left"}


class HangingView(MammogramView):
    """A MammogramView that can be shown mirrored left-right (zoom keeps the mirror)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.mirrored = False

    def set_mirrored(self, on: bool) -> None:
        if on != self.mirrored:
            self.mirrored = on
            self.setTransform(self.transform() * QTransform.fromScale(-1, 1))

    def zoom(self) -> float:
        return abs(self.transform().m11())

    def set_zoom(self, factor: float) -> None:
        super().set_zoom(factor)
        if self.mirrored:
            z = self.zoom()
            self.setTransform(QTransform.fromScale(-z, z))


class StudyCell(QWidget):
    """One position of the hanging: a title and a mirrored-as-needed view of its mammogram,
    with the map and candidates of its own controller."""

    def __init__(self, position: tuple[str, str], controller: MammogramController, parent=None):
        super().__init__(parent)
        self.position = position
        self.controller = controller
        self.marks = True
        self.result: ScanResult | None = None
        self.title = QLabel(f"{position[0]} {position[1]}: no image", self)
        self.view = HangingView(self)
        self.view.setMinimumSize(120, 120)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(1, 1, 1, 1)
        lay.setSpacing(0)
        lay.addWidget(self.title)
        lay.addWidget(self.view, 1)
        controller.opened.connect(self.show_mammogram)
        controller.mapFinished.connect(self._on_map)

    def show_mammogram(self, mammo: Mammogram) -> None:
        pyramid = DisplayPyramid(mammo.pixels, mammo.full_scale)
        self.result = None
        self.view.setVisible(True)
        self.view.set_mammogram(mammo, pyramid, window_presets(pyramid, dict(mammo.header))["Breast (auto)"])
        mask, _ = tissue_mask(mammo.pixels, drop_pectoral=False, fs=mammo.full_scale)
        self.view.set_mirrored(chest_wall_side(mask) != CHEST_WALL_TOWARDS[self.position[0]])
        self.view.fit()
        self.title.setText(f"{self.position[0]} {self.position[1]}: {mammo.name}"
                           + ("  (mirrored)" if self.view.mirrored else ""))
        cached = self.controller.current_map()
        if cached is not None:
            self._on_map(cached)

    def clear(self) -> None:
        """No image at this position in the study shown."""
        self.result = None
        self.view.setVisible(False)
        self.title.setText(f"{self.position[0]} {self.position[1]}: no image in this study")

    def _on_map(self, result: ScanResult | None) -> None:
        m = self.controller.mammogram
        if result is None or m is None or result.source != m.source:
            return
        self.result = result
        self.show_marks(self.marks)

    def show_marks(self, on: bool) -> None:
        self.marks = on
        if self.result is not None and on:
            self.view.set_map(self.result.map, self.result.stride_px, 0.4)
            self.view.set_candidates(self.result.candidates)
        else:
            self.view.set_map(None)
            self.view.set_candidates([])


class StudyTab(QWidget):
    """The hanging of the current study (see the module docstring)."""

    def __init__(self, controller: StudyController, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.cells = tuple(StudyCell(pos, ctrl, self) for pos, ctrl in zip(HANGING, controller.views))
        self.selected = 0
        self.single = False
        self.marks = True
        bar = QHBoxLayout()
        self.open_button = QToolButton(self)
        self.open_button.setText("Open study folder…")
        self.open_button.clicked.connect(self.open_dialog)
        self.next_button = QToolButton(self)
        self.next_button.setText("Next study (N)")
        self.next_button.clicked.connect(lambda: controller.next_study())
        self.map_button = QToolButton(self)
        self.map_button.setText("Maps of all views")
        self.map_button.clicked.connect(controller.request_maps)
        self.label = QLabel("Open a folder of mammograms: its studies are shown as a hanging. " + NOTICE, self)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setWordWrap(True)
        for w in (self.open_button, self.next_button, self.map_button):
            bar.addWidget(w)
        bar.addWidget(self.label, 1)
        self.grid = QGridLayout()
        self.grid.setSpacing(2)
        for k, cell in enumerate(self.cells):  # R CC, L CC / R MLO, L MLO
            self.grid.addWidget(cell, k // 2, k % 2)
            cell.view.installEventFilter(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addLayout(self.grid, 1)
        controller.studiesOpened.connect(self._on_studies)
        controller.studyShown.connect(self._on_study)
        self._build_actions()
        self.act_open = QAction("Open s&tudy folder…", self)
        self.act_open.setToolTip("Open a folder of mammograms as studies (2 x 2 hanging)")
        self.act_open.triggered.connect(self.open_dialog)
        self.act_export = QAction("Export study results as &DICOM…", self)
        self.act_export.setToolTip("TID 1500 SR, presentation state and marked capture of every "
                                   "mapped view, for a PACS (docs/dicom.md)")
        self.act_export.triggered.connect(self.export_dialog)
        self.select(0)

    def tab_actions(self) -> dict[str, list[QAction]]:
        """The tab's actions by the window menu they go in."""
        return {"file": [self.act_open, self.act_export]}

    def export_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the DICOM results")
        if folder:
            self.show_export(self.controller.export_dicom(folder))

    def show_export(self, lines: list[str]) -> None:
        self.label.setText("\n".join(lines) + f"\n{NOTICE}")

    def _build_actions(self) -> None:
        self.actions_: list[QAction] = []

        def act(text, keys, fn):
            a = QAction(text, self)
            a.setShortcuts([QKeySequence(k) for k in keys])
            a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            a.triggered.connect(fn)
            self.addAction(a)
            self.actions_.append(a)
            return a
        for k in range(4):
            act(f"Select view {k + 1}", [str(k + 1)], lambda _=False, k=k: self.select(k))
        act("Next view", ["Tab"], lambda: self.select((self.selected + 1) % 4))
        act("One view / hanging", ["F"], self.toggle_single)
        act("Show / hide marks", ["M"], self.toggle_marks)
        act("Next study", ["N"], lambda: self.controller.next_study())
        act("Previous study", ["Shift+N"], lambda: self.controller.next_study(-1))
        act("Maps of all views", ["Ctrl+Shift+A"], self.controller.request_maps)

    def eventFilter(self, obj, event):
        if event.type() == event.Type.MouseButtonDblClick:
            for k, cell in enumerate(self.cells):
                if obj is cell.view:
                    self.select(k)
                    self.toggle_single()
                    return True
        if event.type() == event.Type.MouseButtonPress:
            for k, cell in enumerate(self.cells):
                if obj is cell.view:
                    self.select(k)
        return super().eventFilter(obj, event)

    def open_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a study folder")
        if folder:
            self.controller.open_path(folder)

    def select(self, k: int) -> None:
        self.selected = k
        for i, cell in enumerate(self.cells):
            cell.setStyleSheet("QLabel { color: #f0aa3c; font-weight: bold; }" if i == k else "")
        if self.single:
            self._layout_single()

    def toggle_single(self) -> None:
        self.single = not self.single
        if self.single:
            self._layout_single()
        else:
            for cell in self.cells:
                cell.setVisible(True)
        for cell in self.cells:
            if cell.isVisible():
                cell.view.fit()

    def _layout_single(self) -> None:
        for i, cell in enumerate(self.cells):
            cell.setVisible(i == self.selected)

    def toggle_marks(self) -> None:
        self.marks = not self.marks
        for cell in self.cells:
            cell.show_marks(self.marks)

    def _on_studies(self, studies: StudySet) -> None:
        if not studies.studies:
            bad = "; ".join(str(f) for f in studies.failures[:3])
            self.label.setText(f"No mammograms found. {bad} {NOTICE}".strip())

    def _on_study(self, index: int, study: Study) -> None:
        for cell, image in zip(self.cells, study.hanging()):
            if image is None:
                cell.clear()
        n = len(self.controller.studies.studies) if self.controller.studies else 0
        extra = f"; not in the hanging: {', '.join(im.position for im in study.unplaced)}" if study.unplaced else ""
        notes = (" " + " ".join(study.notes)) if study.notes else ""
        self.label.setText(f"Study {index + 1} of {n}: {study.describe()}{extra}.{notes} {NOTICE}")
