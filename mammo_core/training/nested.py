"""Nested out-of-fold figures for the pooled members and their ensemble (issue 24 item 2).

The shipped members choose pooling candidate, ``C`` and TTA on out-of-fold predictions over the
training women (:func:`mammo_core.training.pooled.select`), and report the out-of-fold AUC of
the choice they made on those same predictions: the maximum over the choices, optimistic. Here
every choice is made again without seeing the fold it is scored on:

* **outer folds**: the members' fixed folds of the training women
  (:func:`~mammo_core.training.pooled.woman_folds`, the same for every member);
* **inner selection**: for outer fold ``f``, :func:`~mammo_core.training.pooled.select` (the very
  search that chose the shipped members, same candidates, ``C`` grid, TTA options, training
  views and seed) runs on the training women outside ``f`` only, its folds being the other
  ``k - 1`` outer folds (grouped by woman, so no woman is split);
* **refit** of the chosen configuration on every task patch outside ``f`` (the same
  :func:`~mammo_core.training.pooled._fit_lr` as the shipped refit) and prediction of every patch of
  ``f`` (all labels, as the members' ``oof.npz``);
* **ensemble**: :func:`mammo_core.ensemble.fit_ensemble` (temperatures, voting and factor weights)
  fitted on the members' inner out-of-fold predictions of their chosen configurations over the
  patches outside ``f`` (as the shipped ensemble is fitted on the members' out-of-fold
  predictions) and applied to the members' outer predictions of ``f``.

The **old** (non-nested) figures come from the same code: ``select`` over all training women
with the outer folds (what the shipped members report) and the ensemble fitted and scored on
those same predictions. Both are scored per question with
:func:`mammo_core.ensemble_fit.task_aucs` (intervals: cluster bootstrap over women).
Research use only - not a medical device.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mammo_core.ensemble import MemberInfo, combine, fit_ensemble
from mammo_core.ensemble_fit import task_aucs, task_scores
from mammo_core.labels import get_task
from mammo_core.training.pooled import Candidate, _design, _fit_lr, _predict_views, _rows, select

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberSearch:
    """One member's search, as ``training_scripts/train_bundled.sh`` passes it."""

    name: str
    task: str
    candidates: tuple[str, ...]
    c_grid: tuple[float, ...]
    train_views: int
    tta_options: tuple[str, ...] = ("none", "dihedral8")
    train_augment: str = "none"  # --train-augment (mammo_core.training.pooled)
    augment_views: int = 0
    feature_squash: float = 0.0  # --feature-squash (mammo_core.training.pooled.SquashScaler)


# the three bundled members (training_scripts/train_bundled.sh: --pool-candidates, --c-grid,
# --train-views, --tta auto, --train-augment, --augment-views); keep in step with that script
BUNDLED_SEARCHES = (
    MemberSearch("vgg16b4_baseline_mass_calc", "baseline_mass_calc",
                 ("block3_pool,block4_pool:avgmax", "block2_pool,block3_pool,block4_pool:avgmax"),
                 (0.1, 0.3, 1, 3, 10, 30), 2),
    MemberSearch("vgg16_mass_calc", "mass_calc",
                 ("block3_pool,block4_pool:avgmax", "block2_pool,block3_pool,block4_pool:avgmax"),
                 (0.03, 0.1, 0.3, 1, 3, 10), 8),
    MemberSearch("vgg16_benign_malignant", "benign_malignant",
                 ("block4_pool:avg", "block3_pool,block4_pool:avgmax"),
                 (0.003, 0.01, 0.03, 0.1, 0.3, 1), 8, train_augment="acquisition", augment_views=4),
)


@dataclass(frozen=True)
class MemberNested:
    """One member's nested and old out-of-fold predictions over every training patch (N, K),
    per outer fold the inner choice and the inner out-of-fold predictions of that choice over the
    outer-training patches (NaN on the outer fold's rows)."""

    name: str
    task: str
    nested: np.ndarray
    old: np.ndarray
    old_choice: tuple[str, float, str]
    choices: tuple[tuple[str, float, str], ...]
    inner_oof: np.ndarray  # (k, N, K)


def nested_member(search: MemberSearch, feats: Mapping[str, np.ndarray], labels: np.ndarray,
                  fold: np.ndarray, tv: np.ndarray, seed: int,
                  progress: Callable[[str], None] | None = None,
                  aug_feats: Mapping[str, np.ndarray] | None = None) -> MemberNested:
    """Nested selection of one member (module docstring). ``feats``: ``{key: (views, N, d)}``
    cached pooled features; ``fold``: outer fold id per patch; ``tv``: (N, train_views) fitting
    views per patch (:func:`~mammo_core.training.pooled.training_views`); ``aug_feats``: the
    member's augmented training views (:func:`~mammo_core.training.pooled.augmented_features`)."""
    say = progress or (lambda m: log.info("%s", m))
    labels = np.asarray(labels, np.int64)
    task = get_task(search.task)
    cands = [Candidate.parse(c) for c in search.candidates]
    _, (cand, c, t), old, _ = select(search.task, feats, labels, fold, cands, search.c_grid,
                                     search.tta_options, seed, tv, aug_feats=aug_feats, squash=search.feature_squash)
    old_choice = (cand.label, float(c), t)
    say(f"[nested] {search.name}: old (non-nested) choice {old_choice}")
    keep, y_task = task.map_labels(labels)
    y_full = np.full(len(labels), -1, np.int64)
    y_full[keep] = y_task
    k = int(fold.max()) + 1
    nested = np.full((len(labels), task.n_classes), np.nan)
    inner_oof = np.full((k, len(labels), task.n_classes), np.nan)
    choices = []
    for f in range(k):
        out = fold != f
        sub = np.flatnonzero(out)
        inner_fold = np.searchsorted(np.unique(fold[sub]), fold[sub])  # the other folds, 0..k-2
        sub_feats = {key: v[:, sub] for key, v in feats.items()}
        sub_aug = None if aug_feats is None else {key: v[:, sub] for key, v in aug_feats.items()}
        _, (cand, c, t), p_inner, _ = select(search.task, sub_feats, labels[sub], inner_fold, cands,
                                             search.c_grid, search.tta_options, seed, tv[sub], aug_feats=sub_aug,
                                             squash=search.feature_squash)
        inner_oof[f, sub] = p_inner
        F = _design(feats, cand)
        tr = np.flatnonzero(keep & out)
        Fa = None if aug_feats is None else _design(aug_feats, cand)
        scaler, lr = _fit_lr(_rows(F, tr, tv, Fa), np.repeat(y_full[tr], tv.shape[1]), c, seed,
                             squash=search.feature_squash)
        te = np.flatnonzero(~out)
        pv = _predict_views(scaler, lr, F[:, te])
        nested[te] = pv.mean(axis=0) if t == "dihedral8" else pv[0]
        choices.append((cand.label, float(c), t))
        say(f"[nested] {search.name}: outer fold {f + 1}/{k} chose {choices[-1]}")
    return MemberNested(search.name, search.task, nested, old, old_choice, tuple(choices), inner_oof)


def _infos(members: Sequence[MemberNested]) -> list[MemberInfo]:
    return [MemberInfo(m.name, f"nested:{m.name}", m.task, tuple(get_task(m.task).classes)) for m in members]


def nested_ensemble(members: Sequence[MemberNested], labels: np.ndarray, fold: np.ndarray
                    ) -> tuple[np.ndarray, list[dict]]:
    """(N, 5) ensemble probabilities: for each outer fold, the ensemble fitted on the members'
    inner out-of-fold predictions of the outer-training patches, applied to the members' nested
    predictions of the fold; and per fold the fitted factor weights and temperatures."""
    labels = np.asarray(labels, np.int64)
    infos = _infos(members)
    p5 = np.full((len(labels), 5), np.nan)
    fitted = []
    for f in range(int(fold.max()) + 1):
        out = fold != f
        spec = fit_ensemble(infos, {m.name: m.inner_oof[f][out] for m in members}, labels[out], level=None)
        te = ~out
        p5[te] = combine(spec, {m.name: m.nested[te] for m in members}).probabilities
        fitted.append({"fold": f + 1, "factor_weights": spec.fitted["factor_weights"],
                       "temperatures": {ms.name: ms.temperature for ms in spec.members}})
    return p5, fitted


def old_ensemble(members: Sequence[MemberNested], labels: np.ndarray) -> np.ndarray:
    """The shipped way: the ensemble fitted on the members' (non-nested) out-of-fold predictions
    and scored on those same predictions."""
    probs = {m.name: m.old for m in members}
    spec = fit_ensemble(_infos(members), probs, np.asarray(labels, np.int64), level=None)
    return combine(spec, probs).probabilities


def question_aucs(task: str, p: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_boot: int,
                  seed: int) -> dict:
    """The three question AUCs a model of ``task`` can answer (NaN where it cannot), with 95 %
    intervals over women (``groups``)."""
    return task_aucs(labels, task_scores(task, np.asarray(p, np.float64)), groups, n_boot, seed)
