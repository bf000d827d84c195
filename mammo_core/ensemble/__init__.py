"""The ensemble of the study's Task 5: member bundles combined into one five-class distribution.

An ensemble is itself a bundle: a folder with ``card.json`` (``kind: "ensemble"``,
``task: "five_class"``, ``classes`` = the five canonical names) and ``ensemble.json`` (this
module's :class:`EnsembleSpec` as JSON: members by name with their sha256, and what was fitted),
hashed in ``card["files"]``. No pickle anywhere.

How the members are combined (everything fitted on *validation* predictions):

1. **Temperature scaling per member.** Logits are ``log p``; ``p_T = softmax(log p / T)`` with
   ``T`` minimising the member's validation negative log-likelihood (bounded search over
   ``T`` in [0.05, 20]). ``T > 1`` softens an over-confident member.
2. **Soft voting per task.** Members that share a task (and subset) are averaged with weights
   on the simplex that minimise the validation NLL of the weighted mean (softmax
   parametrisation, L-BFGS-B); one member gets weight 1.
3. **Hierarchy to five classes.** Each task's voted distribution estimates some of four factors:

   ======================================  ===========================================
   factor                                  estimated from
   ======================================  ===========================================
   ``baseline`` = P(baseline)              baseline_mass_calc p0; five_class p0
   ``mass_given_abnormal``                 mass_calc p(mass); baseline_mass_calc
                                           p1/(p1+p2); five_class (p1+p2)/(1-p0)
   ``malignant_given_mass``                benign_malignant p(malignant) (mass-specific
                                           members when they exist); five_class p2/(p1+p2)
   ``malignant_given_calcification``       benign_malignant p(malignant) (calcification-
                                           specific members when they exist); five_class
                                           p4/(p3+p4)
   ======================================  ===========================================

   Tasks that estimate the same factor are mixed with simplex weights chosen on the fitting
   (out-of-fold or validation) predictions: the grid point, pure tasks included, with the best
   AUC of that factor's question, ties by its NLL (``fitted["factor_weights"]``, see
   :func:`fit_factor_weights`; equal weights in specs without them). The five classes are
   the products ``P(baseline)``, ``(1-b)·m·(1-mm)``, ``(1-b)·m·mm``, ``(1-b)·(1-m)·(1-mc)``,
   ``(1-b)·(1-m)·mc``, which sum to 1 by construction.

   **Missing members degrade as follows**: with no member that estimates P(baseline) (no
   baseline_mass_calc or five_class member) P(baseline) is *unknown*: the distribution is
   then conditional on the patch being abnormal (P(baseline) = 0) and
   ``EnsembleSpec.coverage["baseline"]`` is False (the card says so). A missing
   ``mass_given_abnormal`` or malignancy factor is 0.5 (uninformative) and its coverage is False.
   An ensemble of one member reproduces that member (temperature-scaled) exactly in its own
   task (for a five_class member: the five probabilities themselves).
4. **Uncertainty.** *Disagreement*: for each factor estimated by at least two members, the
   standard deviation (ddof 0) of the members' own (temperature-scaled) estimates; the mean
   over those factors. ``None`` with fewer than two members per factor. *Entropy*: of the
   combined five-class distribution, divided by log 5 (so in [0, 1]). A patch is **flagged**
   when its disagreement exceeds the threshold chosen on validation data: the 90th percentile
   of the validation disagreement (so ~10 % of validation patches are flagged).

The package: :mod:`~mammo_core.ensemble.calibration`, :mod:`~mammo_core.ensemble.spec`,
:mod:`~mammo_core.ensemble.hierarchy`, :mod:`~mammo_core.ensemble.fit`,
:mod:`~mammo_core.ensemble.store`; every name is importable from ``mammo_core.ensemble``.
"""
from __future__ import annotations

from mammo_core.ensemble.calibration import (
    EPS,
    T_BOUNDS,
    _nll,
    apply_temperature,
    fit_temperature,
    fit_weights,
)
from mammo_core.ensemble.fit import (
    MemberInfo,
    _rows,
    fit_ensemble,
    fit_factor_weights,
)
from mammo_core.ensemble.hierarchy import (
    EnsembleResult,
    _combine_factors,
    _group_key,
    _ratio,
    calibrated,
    call_five_class,
    combine,
    disagreement,
    factor_estimates,
    five_class_from_factors,
    malignancy,
    member_class_for,
    task_view,
)
from mammo_core.ensemble.spec import (
    CALIBRATION,
    ENSEMBLE_FILE,
    ENSEMBLE_SCHEMA,
    SUBSETS,
    THRESHOLD_RULE,
    WEIGHTING,
    EnsembleSpec,
    MemberSpec,
    _factors_of,
)
from mammo_core.ensemble.store import (
    member_dirs,
    read_ensemble,
    write_ensemble,
)
from mammo_core.protocol import CALL_RULE

__all__ = [
    "CALIBRATION",
    "CALL_RULE",
    "ENSEMBLE_FILE",
    "ENSEMBLE_SCHEMA",
    "EPS",
    "SUBSETS",
    "THRESHOLD_RULE",
    "T_BOUNDS",
    "WEIGHTING",
    "EnsembleResult",
    "EnsembleSpec",
    "MemberInfo",
    "MemberSpec",
    "_combine_factors",
    "_factors_of",
    "_group_key",
    "_nll",
    "_ratio",
    "_rows",
    "apply_temperature",
    "calibrated",
    "call_five_class",
    "combine",
    "disagreement",
    "factor_estimates",
    "fit_ensemble",
    "fit_factor_weights",
    "fit_temperature",
    "fit_weights",
    "five_class_from_factors",
    "malignancy",
    "member_class_for",
    "member_dirs",
    "read_ensemble",
    "task_view",
    "write_ensemble",
]
