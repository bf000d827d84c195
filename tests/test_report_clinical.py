"""What a clinician reads in a report: summary page, true label, member quality (at-chance
members greyed, never bold), the call and agreement rules, page numbers and the disclaimer on
every page (PDF checked on the figures the PDF is made of)."""
from __future__ import annotations

import csv
import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.text import Text

from mammo_core import DISCLAIMER
from mammo_core.confidence import AGREEMENT_RULE, AT_CHANCE_TEXT, CALL_RULE
from mammo_core.io import Patch, ReadFailure
from mammo_core.report import PredictionRun, csv_text, pdf_pages, to_json
from mammo_core.session import ModelOutput, PatchPrediction

FIVE = ["baseline", "mass_benign", "mass_malignant", "calcification_benign", "calcification_malignant"]


def _prov():
    def model(name, task, classes, auc, ci, kind="model"):
        return {"name": name, "version": "1.0.0", "sha256": name[0] * 64, "task": task, "classes": classes,
                "kind": kind, "heldout": {"auc": auc, "auc_ci95": ci, "n": 14, "split": "public_test"}}

    return {"created": "2026-12-06T05:00:00+00:00", "software": {"version": "0.1.0"}, "disclaimer": DISCLAIMER,
            "models": [model("good_mass_calc", "mass_calc", ["mass", "calcification"], 0.89, [0.6, 1.0]),
                       model("chance_benign_malignant", "benign_malignant", ["benign", "malignant"],
                             0.33, [0.06, 0.65]),
                       {**model("ensemble", "five_class", FIVE, 0.66, [0.53, 0.8], "ensemble"),
                        "heldout_questions": {
                            "abnormal_vs_baseline": {"auc": 0.81, "auc_ci95": [0.62, 0.94], "n": 28},
                            "benign_vs_malignant": {"auc": 0.33, "auc_ci95": [0.06, 0.65], "n": 14}}}],
            "ensemble": {"name": "ensemble", "threshold": 0.1}}


def _run(n=3, label=True):
    rng = np.random.default_rng(3)
    patches, preds = [], []
    for i in range(n):
        p = Patch(rng.integers(0, 65535, (150, 150)).astype(np.uint16), f"/data/case_{i:03d}.png", None,
                  (2 if i % 2 else 0) if label else None)
        mc = ModelOutput("good_mass_calc", "mass_calc", {"mass": 0.8, "calcification": 0.2}, "mass")
        bm = ModelOutput("chance_benign_malignant", "benign_malignant", {"benign": 0.0, "malignant": 1.0},
                         "malignant")
        probs = dict(zip(FIVE, [0.249, 0.2, 0.24, 0.16, 0.151])) if i == 0 else \
            dict(zip(FIVE, [0.05, 0.05, 0.8, 0.05, 0.05]))
        call = "mass_malignant"
        ens = ModelOutput("ensemble", "five_class", probs, call)
        preds.append(PatchPrediction(p.source, p.index, p.sha256, {mc.model: mc, bm.model: bm}, ens,
                                     0.05, i == 2, 0.8))
        patches.append(p)
    return PredictionRun(preds, _prov(), [ReadFailure("bad.png", "not a readable PNG image")], patches)


def _texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_text()]


@pytest.fixture
def figs():
    out = list(pdf_pages(_run()))
    yield out
    for f in out:
        plt.close(f)


def test_every_page_has_the_disclaimer_and_its_number(figs):
    assert len(figs) == 1 + 3 + 1  # summary, three patches, unreadable inputs
    for i, fig in enumerate(figs, start=1):
        words = [t.get_text() for t in _texts(fig)]
        assert any(DISCLAIMER in w.lower() for w in words), i
        assert f"page {i} of {len(figs)}" in words


def test_summary_page_has_one_row_per_patch(figs):
    table = figs[0].axes[0].tables[0]
    cells = table.get_celld()
    head = [cells[(0, c)].get_text().get_text() for c in range(8)]
    assert head == ["#", "patch", "call", "P(call)", "set", "warning", "members", "true label"]
    rows = [[cells[(r, c)].get_text().get_text() for c in range(8)] for r in range(1, 4)]
    assert [r[1] for r in rows] == ["case_000.png", "case_001.png", "case_002.png"]
    assert rows[0][2] == "mass malignant" and rows[0][3] == "0.240" and rows[0][4] == "0.050"
    assert rows[0][6] == "low"  # a 24 % call is never "agree"
    assert rows[1][6] == "agree" and rows[2][6] == "disagree"
    assert [r[5] for r in rows] == ["", "", ""]  # no OOD check in these made-up predictions
    assert [r[7] for r in rows] == ["baseline", "mass malignant", "baseline"]
    words = " ".join(t.get_text() for t in _texts(figs[0]))
    assert CALL_RULE in words and AGREEMENT_RULE in words


def test_patch_page_member_quality_greyed_and_never_bold(figs):
    page = figs[1]
    texts = _texts(page)
    words = [t.get_text() for t in texts]
    assert any("True label (from the data): baseline" in w for w in words)
    assert CALL_RULE in " ".join(" ".join(words).split())  # wrapped over lines
    assert any(w.startswith("Low confidence") for w in words)
    flat = " ".join(" ".join(words).split())
    assert "abnormal vs baseline 0.81 (95% CI 0.62\u20130.94)" in flat
    assert "benign vs malignant 0.33 (95% CI 0.06\u20130.65) (at chance)" in flat
    i_good = next(i for i, t in enumerate(texts)
                  if "good_mass_calc (mass_calc): if a lesion: mass 80 % / calcification 20 %" in t.get_text())
    i_bad = next(i for i, t in enumerate(texts)
                 if "chance_benign_malignant (benign_malignant): if a lesion: benign 0 % / malignant 100 %"
                 in t.get_text())
    good, good_q, bad, bad_q = texts[i_good], texts[i_good + 1], texts[i_bad], texts[i_bad + 1]
    assert good_q.get_text().strip() == "held-out AUC 0.89 (95% CI 0.60\u20131.00), n=14"
    assert "AUC 0.33 (95% CI 0.06\u20130.65)" in bad_q.get_text() and AT_CHANCE_TEXT in bad_q.get_text()
    for t in (bad, bad_q):  # greyed
        assert to_rgba(t.get_color()) != to_rgba(good.get_color()) == to_rgba(good_q.get_color())
    for fig in figs:
        for t in _texts(fig):
            if "chance_benign_malignant" in t.get_text():
                assert t.get_fontweight() in ("normal", 400), t.get_text()
    # the red bar is the call even where baseline is the longest bar
    bars = next(a for a in page.axes if a.patches)
    reds = [i for i, b in enumerate(bars.patches) if to_rgba(b.get_facecolor()) == to_rgba("tab:red")]
    assert reds == [FIVE.index("mass_malignant")]


def test_no_true_label_line_when_unknown():
    figs = list(pdf_pages(_run(2, label=False)))
    try:
        for fig in figs:
            assert not any("True label" in t.get_text() for t in _texts(fig))
            cells = figs[0].axes[0].tables[0].get_celld()
        assert cells[(1, 7)].get_text().get_text() == "\u2013"
    finally:
        for f in figs:
            plt.close(f)


def test_one_patch_has_no_summary_page():
    figs = list(pdf_pages(PredictionRun(_run(1).predictions, _prov(), (), _run(1).patches)))
    try:
        assert len(figs) == 1 and not figs[0].axes[0].tables
    finally:
        for f in figs:
            plt.close(f)


def test_json_and_csv_state_rules_quality_truth_and_agreement():
    run = _run()
    d = to_json(run)
    assert d["rules"]["call"] == CALL_RULE and d["rules"]["agreement"] == AGREEMENT_RULE
    rows = d["predictions"]
    chance = [r for r in rows if r["model"] == "chance_benign_malignant"]
    assert all(r["quality"] == "at chance" and r["heldout_auc"] == 0.33 for r in chance)
    assert {r["quality"] for r in rows if r["model"] == "good_mass_calc"} == {"above chance"}
    ens = [r for r in rows if r["model"] == "ensemble"]
    assert [r["agreement"] for r in ens] == ["low", "agree", "disagree"]
    assert [r["true_label"] for r in ens] == ["baseline", "mass_malignant", "baseline"]
    assert all(r["agreement"] is None for r in rows if r["model"] != "ensemble")

    first, rest = csv_text(run).split("\n", 1)
    assert first.startswith("# " + DISCLAIMER) and CALL_RULE in first and AGREEMENT_RULE in first
    table = list(csv.DictReader(io.StringIO(rest)))
    c = next(r for r in table if r["model"] == "chance_benign_malignant")
    assert c["quality"] == "at chance" and c["heldout_auc_ci_low"] == "0.0600" and c["true_label"] == "baseline"
    assert next(r for r in table if r["model"] == "ensemble")["agreement"] == "low"
