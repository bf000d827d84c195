"""The results panel: the ensemble's five class probabilities, its uncertainty in plain words,
each member model's own task and probabilities, and the models' names and versions."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PyQt6.QtCore import QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QFontMetrics, QPainter
from PyQt6.QtWidgets import (
    QFrame,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.text import CONFIDENT_TEXT, UNCERTAIN_TEXT, class_label, task_label
from mammo_core.labels import CLASS_NAMES

ACCENT = QColor(66, 135, 245)
ACCENT_TOP = QColor(35, 95, 200)
TRACK = QColor(62, 65, 72)
WARN_BG = "#fff3d6"
WARN_FG = "#7a4b00"
OK_BG = "#e6f2e8"
OK_FG = "#1d5e2a"


_ALL_NAMES = ("baseline", "mass_benign", "mass_malignant", "calcification_benign",
              "calcification_malignant", "mass", "calcification", "benign", "malignant")


class ProbabilityBars(QWidget):
    """Horizontal bars: class name | bar | percentage; the predicted class in bold."""

    ROW_H = 24

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[tuple[str, float, bool]] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_probabilities(self, probs: dict[str, float], predicted: str | None,
                          order: Sequence[str] | None = None) -> None:
        names = list(order) if order else list(probs)
        self._rows = [(class_label(n), float(probs.get(n, 0.0)), n == predicted) for n in names]
        self.setMinimumHeight(self.ROW_H * len(self._rows) + 4)
        self.updateGeometry()
        self.update()

    def rows(self) -> list[tuple[str, float, bool]]:
        return list(self._rows)

    def sizeHint(self):
        return QSize(320, self.ROW_H * max(len(self._rows), 1) + 4)

    def paintEvent(self, _event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        bold = QFont(font)
        bold.setBold(True)
        fm = QFontMetrics(bold)
        # one label column for every bar widget, so bars line up across models
        label_w = max(fm.horizontalAdvance(class_label(n)) for n in _ALL_NAMES) + 10
        label_w = min(label_w, int(self.width() * 0.55))
        pct_w = fm.horizontalAdvance("100.0%") + 8
        bar_x = label_w
        bar_w = max(self.width() - label_w - pct_w, 20)
        for i, (label, prob, top) in enumerate(self._rows):
            y = 2 + i * self.ROW_H
            p.setFont(bold if top else font)
            p.setPen(self.palette().color(self.foregroundRole()))
            p.drawText(QRectF(0, y, label_w - 6, self.ROW_H), int(Qt.AlignmentFlag.AlignVCenter
                       | Qt.AlignmentFlag.AlignLeft), label)
            track = QRectF(bar_x, y + 5, bar_w, self.ROW_H - 10)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(TRACK)
            p.drawRoundedRect(track, 3, 3)
            p.setBrush(ACCENT_TOP if top else ACCENT)
            p.drawRoundedRect(QRectF(bar_x, y + 5, max(bar_w * min(max(prob, 0), 1), 0.0),
                                     self.ROW_H - 10), 3, 3)
            p.setPen(self.palette().color(self.foregroundRole()))
            p.drawText(QRectF(bar_x + bar_w + 4, y, pct_w, self.ROW_H),
                       int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight),
                       f"{100 * prob:.1f}%")
        p.end()


def _section_title(text: str) -> QLabel:
    lab = QLabel(text)
    f = lab.font()
    f.setBold(True)
    f.setPointSizeF(f.pointSizeF() * 1.05)
    lab.setFont(f)
    return lab


class ResultsPanel(QScrollArea):
    """Right-hand panel. ``show_prediction(entry, prediction, models)`` fills it."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMinimumWidth(360)
        body = QWidget()
        self.setWidget(body)
        self._layout = QVBoxLayout(body)
        self._layout.setContentsMargins(12, 10, 12, 10)
        self._layout.setSpacing(6)

        self.patch_label = QLabel("No patch selected")
        self.patch_label.setWordWrap(True)
        self.patch_label.setObjectName("patchName")
        self.patch_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._layout.addWidget(self.patch_label)

        self.state_label = QLabel("")
        self.state_label.setWordWrap(True)
        self.state_label.setObjectName("stateLabel")
        self._layout.addWidget(self.state_label)

        self.ensemble_title = _section_title("Ensemble — 5 classes")
        self._layout.addWidget(self.ensemble_title)
        self.verdict_label = QLabel("")
        self.verdict_label.setObjectName("verdict")
        self.verdict_label.setWordWrap(True)
        self._layout.addWidget(self.verdict_label)
        self.ensemble_bars = ProbabilityBars()
        self._layout.addWidget(self.ensemble_bars)

        self.uncertainty_label = QLabel("")
        self.uncertainty_label.setWordWrap(True)
        self.uncertainty_label.setObjectName("uncertainty")
        self._layout.addWidget(self.uncertainty_label)

        self.truth_label = QLabel("")
        self.truth_label.setWordWrap(True)
        self._layout.addWidget(self.truth_label)

        self.members_title = _section_title("Member models")
        self._layout.addWidget(self.members_title)
        self._members_box = QVBoxLayout()
        self._members_box.setSpacing(2)
        self._layout.addLayout(self._members_box)
        self._member_widgets: list[QWidget] = []

        self._layout.addSpacing(6)
        self.models_title = _section_title("Models")
        self._layout.addWidget(self.models_title)
        self.models_label = QLabel("")
        self.models_label.setWordWrap(True)
        self.models_label.setObjectName("models")
        self.models_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._layout.addWidget(self.models_label)
        self._layout.addStretch(1)

        self.show_message("No patch selected")

    # --- states ------------------------------------------------------------------------------
    def _show_result_widgets(self, on: bool) -> None:
        for w in (self.ensemble_title, self.verdict_label, self.ensemble_bars,
                  self.uncertainty_label, self.members_title):
            w.setVisible(on)
        for w in self._member_widgets:
            w.setVisible(on)

    def show_message(self, text: str, patch_name: str | None = None) -> None:
        if patch_name is not None:
            self.patch_label.setText(patch_name)
        self.state_label.setText(text)
        self.state_label.setVisible(bool(text))
        self._show_result_widgets(False)

    def set_patch(self, name: str, true_label: str | None, split: str = "") -> None:
        self.patch_label.setText(name)
        bits = []
        if true_label:
            bits.append(f"True label (from the data): <b>{class_label(true_label)}</b>")
        if split:
            bits.append(f"Split: {split}")
        self.truth_label.setText("<br>".join(bits))
        self.truth_label.setVisible(bool(bits))

    def set_models(self, models: Sequence[Any]) -> None:
        """``models``: BundleInfo-like objects (name, task, version, kind)."""
        if not models:
            self.models_label.setText("No models loaded.")
            return
        lines = []
        for m in models:
            kind = getattr(m, "kind", "model")
            lines.append(f"<b>{m.name}</b> — {task_label(m.task)}"
                         f"{' (ensemble)' if kind == 'ensemble' else ''}, v{m.version}")
        self.models_label.setText("<br>".join(lines))

    def show_prediction(self, pred) -> None:
        """Fill the panel from a ``PatchPrediction``."""
        self.state_label.setVisible(False)
        ens = getattr(pred, "ensemble", None)
        self._show_result_widgets(True)
        if ens is not None:
            order = [c for c in CLASS_NAMES if c in ens.probabilities] or list(ens.probabilities)
            self.ensemble_title.setText(f"Ensemble ({ens.model}) — 5 classes"
                                        if ens.model and ens.model != "ensemble"
                                        else "Ensemble — 5 classes")
            self.ensemble_bars.set_probabilities(ens.probabilities, ens.predicted, order)
            p = ens.probabilities.get(ens.predicted, 0.0)
            p_abn = 1.0 - float(ens.probabilities.get("baseline", 0.0))
            self.verdict_label.setText(
                f"Ensemble call: <b>{class_label(ens.predicted)}</b> ({100 * p:.0f}%)"
                f"<br><span style='font-size:small'>P(abnormal) {100 * p_abn:.0f}% — abnormal "
                "when P(baseline) &lt; 50%, then the most likely abnormal class</span>")
        else:
            self.ensemble_title.setText("Ensemble — not available")
            self.verdict_label.setText("No ensemble bundle is loaded; see the member models.")
            self.ensemble_bars.set_probabilities({}, None)
        unc = getattr(pred, "uncertainty", None)
        if unc is None:
            self.uncertainty_label.setText("")
            self.uncertainty_label.setVisible(False)
        elif pred.flagged:
            self.uncertainty_label.setText(f"\u26a0 <b>{UNCERTAIN_TEXT}</b> (uncertainty {unc:.2f})")
            self.uncertainty_label.setStyleSheet(
                f"background:{WARN_BG}; color:{WARN_FG}; border-radius:4px; padding:6px;")
        else:
            self.uncertainty_label.setText(f"{CONFIDENT_TEXT} (uncertainty {unc:.2f})")
            self.uncertainty_label.setStyleSheet(
                f"background:{OK_BG}; color:{OK_FG}; border-radius:4px; padding:6px;")
        self._set_members(list(pred.per_model.values()))

    def _set_members(self, outputs) -> None:
        for w in self._member_widgets:
            self._members_box.removeWidget(w)
            w.deleteLater()
        self._member_widgets = []
        for out in outputs:
            title = QLabel(f"<b>{out.model}</b> · {task_label(out.task)} → "
                           f"{class_label(out.predicted)}")
            title.setWordWrap(True)
            bars = ProbabilityBars()
            bars.set_probabilities(out.probabilities, out.predicted)
            for w in (title, bars):
                self._members_box.addWidget(w)
                self._member_widgets.append(w)
        self.members_title.setVisible(bool(outputs))

    def member_bars(self) -> list[ProbabilityBars]:
        return [w for w in self._member_widgets if isinstance(w, ProbabilityBars)]
