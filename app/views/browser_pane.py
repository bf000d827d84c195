"""The patch list with its filters (name, predicted class, true label, uncertain) and the
count line; the left side of the window."""
from __future__ import annotations

from PyQt6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from app.patch_browser import PatchEntry, PatchFilterProxy, PatchTableModel, PatchTableView
from app.text import class_label
from mammo_core.labels import CLASS_NAMES

COUNT_LIMIT = 20000  # above this many patches the count line leaves out "predicted"


class PatchBrowserPane(QWidget):
    """``patch_model`` (all open patches) behind ``proxy`` (the filters) in ``table``."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lv = QVBoxLayout(self)
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
        self.search_edit.textChanged.connect(self.apply_filters)
        self.pred_filter.currentIndexChanged.connect(self.apply_filters)
        self.true_filter.currentIndexChanged.connect(self.apply_filters)
        self.uncertain_only.toggled.connect(self.apply_filters)
        for sig in (self.proxy.rowsInserted, self.proxy.rowsRemoved, self.proxy.modelReset,
                    self.proxy.layoutChanged):
            sig.connect(self.update_count)

    def apply_filters(self, *_) -> None:
        self.proxy.set_text_filter(self.search_edit.text())
        self.proxy.set_predicted_filter(self.pred_filter.currentData() or "")
        self.proxy.set_true_filter(self.true_filter.currentData() or "")
        self.proxy.set_uncertain_only(self.uncertain_only.isChecked())
        self.update_count()

    def update_count(self, *_) -> None:
        model = self.patch_model
        total = model.rowCount()
        shown = self.proxy.rowCount()
        done = sum(1 for e in model.entries()
                   if model.prediction(e.key) is not None) if total < COUNT_LIMIT else 0
        txt = f"{shown} of {total} patches shown" if shown != total else f"{total} patches"
        if total:
            txt += f" · {done} predicted"
        self.count_label.setText(txt)

    def entries(self) -> list[PatchEntry]:
        return self.patch_model.entries()

    def select_index(self, row: int) -> None:
        self.table.select_row(row)

    def select_key(self, key: str) -> bool:
        """Make patch ``key`` current (False when it is not in the list or filtered out)."""
        row = self.patch_model.row_of(key)
        if row is None:
            return False
        idx = self.proxy.mapFromSource(self.patch_model.index(row, 0))
        if not idx.isValid():
            return False
        self.table.select_row(idx.row())
        return True
