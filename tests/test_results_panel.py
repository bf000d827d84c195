"""The results panel shows confidence as measured: each member's held-out AUC next to its
answer, at-chance members greyed and never bold, the bold ensemble bar is the call, the
agreement line never says "agree" on a weak call, long names wrap and numbers stay visible."""
from __future__ import annotations

import html
from dataclasses import dataclass

import pytest

pytest.importorskip("PyQt6.QtWidgets")

from bundle_factory import typed_card
from PyQt6.QtWidgets import QLabel

from app.results_panel import ProbabilityBars, ResultsPanel
from app.text import breakable
from mammo_core.card import Card
from mammo_core.confidence import AT_CHANCE_TEXT, CALL_RULE, quality_from_card
from mammo_core.paths import models_dir
from mammo_core.session import ModelOutput, PatchPrediction, Session

pytestmark = pytest.mark.gui
FIVE = ["baseline", "mass_benign", "mass_malignant", "calcification_benign", "calcification_malignant"]


@dataclass
class Info:
    name: str
    task: str
    version: str = "1.0.0"
    kind: str = "model"
    card: Card | None = None


def _card(auc, ci, task="mass_calc", **extra):
    return typed_card({"split": "public_test", "n": 14, "auc": auc, "auc_ci95": ci, **extra}, task=task)


MODELS = [
    Info("good_mass_calc", "mass_calc", card=_card(0.89, [0.6, 1.0])),
    Info("chance_benign_malignant", "benign_malignant", card=_card(0.33, [0.06, 0.65])),
    Info("no_card_metrics", "baseline_mass_calc"),
    Info("ensemble", "five_class", kind="ensemble",
         card=_card(0.66, [0.53, 0.8], "five_class", auc_abnormal_vs_baseline=0.81,
                    auc_abnormal_vs_baseline_ci95=[0.62, 0.94],
                    auc_benign_vs_malignant=0.33, auc_benign_vs_malignant_ci95=[0.06, 0.65])),
]


def _pred(probs=(0.249, 0.2, 0.24, 0.16, 0.151), call="mass_malignant", flagged=False, unc=0.05):
    per = {
        "good_mass_calc": ModelOutput("good_mass_calc", "mass_calc", {"mass": 0.8, "calcification": 0.2}, "mass"),
        "chance_benign_malignant": ModelOutput("chance_benign_malignant", "benign_malignant",
                                               {"benign": 0.0, "malignant": 1.0}, "malignant"),
        "no_card_metrics": ModelOutput("no_card_metrics", "baseline_mass_calc",
                                       {"baseline": 0.1, "mass": 0.7, "calcification": 0.2}, "mass"),
    }
    ens = ModelOutput("ensemble", "five_class", dict(zip(FIVE, probs)), call)
    return PatchPrediction("a.png", None, "0" * 64, per, ens, unc, flagged, 0.9)


@pytest.fixture
def panel(qtbot):
    p = ResultsPanel()
    qtbot.addWidget(p)
    p.resize(380, 900)
    p.show()
    p.set_models(MODELS)
    return p


def _titles(panel):
    return {t.text().split("·")[0]: t for t in panel.member_titles()}


def test_member_quality_next_to_answer_and_at_chance_never_bold(panel):
    panel.show_prediction(_pred())
    titles = panel.member_titles()
    bars = panel.member_bars()
    assert len(titles) == len(bars) == 3
    by_q = {t.property("quality"): (t, b) for t, b in zip(titles, bars)}
    good_t, good_b = by_q["above chance"]
    bad_t, bad_b = by_q["at chance"]
    none_t, none_b = by_q["not measured"]
    assert "<b>" in good_t.text() and "AUC 0.89 (95% CI 0.60\u20131.00)" in good_t.text()
    assert any(bold for _l, _p, bold in good_b.rows()) and not good_b.muted
    assert "AUC 0.33 (95% CI 0.06\u20130.65)" in bad_t.text() and AT_CHANCE_TEXT in bad_t.text()
    for t, b in ((bad_t, bad_b), (none_t, none_b)):
        assert "<b>" not in t.text() and b.muted
        assert not any(bold for _l, _p, bold in b.rows())


def test_bold_ensemble_bar_is_the_call_and_rule_is_written(panel):
    panel.show_prediction(_pred())  # baseline 24.9 % is the longest bar, the call is mass malignant
    rows = panel.ensemble_bars.rows()
    assert [bold for _l, _p, bold in rows] == [False, False, True, False, False]
    text = panel.verdict_label.text()
    assert "Mass, malignant" in text and html.escape(CALL_RULE, quote=False) in text


@pytest.mark.parametrize(("probs", "call", "flagged", "state"), [
    ((0.249, 0.2, 0.24, 0.16, 0.151), "mass_malignant", False, "low"),  # a 24 % call
    ((0.05, 0.05, 0.8, 0.05, 0.05), "mass_malignant", False, "agree"),
    ((0.05, 0.05, 0.8, 0.05, 0.05), "mass_malignant", True, "disagree"),
])
def test_agreement_line(panel, probs, call, flagged, state):
    panel.show_prediction(_pred(probs, call, flagged))
    assert panel.agreement_state == state
    text = panel.uncertainty_label.text()
    assert ("Members agree with each other" in text) is (state == "agree")
    assert "Models agree" not in text
    # a secondary line: never a green reassuring box
    assert "background" not in panel.uncertainty_label.styleSheet()


def _pred_with(call="mass_malignant", cset=("mass_malignant",), warnings=(), background=0.02):
    from mammo_core.ood import OodCheck

    base = _pred((0.05, 0.05, 0.8, 0.05, 0.05) if call != "baseline" else (0.8, 0.05, 0.05, 0.05, 0.05), call)
    import dataclasses

    return dataclasses.replace(base, conformal=cset, level=0.9,
                               ood=OodCheck(background, 3.2, tuple(warnings)))


def test_conformal_set_shown_and_more_than_one_class_reads_uncertain(panel):
    panel.show_prediction(_pred_with(cset=("mass_malignant",)))
    assert "90 % set: Mass, malignant" in panel.set_label.text()
    assert "Uncertain" not in panel.set_label.text()
    panel.show_prediction(_pred_with(cset=("baseline", "mass_benign")))
    text = panel.set_label.text()
    assert "Uncertain" in text and "90 % set:" in text and "Mass, benign" in text


def test_ood_warning_with_the_answer(panel):
    from mammo_core.ood import background_text

    panel.show_prediction(_pred_with())
    assert "Like the training patches" in panel.ood_label.text() and panel.ood_label.isVisible()
    w = background_text(0.24)
    panel.show_prediction(_pred_with(warnings=(w,), background=0.24))
    assert "24 % of this patch is outside the breast" in panel.ood_label.text()


def test_lesion_only_members_say_their_question_and_grey_on_a_normal_call(panel):
    panel.show_prediction(_pred_with())
    good = panel.member_titles()[0]  # good_mass_calc
    assert "if a lesion: mass 80 % / calcification 20 %" in good.text() and "<b>" in good.text()
    panel.show_prediction(_pred_with(call="baseline"))
    good = panel.member_titles()[0]
    assert "if a lesion" in good.text() and "<b>" not in good.text()
    bars = panel.member_bars()[0]
    assert bars.muted


def test_ensemble_question_quality_shown(panel):
    panel.show_prediction(_pred())
    text = panel.ensemble_quality_label.text()
    assert "abnormal vs normal 0.81" in text and "benign vs malignant 0.33" in text and AT_CHANCE_TEXT in text


def test_a_not_blind_ensemble_is_shown_as_a_test_split_figure(panel):
    """An ensemble whose card says its split was seen before a later change (metrics.blind
    false) is not shown as "measured on held-out data"."""
    from mammo_core.confidence import NOT_BLIND_TEXT

    panel.show_prediction(_pred())
    assert "Measured on held-out data" in panel.ensemble_quality_label.text()
    seen = Info("ensemble", "five_class", kind="ensemble",
                card=_card(0.96, [0.88, 1.0], "five_class", blind=False, auc_abnormal_vs_baseline=0.96,
                           auc_abnormal_vs_baseline_ci95=[0.88, 1.0]))
    panel.set_models([*MODELS[:3], seen])
    panel.show_prediction(_pred())
    text = panel.ensemble_quality_label.text()
    assert "held-out" not in text and "test split" in text and NOT_BLIND_TEXT in text


def test_long_names_wrap_and_numbers_stay_visible(panel, qtbot):
    long = "/data/" + "very_long_patient_folder_name_without_spaces" * 4 + "/Calc-Training_P_01234_LEFT_MLO.png"
    panel.set_patch(long, "mass_malignant", "train")
    panel.show_prediction(_pred())
    qtbot.wait(50)
    assert panel.horizontalScrollBar().maximum() == 0
    assert panel.widget().width() <= panel.viewport().width()
    assert panel.patch_label.text().replace("\u200b", "") == long
    for bars in (panel.ensemble_bars, *panel.member_bars()):
        _lw, _bx, _bw, pct_x = bars.layout_columns()
        assert bars.width() > 0 and 0 < pct_x < bars.width()
        assert bars.geometry().right() <= panel.viewport().width()


def test_bar_columns_keep_the_percentage_inside_at_any_width(qtbot):
    b = ProbabilityBars()
    qtbot.addWidget(b)
    b.set_probabilities({"baseline": 1.0}, "baseline")
    for w in (120, 200, 360, 800):
        label_w, bar_x, bar_w, pct_x = b.layout_columns(w)
        assert 0 <= label_w <= bar_x and bar_x + bar_w <= pct_x < w
        assert w - pct_x >= b.fontMetrics().horizontalAdvance("100.0%")


def test_bold_baseline_name_is_whole_at_the_minimum_width_under_the_app_style(qtbot, dark_style):
    """Under create_app()'s 10 pt style sheet the bold "Normal tissue (baseline)" was cut to
    "Normal tissue (baselin…" at the panel's minimum width; now it is whole there, and where a
    widget is too narrow for it, the row's tooltip has the whole name and the number."""
    p = ResultsPanel()
    qtbot.addWidget(p)
    p.resize(p.minimumWidth(), 900)
    p.show()
    p.set_models(MODELS)
    p.show_prediction(_pred(probs=(0.6, 0.1, 0.1, 0.1, 0.1), call="baseline"))
    qtbot.wait(50)
    bars = p.ensemble_bars
    assert bars.rows()[0] == ("Normal tissue (baseline)", 0.6, True)  # the bold row
    assert 0 < bars.width() <= p.viewport().width()
    assert bars.shown_labels() == [label for label, _p, _b in bars.rows()]
    for member in p.member_bars():
        assert member.shown_labels() == [label for label, _p, _b in member.rows()]
    _lw, _bx, bar_w, pct_x = bars.layout_columns()
    assert bar_w >= bars.GOOD_BAR and pct_x < bars.width()
    narrow = bars.shown_labels(200)[0]
    assert narrow != "Normal tissue (baseline)" and narrow.endswith("…")
    assert bars.tooltip_at(2 + bars.ROW_H / 2) == "Normal tissue (baseline): 60.0%"
    assert bars.tooltip_at(2 + 5.5 * bars.ROW_H) == ""
    from PyQt6.QtCore import QEvent, QPoint
    from PyQt6.QtGui import QHelpEvent
    from PyQt6.QtWidgets import QApplication, QToolTip

    at = QPoint(5, 2 + bars.ROW_H // 2)
    QApplication.sendEvent(bars, QHelpEvent(QEvent.Type.ToolTip, at, bars.mapToGlobal(at)))
    assert QToolTip.text() == "Normal tissue (baseline): 60.0%"
    QToolTip.hideText()


def test_breakable():
    assert breakable("a_b") == "a_\u200bb"
    assert breakable("x" * 40).count("\u200b") == 2
    assert breakable("") == "" and breakable(None) == ""


def test_bundled_at_chance_members_never_bold(qtbot):
    """With the shipped cards: every member whose card interval includes 0.5 is grey."""
    infos = Session(models_dir()).available()
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.set_models(infos)
    members = [i for i in infos if i.kind == "model"]
    per = {}
    for i in members:
        probs = {c: 0.0 for c in i.classes}
        probs[i.classes[-1]] = 1.0  # "Malignant 100.0 %"
        per[i.name] = ModelOutput(i.name, i.task, probs, i.classes[-1])
    pred = PatchPrediction("s.png", None, "0" * 64, per, None, None, False)
    panel.show_prediction(pred)
    for info, title, bars in zip(members, panel.member_titles(), panel.member_bars()):
        q = quality_from_card(info.card)
        assert isinstance(title, QLabel) and title.property("quality") == q.status
        if not q.trusted:
            assert not any(bold for _l, _p, bold in bars.rows()), info.name
            assert "<b>" not in title.text()


def test_colour_bar_uses_the_heatmap_colours():
    import numpy as np

    from app.imaging import blend, colour_bar
    from mammo_core.explain import colorize

    bar = colour_bar(64, 5)
    assert bar.shape == (5, 64, 3) and bar.dtype == np.uint8
    np.testing.assert_array_equal(bar[0, 0], colorize(np.zeros((1, 1)))[0, 0])
    np.testing.assert_array_equal(bar[0, -1], colorize(np.ones((1, 1)))[0, 0])
    grey = np.full((4, 4), 100, np.uint8)
    heat = np.full((4, 4, 3), 250, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[:, 2:] = True
    out = blend(grey, heat, 0.5, mask)
    assert (out[:, :2] == 100).all() and (out[:, 2:] == 175).all()
