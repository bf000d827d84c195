"""The patch browser: a table model of the open patches with lazy thumbnails, the predicted
class, an "uncertain" flag, the true label and split where the data has them; a sort/filter
proxy; and a table view with keyboard navigation (Up/Down, PageUp/PageDown, Home/End).

Thumbnails are made only when a row is painted (the view asks for ``DecorationRole``) and kept
in a bounded cache, so thousands of patches open instantly.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PyQt6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QSize,
    QSortFilterProxyModel,
    Qt,
    pyqtSignal,
)
from PyQt6.QtGui import QBrush, QColor, QPixmap
from PyQt6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from app import imaging
from app.text import class_short, plain_tooltip
from mammo_core.confidence import CALL_RULE, DISAGREE_TEXT, agreement
from mammo_core.ensemble import set_words
from mammo_core.labels import LABEL_TO_NAME

FLAG = "\u26a0"  # warning sign shown beside uncertain predictions
UNCERTAIN_FG = QColor(240, 170, 60)
THUMB = 40


@dataclass(frozen=True)
class PatchEntry:
    """One open patch and how the browser names it."""

    patch: Any  # mammo_core.io.Patch
    key: str
    name: str
    split: str  # "train" / "public_test" / "private_test" for patch arrays, else ""

    @property
    def true_label(self) -> str | None:
        label = getattr(self.patch, "label", None)
        if label is None:
            return None

        return LABEL_TO_NAME.get(int(label), str(label))


def patch_key(patch) -> str:
    """The patch's key (kept for callers of the browser; defined by ``Patch.key``)."""
    return patch.key


def make_entry(patch) -> PatchEntry:
    if patch.index is None:
        name = Path(str(patch.source)).name
    else:  # rows of a patch array: "train [12]" (the split column says it too)
        name = f"{patch.split or Path(str(patch.source)).name} [{patch.index}]"
    return PatchEntry(patch=patch, key=patch.key, name=name, split=patch.split or "")


def shown_output(pred):
    """The output the browser ranks by: the ensemble's, else the first member's."""
    if pred is None:
        return None
    if getattr(pred, "ensemble", None) is not None:
        return pred.ensemble
    members = list(getattr(pred, "per_model", {}).values())
    return members[0] if members else None


def is_uncertain(pred) -> bool:
    """What the "Uncertain" filter and the warning sign mean: the call's conformal set holds more
    than one class (or none), or the patch has an out-of-distribution warning; for an ensemble
    fitted without conformal sets, the members' disagreement flag."""
    if pred is None:
        return False
    if getattr(pred, "warnings", ()):
        return True
    if getattr(pred, "conformal", None) is not None:
        return bool(pred.uncertain)
    return bool(getattr(pred, "flagged", False))


def set_text(pred) -> str:
    """The conformal set for a table cell: short class names joined by " / "."""
    cset = getattr(pred, "conformal", None)
    if cset is None:
        return ""
    return " / ".join(class_short(c) for c in cset) if cset else "(empty)"


class PatchTableModel(QAbstractTableModel):
    COLUMNS = ("Patch", "Call", "p", "Disagreement", "Set", "True label", "Split")
    COL_NAME, COL_PRED, COL_PROB, COL_UNC, COL_SET, COL_TRUE, COL_SPLIT = range(7)
    SortRole = Qt.ItemDataRole.UserRole + 1
    EntryRole = Qt.ItemDataRole.UserRole + 2

    def __init__(self, parent=None, thumb_cache: int = 4000):
        super().__init__(parent)
        self._entries: list[PatchEntry] = []
        self._row_of: dict[str, int] = {}
        self._preds: dict[str, Any] = {}
        self._thumbs: OrderedDict[str, QPixmap] = OrderedDict()
        self._thumb_cache = thumb_cache
        self.thumbnails_made = 0

    # --- content -------------------------------------------------------------------------
    def set_patches(self, patches: Sequence) -> None:
        self.beginResetModel()
        self._entries = [make_entry(p) for p in patches]
        self._row_of = {e.key: i for i, e in enumerate(self._entries)}
        self._thumbs.clear()
        self.endResetModel()

    def add_patches(self, patches: Sequence) -> int:
        """Append patches not already open (same source and index); returns how many."""
        new = [make_entry(p) for p in patches]
        new = [e for e in new if e.key not in self._row_of]
        seen: set[str] = set()
        unique = []
        for e in new:
            if e.key not in seen:
                seen.add(e.key)
                unique.append(e)
        new = unique
        if not new:
            return 0
        first = len(self._entries)
        self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
        for i, e in enumerate(new):
            self._entries.append(e)
            self._row_of[e.key] = first + i
        self.endInsertRows()
        return len(new)

    def entries(self) -> list[PatchEntry]:
        return list(self._entries)

    def entry(self, row: int) -> PatchEntry:
        return self._entries[row]

    def row_of(self, key: str) -> int | None:
        return self._row_of.get(key)

    def set_prediction(self, key: str, pred) -> None:
        row = self._row_of.get(key)
        self._preds[key] = pred
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.COLUMNS) - 1))

    def set_predictions(self, items: dict[str, Any]) -> None:
        self._preds.update(items)
        rows = [self._row_of[k] for k in items if k in self._row_of]
        if rows:
            self.dataChanged.emit(self.index(min(rows), 0),
                                  self.index(max(rows), len(self.COLUMNS) - 1))

    def clear_predictions(self) -> None:
        self._preds.clear()
        if self._entries:
            self.dataChanged.emit(self.index(0, 0),
                                  self.index(len(self._entries) - 1, len(self.COLUMNS) - 1))

    def prediction(self, key: str):
        return self._preds.get(key)

    # --- Qt model API ----------------------------------------------------------------------
    def rowCount(self, parent=None):
        return 0 if parent is not None and parent.isValid() else len(self._entries)

    def columnCount(self, parent=None):
        return 0 if parent is not None and parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return self.COLUMNS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return ("Patch file (and row of a patch array)",
                        f"The ensemble's call: {CALL_RULE}",
                        "Probability of the predicted class",
                        ("Members' disagreement with each other (a secondary measure: the members "
                         "share one backbone)"),
                        (f"The call's conformal set (class-conditional, at the ensemble's level); "
                         f"{FLAG} = uncertain: more than one class, or an out-of-distribution warning"),
                        "True label stored with the data (patch arrays only)",
                        "Data split of a patch array")[section]
        return None

    def _thumb(self, entry: PatchEntry) -> QPixmap:
        pix = self._thumbs.get(entry.key)
        if pix is None:
            pix = QPixmap.fromImage(imaging.thumbnail(entry.patch.pixels, THUMB))
            self.thumbnails_made += 1
            self._thumbs[entry.key] = pix
            if len(self._thumbs) > self._thumb_cache:
                self._thumbs.popitem(last=False)
        else:
            self._thumbs.move_to_end(entry.key)
        return pix

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        entry = self._entries[index.row()]
        col = index.column()
        pred = self._preds.get(entry.key)
        out = shown_output(pred)
        flagged = is_uncertain(pred)
        if role == self.EntryRole:
            return entry
        if role == Qt.ItemDataRole.DisplayRole:
            if col == self.COL_NAME:
                return entry.name
            if col == self.COL_PRED:
                if out is None:
                    return "…"
                name = class_short(out.predicted)
                return f"{FLAG} {name}" if flagged else name
            if col == self.COL_PROB:
                return "" if out is None else f"{out.probabilities.get(out.predicted, 0):.2f}"
            if col == self.COL_UNC:
                unc = getattr(pred, "uncertainty", None)
                return "" if unc is None else f"{unc:.2f}"
            if col == self.COL_SET:
                return set_text(pred)
            if col == self.COL_TRUE:
                return class_short(entry.true_label) if entry.true_label else ""
            if col == self.COL_SPLIT:
                return entry.split
        if role == self.SortRole:
            if col == self.COL_NAME:
                return self._row_of[entry.key]  # file order
            if col == self.COL_PRED:
                return out.predicted if out is not None else "~"
            if col == self.COL_PROB:
                return -1.0 if out is None else float(out.probabilities.get(out.predicted, 0))
            if col == self.COL_UNC:
                unc = getattr(pred, "uncertainty", None)
                return -1.0 if unc is None else float(unc)
            if col == self.COL_SET:
                cset = getattr(pred, "conformal", None)
                return -1 if cset is None else len(cset)
            if col == self.COL_TRUE:
                return entry.true_label or "~"
            if col == self.COL_SPLIT:
                return entry.split
        if role == Qt.ItemDataRole.DecorationRole and col == self.COL_NAME:
            try:
                return self._thumb(entry)
            except Exception:  # noqa: BLE001 - an odd patch must not break painting
                return None
        if role == Qt.ItemDataRole.ForegroundRole and col in (self.COL_PRED, self.COL_SET) and flagged:
            return QBrush(UNCERTAIN_FG)
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = str(entry.patch.source)
            if entry.patch.index is not None:
                tip += f"\nrow {entry.patch.index}"
            for w in getattr(pred, "warnings", ()):
                tip += f"\n{FLAG} {w}"
            if getattr(pred, "conformal", None) is not None and pred.level is not None:
                tip += "\n" + set_words(pred.conformal, pred.level, class_short)
            if out is not None and getattr(pred, "ensemble", None) is not None:
                a = agreement(out.probabilities.get(out.predicted, 0.0), bool(pred.flagged))
                tip += f"\n{a.text}"
            elif getattr(pred, "flagged", False):
                tip += f"\n{DISAGREE_TEXT}"
            return plain_tooltip(tip)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (self.COL_PROB, self.COL_UNC):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class PatchFilterProxy(QSortFilterProxyModel):
    """Filter by predicted class, by true label and to uncertain patches (:func:`is_uncertain`)."""

    ANY = ""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSortRole(PatchTableModel.SortRole)
        self._pred_class = self.ANY
        self._true_class = self.ANY
        self._uncertain_only = False
        self._text = ""

    def set_predicted_filter(self, name: str) -> None:
        self._pred_class = name
        self.invalidateFilter()

    def set_true_filter(self, name: str) -> None:
        self._true_class = name
        self.invalidateFilter()

    def set_uncertain_only(self, on: bool) -> None:
        self._uncertain_only = on
        self.invalidateFilter()

    def set_text_filter(self, text: str) -> None:
        self._text = text.strip().lower()
        self.invalidateFilter()

    def filterAcceptsRow(self, row, parent):
        model: PatchTableModel = self.sourceModel()
        entry = model.entry(row)
        pred = model.prediction(entry.key)
        if self._text and self._text not in entry.name.lower():
            return False
        if self._pred_class:
            out = shown_output(pred)
            if out is None or out.predicted != self._pred_class:
                return False
        if self._true_class:
            if self._true_class == "unknown":
                if entry.true_label is not None:
                    return False
            elif entry.true_label != self._true_class:
                return False
        return not (self._uncertain_only and not is_uncertain(pred))


class PatchTableView(QTableView):
    """Rows are whole patches; Home/End go to the first/last patch (not the first column)."""

    currentEntryChanged = pyqtSignal(object)  # PatchEntry or None

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setSortingEnabled(True)
        self.setShowGrid(False)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setIconSize(QSize(THUMB, THUMB))
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(THUMB + 6)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.horizontalHeader().setHighlightSections(False)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)

    def setModel(self, model):
        super().setModel(model)
        hh = self.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        for col, width in enumerate((165, 150, 40, 44, 120, 150, 80)):
            self.setColumnWidth(col, width)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.selectionModel().currentRowChanged.connect(self._current_changed)

    def _current_changed(self, current, _previous):
        entry = current.data(PatchTableModel.EntryRole) if current.isValid() else None
        self.currentEntryChanged.emit(entry)

    def moveCursor(self, action, modifiers):
        model = self.model()
        if model is not None and model.rowCount() > 0:
            col = max(self.currentIndex().column(), 0)
            if action == QAbstractItemView.CursorAction.MoveHome:
                return model.index(0, col)
            if action == QAbstractItemView.CursorAction.MoveEnd:
                return model.index(model.rowCount() - 1, col)
        return super().moveCursor(action, modifiers)

    def current_entry(self) -> PatchEntry | None:
        idx = self.currentIndex()
        return idx.data(PatchTableModel.EntryRole) if idx.isValid() else None

    def selected_entries(self) -> list[PatchEntry]:
        rows = sorted({i.row() for i in self.selectionModel().selectedRows()})
        return [self.model().index(r, 0).data(PatchTableModel.EntryRole) for r in rows]

    def select_row(self, row: int) -> None:
        idx = self.model().index(row, 0)
        if idx.isValid():
            self.setCurrentIndex(idx)
            self.scrollTo(idx)
