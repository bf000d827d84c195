"""F1: the sheet of every keyboard shortcut and mouse gesture, and how big a region to pick."""
from __future__ import annotations

from collections.abc import Iterable

from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.text import REGION_HELP

MOUSE_HELP = (
    ("Wheel", "zoom at the cursor (mammogram and patch views)"),
    ("Left-drag", "pan (Pan tool); drag a box (Box tool)"),
    ("Click", "cut the window at this point with the radius set (Point tool)"),
    ("Right-drag", "window/level on the mammogram: left-right width, up-down level"),
    ("Double-click", "fit the image to the view"),
    ("Double-click a candidate", "open it as a patch and classify it"),
)

VIEW_KEYS = (
    ("F", "fit (patch and mammogram)"), ("P", "Pan tool"),
    ("C", "Point tool (click a lesion centre)"), ("B", "Box tool"),
    ("M", "compute the abnormality map"), ("Esc", "cancel the map (and Run all)"),
    ("0-3", "window presets (full range, breast, dense, DICOM)"),
)


def shortcut_rows(actions: Iterable[QAction] = ()) -> list[tuple[str, str]]:
    """(keys, what) rows: the window's QActions with shortcuts, the mammogram keys, the mouse."""
    rows = []
    for a in actions:
        seq = a.shortcut().toString()
        if seq:
            rows.append((seq, a.text().replace("&", "").rstrip("…").strip()))
    rows += [(k, f"mammogram view: {v}") for k, v in VIEW_KEYS]
    rows += list(MOUSE_HELP)
    return rows


class ShortcutSheet(QDialog):
    """F1: every keyboard shortcut and mouse gesture, and how big a region to pick."""

    def __init__(self, actions: Iterable[QAction] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts and mouse")
        lay = QVBoxLayout(self)
        rows = shortcut_rows(actions)
        self.table = QTableWidget(len(rows), 2, self)
        self.table.setHorizontalHeaderLabels(["Keys / mouse", "Does"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for i, (k, v) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(k))
            self.table.setItem(i, 1, QTableWidgetItem(v))
        self.table.resizeColumnToContents(0)
        lay.addWidget(self.table)
        note = QLabel(REGION_HELP, self)
        note.setWordWrap(True)
        lay.addWidget(note)
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        bb.rejected.connect(self.reject)
        bb.accepted.connect(self.accept)
        lay.addWidget(bb)
        self.resize(620, 560)

    @classmethod
    def show_for(cls, actions: Iterable[QAction], parent: QWidget) -> ShortcutSheet:
        """The sheet of the ``actions`` that have a shortcut (once per text), shown non-modal."""
        seen, shown = set(), []
        for a in actions:
            if a.shortcut().toString() and a.text() not in seen:
                seen.add(a.text())
                shown.append(a)
        sheet = cls(shown, parent)
        sheet.setModal(False)
        sheet.show()
        return sheet
