"""The results panel: the ensemble's five class probabilities with its call (in bold, the rule
in words), the agreement line, each member model's own answer with its measured held-out AUC
(members not above chance greyed and never bold), and the models' names and versions.

Nothing here scrolls sideways: long names wrap (anywhere, if they have no spaces) and the
percentages always keep their column. Confidence rules come from
:mod:`mammo_core.confidence` (one place for the viewer and the reports)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PyQt6.QtCore import QEvent, QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QFontMetrics, QPainter
from PyQt6.QtWidgets import (
    QFrame,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from app.text import breakable, class_label, task_label
from mammo_core.confidence import (
    AGREE,
    AGREEMENT_RULE,
    AT_CHANCE_TEXT,
    CALL_RULE,
    DISAGREE,
    LOW,
    NOT_BLIND_TEXT,
    QUALITY_RULE,
    ModelQuality,
    agreement,
    quality_from_card,
    question_qualities,
)
from mammo_core.ensemble import set_words
from mammo_core.labels import CLASS_NAMES
from mammo_core.predictions import asks_if_lesion, member_words
from mammo_core.report import CONFORMAL_RULE, OOD_RULE

ACCENT = QColor(66, 135, 245)
ACCENT_TOP = QColor(35, 95, 200)
MUTED_BAR = QColor(105, 108, 116)
MUTED_TEXT = QColor(140, 144, 152)
MUTED_CSS = "#8c9098"
TRACK = QColor(62, 65, 72)
WARN_BG = "#fff3d6"
WARN_FG = "#7a4b00"
OK_BG = "#e6f2e8"
OK_FG = "#1d5e2a"


_ALL_NAMES = ("baseline", "mass_benign", "mass_malignant", "calcification_benign",
              "calcification_malignant", "mass", "calcification", "benign", "malignant")


class ProbabilityBars(QWidget):
    """Horizontal bars: class name | bar | percentage; the predicted class in bold unless the
    bars are ``muted`` (a model not measured above chance: grey, nothing bold). The percentage
    column is always inside the widget; a class name gets its full width while the bar keeps
    ``GOOD_BAR`` pixels, and is elided only in narrower widgets (the full name and the number
    are then in the row's tooltip)."""

    ROW_H = 24
    MIN_BAR = 16
    GOOD_BAR = 48

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[tuple[str, float, bool]] = []
        self._muted = False
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(120)

    def set_probabilities(self, probs: dict[str, float], predicted: str | None,
                          order: Sequence[str] | None = None, muted: bool = False) -> None:
        names = list(order) if order else list(probs)
        self._muted = bool(muted)
        self._rows = [(class_label(n), float(probs.get(n, 0.0)), n == predicted and not muted)
                      for n in names]
        self.setMinimumHeight(self.ROW_H * len(self._rows) + 4)
        self.updateGeometry()
        self.update()

    def rows(self) -> list[tuple[str, float, bool]]:
        """(label, probability, bold) per row."""
        return list(self._rows)

    @property
    def muted(self) -> bool:
        return self._muted

    def sizeHint(self):
        return QSize(320, self.ROW_H * max(len(self._rows), 1) + 4)

    def layout_columns(self, width: int | None = None) -> tuple[int, int, int, int]:
        """(label width, bar x, bar width, percentage x) for ``width``: the percentage column
        ("100.0%" in bold) is reserved first and ends inside the widget."""
        w = self.width() if width is None else width
        bold = QFont(self.font())
        bold.setBold(True)
        fm = QFontMetrics(bold)
        pct_w = fm.horizontalAdvance("100.0%") + 6
        need = max(fm.horizontalAdvance(class_label(n)) for n in _ALL_NAMES) + 10
        room = w - pct_w - 8
        # the name whole while the bar keeps GOOD_BAR px (a fixed 55 % cap cut "Normal tissue
        # (baseline)" in bold at the panel's minimum width under the app's 10 pt style sheet)
        label_w = min(need, max(room - self.GOOD_BAR, int(w * 0.55)))
        label_w = max(min(label_w, room - self.MIN_BAR), 0)
        bar_x = label_w
        bar_w = max(w - label_w - pct_w - 4, 0)
        return label_w, bar_x, bar_w, w - pct_w

    def _row_font(self, top: bool) -> QFont:
        font = QFont(self.font())
        font.setBold(top)
        return font

    def shown_labels(self, width: int | None = None) -> list[str]:
        """The class names as drawn at ``width`` (elided where the column is too narrow; empty
        when there is no label column)."""
        label_w = self.layout_columns(width)[0]
        if label_w <= 12:
            return ["" for _ in self._rows]
        return [QFontMetrics(self._row_font(top)).elidedText(label, Qt.TextElideMode.ElideRight, label_w - 6)
                for label, _p, top in self._rows]

    def tooltip_at(self, y: float) -> str:
        """The full class name and percentage of the row at height ``y`` ("" between rows)."""
        i = int((y - 2) // self.ROW_H)
        if y < 2 or not 0 <= i < len(self._rows):
            return ""
        label, prob, _top = self._rows[i]
        return f"{label}: {100 * prob:.1f}%"

    def event(self, ev):
        if ev.type() == QEvent.Type.ToolTip:
            tip = self.tooltip_at(ev.pos().y())
            if tip:
                QToolTip.showText(ev.globalPos(), tip, self)
            else:
                QToolTip.hideText()
                ev.ignore()
            return True
        return super().event(ev)

    def paintEvent(self, _event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        label_w, bar_x, bar_w, pct_x = self.layout_columns()
        pct_w = self.width() - pct_x
        shown_labels = self.shown_labels()
        fg = MUTED_TEXT if self._muted else self.palette().color(self.foregroundRole())
        for i, (_label, prob, top) in enumerate(self._rows):
            y = 2 + i * self.ROW_H
            p.setFont(self._row_font(top))
            p.setPen(fg)
            if label_w > 12:
                shown = shown_labels[i]
                p.drawText(QRectF(0, y, label_w - 6, self.ROW_H), int(Qt.AlignmentFlag.AlignVCenter
                           | Qt.AlignmentFlag.AlignLeft), shown)
            if bar_w > 0:
                track = QRectF(bar_x, y + 5, bar_w, self.ROW_H - 10)
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(TRACK)
                p.drawRoundedRect(track, 3, 3)
                p.setBrush(MUTED_BAR if self._muted else (ACCENT_TOP if top else ACCENT))
                p.drawRoundedRect(QRectF(bar_x, y + 5, max(bar_w * min(max(prob, 0), 1), 0.0),
                                         self.ROW_H - 10), 3, 3)
            p.setPen(fg)
            p.drawText(QRectF(pct_x, y, pct_w, self.ROW_H),
                       int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight),
                       f"{100 * prob:.1f}%")
        p.end()


_QUESTION = {
    "abnormal_vs_baseline": "abnormal vs normal",
    "mass_vs_calcification": "mass vs calcification",
    "benign_vs_malignant": "benign vs malignant",
}
AGREEMENT_RULE_TIP = AGREEMENT_RULE
QUALITY_TIP = QUALITY_RULE


def _esc(text: str) -> str:
    import html

    return html.escape(str(text), quote=False)


def _html(name: str) -> str:
    """A name for a rich-text label: escaped, breakable anywhere."""
    return breakable(_esc(name))


def _status_words(q: ModelQuality) -> str:
    return AT_CHANCE_TEXT if q.at_chance else q.status


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
        # never sideways: long names wrap, numbers keep their column
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._quality: dict[str, ModelQuality] = {}
        self._questions: dict[str, list[ModelQuality]] = {}
        self.agreement_state: str | None = None
        body = QWidget()
        self.setWidget(body)
        self._layout = QVBoxLayout(body)
        self._layout.setContentsMargins(12, 10, 12, 10)
        self._layout.setSpacing(6)

        self.patch_label = QLabel("No patch selected")
        self.patch_label.setWordWrap(True)
        self.patch_label.setObjectName("patchName")
        self.patch_label.setTextFormat(Qt.TextFormat.PlainText)  # file names are not markup
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

        self.set_label = QLabel("")
        self.set_label.setWordWrap(True)
        self.set_label.setObjectName("conformalSet")
        self._layout.addWidget(self.set_label)

        self.ood_label = QLabel("")
        self.ood_label.setWordWrap(True)
        self.ood_label.setObjectName("oodWarning")
        self._layout.addWidget(self.ood_label)

        self.uncertainty_label = QLabel("")
        self.uncertainty_label.setWordWrap(True)
        self.uncertainty_label.setObjectName("uncertainty")
        self._layout.addWidget(self.uncertainty_label)

        self.ensemble_quality_label = QLabel("")
        self.ensemble_quality_label.setWordWrap(True)
        self.ensemble_quality_label.setObjectName("ensembleQuality")
        self._layout.addWidget(self.ensemble_quality_label)

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
                  self.uncertainty_label, self.ensemble_quality_label, self.members_title):
            w.setVisible(on)
        for w in self._member_widgets:
            w.setVisible(on)

    def show_message(self, text: str, patch_name: str | None = None) -> None:
        if patch_name is not None:
            self.patch_label.setText(breakable(patch_name))
        self.state_label.setText(text)
        self.state_label.setVisible(bool(text))
        self._show_result_widgets(False)

    def set_patch(self, name: str, true_label: str | None, split: str = "") -> None:
        self.patch_label.setText(breakable(name))
        bits = []
        if true_label:
            bits.append(f"True label (from the data): <b>{_esc(class_label(true_label))}</b>")
        if split:  # words from the data's files: escaped, never markup
            bits.append(f"Split: {_esc(split)}")
        self.truth_label.setText("<br>".join(bits))
        self.truth_label.setVisible(bool(bits))

    def set_models(self, models: Sequence[Any]) -> None:
        """``models``: BundleInfo-like objects (name, task, version, kind, card); each one's
        held-out quality is read from its card."""
        self._quality = {}
        self._questions = {}
        for m in models:
            card = getattr(m, "card", None)
            self._quality[m.name] = quality_from_card(card, m.name)
            if getattr(m, "kind", "model") == "ensemble":
                self._questions[m.name] = question_qualities(card)
        if not models:
            self.models_label.setText("No models loaded.")
            return
        lines = []
        for m in models:
            kind = getattr(m, "kind", "model")
            lines.append(f"<b>{_html(m.name)}</b> — {task_label(m.task)}"
                         f"{' (ensemble)' if kind == 'ensemble' else ''}, v{_esc(m.version)}")
        self.models_label.setText("<br>".join(lines))

    def quality(self, name: str) -> ModelQuality:
        """The held-out quality of a model (``not measured`` when its card gives none)."""
        return self._quality.get(name) or ModelQuality(name)

    def show_prediction(self, pred) -> None:
        """Fill the panel from a ``PatchPrediction``."""
        self.state_label.setVisible(False)
        ens = getattr(pred, "ensemble", None)
        self._show_result_widgets(True)
        if ens is not None:
            order = [c for c in CLASS_NAMES if c in ens.probabilities] or list(ens.probabilities)
            self.ensemble_title.setText(f"Ensemble ({_html(ens.model)}) — 5 classes"
                                        if ens.model and ens.model != "ensemble"
                                        else "Ensemble — 5 classes")
            # the bold bar is the call, always (CALL_RULE), even where it is not the longest
            self.ensemble_bars.set_probabilities(ens.probabilities, ens.predicted, order)
            p = float(ens.probabilities.get(ens.predicted, 0.0))
            p_abn = 1.0 - float(ens.probabilities.get("baseline", 0.0))
            self.verdict_label.setText(
                f"Ensemble call: <b>{class_label(ens.predicted)}</b> ({100 * p:.0f}%)"
                f"<br><span style='font-size:small'>P(abnormal) {100 * p_abn:.0f}%. "
                f"Rule: {_esc(CALL_RULE)}.</span>")
            self._show_set(pred)
            self._show_agreement(pred, p)
            self._show_ensemble_quality(ens.model)
        else:
            self.ensemble_title.setText("Ensemble — not available")
            self.verdict_label.setText("No ensemble bundle is loaded; see the member models.")
            self.ensemble_bars.set_probabilities({}, None)
            self.uncertainty_label.setVisible(False)
            self.ensemble_quality_label.setVisible(False)
            self.set_label.setVisible(False)
        self._show_ood(pred)
        self._set_members(list(pred.per_model.values()),
                          normal_call=ens is not None and ens.predicted == "baseline")

    def _show_set(self, pred) -> None:
        """The call's conformal set at its level; more than one class (or none) reads uncertain."""
        cset, level = getattr(pred, "conformal", None), getattr(pred, "level", None)
        if cset is None or level is None:
            self.set_label.setText("<span style='font-size:small'>No conformal set (this ensemble "
                                   "was fitted without one)</span>")
            self.set_label.setStyleSheet("")
        else:
            words = _esc(set_words(cset, level, class_label))
            if pred.uncertain:
                self.set_label.setText(f"\u26a0 <b>Uncertain</b> — {words}")
                self.set_label.setStyleSheet(
                    f"background:{WARN_BG}; color:{WARN_FG}; border-radius:4px; padding:6px;")
            else:
                self.set_label.setText(words)
                self.set_label.setStyleSheet("padding:2px;")
        self.set_label.setToolTip(CONFORMAL_RULE)
        self.set_label.setVisible(True)

    def _show_ood(self, pred) -> None:
        """The out-of-distribution check, with every answer: the warnings, or what was measured."""
        check = getattr(pred, "ood", None)
        if check is None:
            self.ood_label.setVisible(False)
            return
        if check.warnings:
            self.ood_label.setText("<br>".join(f"\u26a0 <b>{_esc(w)}</b>" for w in check.warnings))
            self.ood_label.setStyleSheet(
                f"background:{WARN_BG}; color:{WARN_FG}; border-radius:4px; padding:6px;")
        else:
            dist = "" if check.distance is None else f", feature distance {check.distance:.1f}"
            self.ood_label.setText(f"<span style='font-size:small'>Like the training patches "
                                   f"(background {100 * check.background:.0f} %{dist})</span>")
            self.ood_label.setStyleSheet("")
        self.ood_label.setToolTip(OOD_RULE)
        self.ood_label.setVisible(True)

    def _show_agreement(self, pred, p_call: float) -> None:
        """The agreement line (mammo_core.confidence.agreement): never "agree" on a weak call."""
        unc = getattr(pred, "uncertainty", None)
        a = agreement(p_call, bool(getattr(pred, "flagged", False)))
        detail = [f"call {100 * p_call:.0f}%"]
        if unc is not None:
            detail.append(f"uncertainty {unc:.2f}")
        text = a.text
        if a.state == AGREE and unc is None:
            text = "Agreement not measured (one model per question)"
        # a secondary line in small grey type, never a reassuring box: the members share one
        # frozen backbone and agree by construction (the conformal set above says how sure)
        sign = "\u26a0 " if a.state in (DISAGREE, LOW) else ""
        self.uncertainty_label.setText(f"<span style='font-size:small'>{sign}{text} "
                                       f"({', '.join(detail)})</span>")
        self.uncertainty_label.setStyleSheet(f"color:{MUTED_CSS};")
        self.uncertainty_label.setToolTip(AGREEMENT_RULE_TIP)
        self.agreement_state = a.state
        self.uncertainty_label.setVisible(True)

    def _show_ensemble_quality(self, name: str) -> None:
        qs = self._questions.get(name) or []
        overall = self._quality.get(name)
        parts = []
        for q in qs:
            words = _QUESTION.get(q.question or "", (q.question or "").replace("_", " "))
            item = f"{words} {q.auc_text().removeprefix('AUC ')}"
            if not q.trusted:
                item = f"<span style='color:{MUTED_CSS}'>{item} — {_status_words(q)}</span>"
            parts.append(item)
        if not parts and overall is not None:
            parts.append(overall.text())
        blind = all(q.blind for q in qs) and (overall is None or overall.blind)
        where = "held-out data" if blind else f"the test split ({NOT_BLIND_TEXT})"
        self.ensemble_quality_label.setText(
            f"<span style='font-size:small'>Measured on {where}: " + "; ".join(parts) + "</span>"
            if parts else "")
        self.ensemble_quality_label.setVisible(bool(parts))

    def _set_members(self, outputs, normal_call: bool = False) -> None:
        for w in self._member_widgets:
            self._members_box.removeWidget(w)
            w.deleteLater()
        self._member_widgets = []
        for out in outputs:
            q = self.quality(out.model)
            lesion_only = asks_if_lesion(out.task, out.probabilities)
            answer = f"{task_label(out.task)}: {_esc(member_words(out))}"
            # a lesion-only member answers a question the ensemble did not ask on normal tissue
            muted = not q.trusted or (lesion_only and normal_call)
            if lesion_only and normal_call:
                answer += " (not asked: the call is normal tissue)"
            if not muted:
                title = QLabel(f"<b>{_html(out.model)}</b> · {answer}<br>"
                               f"<span style='font-size:small'>{q.text()}</span>")
            else:  # at chance / below / not measured: grey, nothing bold
                title = QLabel(f"<span style='color:{MUTED_CSS}'>{_html(out.model)} · {answer}<br>"
                               f"<span style='font-size:small'>{q.text()}</span></span>")
            title.setWordWrap(True)
            title.setObjectName("memberTitle")
            title.setProperty("quality", q.status)
            title.setToolTip(QUALITY_TIP)
            bars = ProbabilityBars()
            bars.set_probabilities(out.probabilities, out.predicted, muted=muted)
            for w in (title, bars):
                self._members_box.addWidget(w)
                self._member_widgets.append(w)
        self.members_title.setVisible(bool(outputs))

    def member_titles(self) -> list[QLabel]:
        return [w for w in self._member_widgets if isinstance(w, QLabel)]

    def member_bars(self) -> list[ProbabilityBars]:
        return [w for w in self._member_widgets if isinstance(w, ProbabilityBars)]
