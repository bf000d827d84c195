"""Confidence as measured: each model's held-out AUC from its card, "at chance", and the rules
the viewer and every report use to word the ensemble's call. One place; no Qt, no TensorFlow.

**Quality of a model** (:func:`quality_from_card`): the card's ``metrics`` block, written once
after training on the held-out split (``split``, ``n``, ``auc``, ``auc_ci95`` = [low, high] 95 %
interval). The status is

* ``above chance`` when the interval lies wholly above 0.5,
* ``at chance`` when it includes 0.5 (``low <= 0.5 <= high``): shown greyed with
  "at chance on held-out data", never in bold,
* ``below chance`` when it lies wholly below 0.5 (also never bold),
* ``not measured`` when the card has no AUC with an interval (never bold).

Only a model ``above chance`` may have its answer shown in bold (:attr:`ModelQuality.trusted`).
Ensemble cards also carry one AUC per question (``metrics.questions``: ``abnormal_vs_baseline``
with its ``ci95``, ...); :func:`question_qualities` reads those the same way.

**The call** (:data:`CALL_RULE`, threshold and words from one constant in
:mod:`mammo_core.protocol`, implemented by :func:`mammo_core.ensemble.call_five_class`):
normal tissue when P(baseline) reaches the threshold, otherwise the most likely abnormal class.
The bar shown in bold is always the call.

**Agreement** (:func:`agreement`, :data:`AGREEMENT_RULE`): "Members disagree with each other" when the ensemble
flagged the patch (member disagreement above the threshold fitted on validation data); otherwise
"Low confidence" when the call's own probability is below :data:`LOW_CALL_PROBABILITY` (50 %);
"Members agree with each other" only when neither holds. A secondary line, never reassurance:
the bundled members share one frozen backbone and agree by construction; how sure a call is
comes from its conformal set (:mod:`mammo_core.ensemble.conformal`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mammo_core.card import Card, Metrics
from mammo_core.ensemble import CALL_RULE

CHANCE_AUC = 0.5
LOW_CALL_PROBABILITY = 0.5

ABOVE = "above chance"
AT_CHANCE = "at chance"
BELOW = "below chance"
UNMEASURED = "not measured"
AT_CHANCE_TEXT = "at chance on held-out data"
NOT_BLIND_TEXT = "not blind: the split was seen before a later change, see MODELS.md"


def blind_fields(held_out_seen: str) -> dict[str, Any]:
    """The card's statement about its held-out numbers (``metrics.blind`` and, when not blind,
    ``metrics.not_blind_because``): written by every training path, read by
    :func:`quality_from_card` / :func:`question_qualities`. ``held_out_seen`` says how the split
    was seen before a change to this model; empty when it was not (the numbers are blind)."""
    why = str(held_out_seen or "").strip()
    return {"blind": not why, **({"not_blind_because": why} if why else {})}


AGREE = "agree"
LOW = "low"
DISAGREE = "disagree"
AGREE_TEXT = "Members agree with each other"
DISAGREE_TEXT = "Members disagree with each other — review carefully"
LOW_TEXT = "Low confidence — review carefully"
AGREEMENT_RULE = (f"'{DISAGREE_TEXT}' when the members' disagreement exceeds the threshold fitted "
                  f"on validation data; otherwise '{LOW_TEXT}' when the call's probability is below "
                  f"{100 * LOW_CALL_PROBABILITY:.0f} %; otherwise '{AGREE_TEXT}' (a secondary line, never "
                  f"reassurance: the members share one frozen backbone and agree by construction; "
                  f"the conformal set says how sure the call is)")
QUALITY_RULE = (f"held-out AUC with its 95 % interval from the model card; a model whose interval "
                f"includes {CHANCE_AUC} is '{AT_CHANCE_TEXT}' and never shown in bold")

__all__ = [
    "AGREEMENT_RULE",
    "CALL_RULE",
    "QUALITY_RULE",
    "Agreement",
    "ModelQuality",
    "agreement",
    "quality_from_card",
    "question_qualities",
]


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:  # a card's integer beyond float range (10**400)
        return None
    return f if math.isfinite(f) else None


def _auc(v: Any) -> float | None:
    """An AUC from a card: a finite number in [0, 1], else unknown (None)."""
    f = _number(v)
    return f if f is not None and 0.0 <= f <= 1.0 else None


def _count(v: Any) -> int | None:
    f = _number(v)
    return int(f) if f is not None and f >= 0 else None


def _interval(v: Any) -> tuple[float, float] | None:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        return None
    lo, hi = _auc(v[0]), _auc(v[1])
    if lo is None or hi is None or lo > hi:
        return None
    return (lo, hi)


@dataclass(frozen=True)
class ModelQuality:
    """A model's (or one ensemble question's) measured held-out AUC."""

    model: str
    auc: float | None = None
    ci95: tuple[float, float] | None = None
    n: int | None = None
    split: str | None = None
    question: str | None = None  # ensemble questions: "abnormal_vs_baseline", ...
    # False when the card says the split was seen before a later change to the model (its
    # ``metrics.blind``): the number is then shown as a test-split figure, not a held-out one
    blind: bool = True

    @property
    def status(self) -> str:
        if self.auc is None or self.ci95 is None:
            return UNMEASURED
        lo, hi = self.ci95
        if lo > CHANCE_AUC:
            return ABOVE
        if hi < CHANCE_AUC:
            return BELOW
        return AT_CHANCE

    @property
    def at_chance(self) -> bool:
        """True when the 95 % interval includes 0.5."""
        return self.status == AT_CHANCE

    @property
    def trusted(self) -> bool:
        """Only a model measured above chance may have its answer shown in bold."""
        return self.status == ABOVE

    def auc_text(self) -> str:
        """``"AUC 0.89 (95% CI 0.60–1.00)"``, or ``"AUC not measured"``."""
        if self.auc is None:
            return "AUC not measured"
        if self.ci95 is None:
            return f"AUC {self.auc:.2f} (no interval)"
        return f"AUC {self.auc:.2f} (95% CI {self.ci95[0]:.2f}\u2013{self.ci95[1]:.2f})"

    def text(self) -> str:
        """One line for a clinician: ``"held-out AUC 0.33 (95% CI 0.06–0.65), n=14 — at chance
        on held-out data"``."""
        if self.auc is None:
            return "held-out quality not measured (no AUC on the card)"
        n = "" if self.n is None else f", n={self.n}"
        tail = {AT_CHANCE: f" \u2014 {AT_CHANCE_TEXT}", BELOW: " \u2014 below chance on held-out data",
                UNMEASURED: ""}.get(self.status, "")
        where = "held-out" if self.blind else f"test-split ({NOT_BLIND_TEXT})"
        return f"{where} {self.auc_text()}{n}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {"auc": self.auc, "auc_ci95": None if self.ci95 is None else list(self.ci95),
                "n": self.n, "split": self.split, "status": self.status, "blind": self.blind}


def quality_from_card(card: Card | None, name: str | None = None) -> ModelQuality:
    """The model's held-out AUC and interval from its (typed, checked) card; an AUC outside
    [0, 1] or an interval with low > high just makes the quality ``not measured``."""
    m = Metrics() if card is None else card.metrics
    return ModelQuality(
        model=str(name if name is not None else ("" if card is None else card.name)),
        auc=_auc(m.auc), ci95=_interval(m.auc_ci95), n=_count(m.n), split=m.split, blind=m.blind)


def question_qualities(card: Card | None) -> list[ModelQuality]:
    """Per-question held-out AUCs of an ensemble card (``metrics.questions``), in the card's
    order; empty for a plain model card."""
    if card is None:
        return []
    m = card.metrics
    return [ModelQuality(model=card.name, auc=_auc(q.auc), ci95=_interval(q.ci95), n=_count(q.n),
                         split=m.split, question=name, blind=m.blind)
            for name, q in m.questions.items()]


@dataclass(frozen=True)
class Agreement:
    state: str  # AGREE | LOW | DISAGREE
    text: str


def agreement(call_probability: float, flagged: bool) -> Agreement:
    """The agreement line for an ensemble call (see :data:`AGREEMENT_RULE`)."""
    p = _number(call_probability)
    if flagged:
        return Agreement(DISAGREE, DISAGREE_TEXT)
    if p is None or p < LOW_CALL_PROBABILITY:
        return Agreement(LOW, LOW_TEXT)
    return Agreement(AGREE, AGREE_TEXT)
