"""Confidence as measured: quality from the card, "at chance", the agreement rule, the call rule."""
from __future__ import annotations

import json

import numpy as np
import pytest
from bundle_factory import typed_card

from mammo_core.confidence import (
    ABOVE,
    AGREE,
    AGREEMENT_RULE,
    AT_CHANCE,
    AT_CHANCE_TEXT,
    BELOW,
    CALL_RULE,
    DISAGREE,
    LOW,
    LOW_CALL_PROBABILITY,
    UNMEASURED,
    agreement,
    quality_from_card,
    question_qualities,
)
from mammo_core.ensemble import call_five_class
from mammo_core.inference import bundle_summary
from mammo_core.paths import models_dir
from mammo_core.session import Session


def _card(auc, ci, n=14, task="mass_calc", **extra):
    return typed_card({"split": "public_test", "n": n, "auc": auc, "auc_ci95": ci, **extra}, task=task)


@pytest.mark.parametrize(("auc", "ci", "status"), [
    (0.89, [0.60, 1.0], ABOVE),
    (0.33, [0.06, 0.65], AT_CHANCE),
    (0.66, [0.49, 0.83], AT_CHANCE),
    (0.55, [0.50, 0.60], AT_CHANCE),  # an interval touching 0.5 includes it
    (0.20, [0.05, 0.45], BELOW),
    (0.70, None, UNMEASURED),
    (None, [0.6, 0.9], UNMEASURED),
    (0.7, [0.9, 0.6], UNMEASURED),  # malformed interval
    (1.5, [0.6, 1.0], UNMEASURED),  # not an AUC
])
def test_status_from_the_card_interval(auc, ci, status):
    q = quality_from_card(_card(auc, ci))
    assert q.status == status
    assert q.trusted is (status == ABOVE)  # only above chance may be bold
    assert q.at_chance is (status == AT_CHANCE)
    assert (AT_CHANCE_TEXT in q.text()) is (status == AT_CHANCE)


def test_card_without_metrics_is_not_measured_never_an_error():
    for card in (None, typed_card(), typed_card({"n": 7})):
        q = quality_from_card(card)
        assert q.status == UNMEASURED and not q.trusted and "not measured" in q.text()


@pytest.mark.parametrize("metrics", ["junk", {"n": "7"}, {"auc": "0.9"}, {"auc": float("nan")},
                                     {"auc": 0.8, "auc_ci95": [0.6]}])
def test_a_card_with_malformed_metrics_is_refused_at_load_in_one_line(metrics):
    """A number of the wrong type is the card's error, said when it is read (never a quietly
    'not measured' model)."""
    from mammo_core.errors import BundleError

    with pytest.raises(BundleError, match=r"^card.json: card metrics") as err:
        typed_card(metrics)
    assert "\n" not in str(err.value)


def test_text_gives_auc_interval_and_n():
    q = quality_from_card(_card(0.3333, [0.0611, 0.6504]))
    assert q.text() == "held-out AUC 0.33 (95% CI 0.06\u20130.65), n=14 \u2014 at chance on held-out data"
    assert q.to_dict() == {"auc": 0.3333, "auc_ci95": [0.0611, 0.6504], "n": 14, "split": "public_test",
                           "status": AT_CHANCE, "blind": True}


def test_a_card_seen_before_a_change_is_not_called_held_out():
    """metrics.blind false (the split was seen before a later change): every text says
    test-split and not blind, for the model and for each ensemble question."""
    from mammo_core.confidence import NOT_BLIND_TEXT

    card = _card(0.96, [0.88, 1.0], n=28, task="five_class", blind=False, auc_abnormal_vs_baseline=0.96,
                 auc_abnormal_vs_baseline_ci95=[0.88, 1.0])
    q = quality_from_card(card)
    assert not q.blind and q.to_dict()["blind"] is False
    assert q.text().startswith(f"test-split ({NOT_BLIND_TEXT}) AUC 0.96") and "held-out" not in q.text()
    assert all(not qq.blind for qq in question_qualities(card))
    assert quality_from_card(_card(0.96, [0.88, 1.0])).blind  # no statement: blind, as measured once


def test_ensemble_questions_read_generically():
    card = _card(0.66, [0.53, 0.8], n=28, task="five_class", auc_abnormal_vs_baseline=0.81,
                 auc_abnormal_vs_baseline_ci95=[0.62, 0.94],
                 auc_benign_vs_malignant=0.33, auc_benign_vs_malignant_ci95=[0.06, 0.65],
                 auc_benign_vs_malignant_n=14, auc_ci_method="bootstrap")
    qs = {q.question: q for q in question_qualities(card)}
    assert set(qs) == {"abnormal_vs_baseline", "benign_vs_malignant"}
    assert qs["abnormal_vs_baseline"].status == ABOVE and qs["benign_vs_malignant"].status == AT_CHANCE
    assert qs["benign_vs_malignant"].n == 14
    assert question_qualities(_card(0.7, [0.6, 0.8])) == []


def test_every_bundled_card_has_a_measured_quality():
    """The shipped cards give each member's held-out AUC with an interval (whatever it is)."""
    infos = Session(models_dir()).available()
    assert infos
    for info in infos:
        q = quality_from_card(info.card)
        assert q.status != UNMEASURED, info.name
        assert bundle_summary(info).heldout.status == q.status


@pytest.mark.parametrize(("p", "flagged", "state"), [
    (0.90, False, AGREE),
    (0.50, False, AGREE),
    (0.49, False, LOW),
    (0.21, False, LOW),  # a 21 % call never reads "Models agree"
    (0.90, True, DISAGREE),
    (0.21, True, DISAGREE),
    (float("nan"), False, LOW),
])
def test_agreement_rule(p, flagged, state):
    a = agreement(p, flagged)
    assert a.state == state
    assert ("agree" in a.text.lower() and "disagree" not in a.text.lower()) is (state == AGREE)


def test_never_agree_below_the_low_probability_on_random_calls():
    rng = np.random.default_rng(0)
    for _ in range(500):
        p = float(rng.uniform(0, 1))
        if agreement(p, bool(rng.integers(0, 2))).state == AGREE:
            assert p >= LOW_CALL_PROBABILITY


def test_rules_are_words_with_their_numbers():
    assert "P(baseline) >= 50 %" in CALL_RULE
    assert "50 %" in AGREEMENT_RULE and "threshold" in AGREEMENT_RULE
    json.dumps({"call": CALL_RULE, "agreement": AGREEMENT_RULE})


def test_call_rule_matches_call_five_class():
    """Sample 007 of the issue: baseline 24.9 %, call 'mass malignant' at 24 %."""
    p = np.array([[0.249, 0.2, 0.24, 0.16, 0.151], [0.5, 0.1, 0.1, 0.2, 0.1], [0.49, 0.3, 0.01, 0.1, 0.1]])
    assert call_five_class(p).tolist() == [2, 0, 1]


def test_models_list_shows_held_out_quality(capsys):
    from mammo_core.cli import main

    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2:] == ["HELD-OUT", "QUALITY"]
    for info in Session(models_dir()).available():
        q = quality_from_card(info.card)
        row = next(ln for ln in lines[1:] if ln.split()[0] == info.name)
        assert row.endswith(q.status) and f"auc={q.auc:.3f} [{q.ci95[0]:.2f}, {q.ci95[1]:.2f}]" in row
    assert main(["models", "list", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all(b["heldout"]["status"] in (ABOVE, AT_CHANCE, BELOW) for b in out["bundles"])
