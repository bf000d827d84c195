"""Nested out-of-fold selection (mammo_core.training.nested) on small synthetic features: on pure
noise the nested figure sits near chance while the old max-over-choices figure sits above it; with
a real signal the nested figure finds it; the nested ensemble is a proper five-class distribution
fitted without the fold it scores. Research use only."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_core.labels import MALIGNANT_LABELS
from mammo_core.training.nested import (
    MemberSearch,
    nested_ensemble,
    nested_member,
    old_ensemble,
    question_aucs,
)
from mammo_core.training.pooled import training_views, woman_folds

N_WOMEN, PER_WOMAN, VIEWS = 60, 5, 2


def _data(signal: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = N_WOMEN * PER_WOMAN
    groups = np.repeat(np.arange(N_WOMEN), PER_WOMAN)
    labels = np.tile(np.arange(5), N_WOMEN)
    malignant = np.isin(labels, MALIGNANT_LABELS).astype(float)
    feats = {}
    for key, d in (("gap_block3_pool", 6), ("gmp_block3_pool", 6), ("gap_block4_pool", 12), ("gmp_block4_pool", 6)):
        f = rng.normal(size=(VIEWS, n, d))
        if key == "gap_block4_pool":
            f[:, :, 0] += signal * malignant  # the same signal in every view
        feats[key] = f
    fold = woman_folds(labels, groups, 5, seed)
    return feats, labels, groups, fold


SEARCH = MemberSearch("bm", "benign_malignant", ("block4_pool:avg", "block3_pool,block4_pool:avgmax"),
                      (1e-3, 1e-2, 0.1, 1.0, 10.0), VIEWS)


def _auc(member, which, labels, groups):
    p = member.nested if which == "nested" else member.old
    return question_aucs("benign_malignant", p, labels, groups, 0, 0)["auc_benign_vs_malignant"]


def test_nested_figure_of_noise_sits_at_chance_below_the_max_over_choices():
    feats, labels, groups, fold = _data(signal=0.0)
    tv = training_views(len(labels), VIEWS, VIEWS, 0)
    m = nested_member(SEARCH, feats, labels, fold, tv, seed=0)
    abnormal = labels != 0
    assert np.isfinite(m.nested).all() and np.allclose(m.nested.sum(axis=1), 1.0)
    nested, old = _auc(m, "nested", labels, groups), _auc(m, "old", labels, groups)
    assert abs(nested - 0.5) < 0.08, nested
    assert old > nested, (old, nested)  # the old figure is the best of 20 choices on the same predictions
    assert len(m.choices) == 5 and all(c[0] in SEARCH.candidates and c[1] in SEARCH.c_grid for c in m.choices)
    # inner predictions never touch the outer fold they are used to score
    for f in range(5):
        assert np.isnan(m.inner_oof[f][fold == f]).all()
        assert np.isfinite(m.inner_oof[f][(fold != f) & abnormal]).all()


@pytest.mark.slow
def test_nested_figure_finds_a_real_signal():
    feats, labels, groups, fold = _data(signal=1.5)
    tv = training_views(len(labels), VIEWS, VIEWS, 0)
    m = nested_member(SEARCH, feats, labels, fold, tv, seed=0)
    assert _auc(m, "nested", labels, groups) > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("signal", [0.0, 2.0])
def test_nested_ensemble_is_fitted_per_outer_fold_and_scores_five_classes(signal):
    feats, labels, groups, fold = _data(signal=signal, seed=1)
    tv = training_views(len(labels), VIEWS, VIEWS, 0)
    searches = (MemberSearch("b", "baseline_mass_calc", ("block4_pool:avg",), (0.01, 1.0), VIEWS, ("none",)),
                MemberSearch("m", "mass_calc", ("block4_pool:avg",), (0.01, 1.0), VIEWS, ("none",)),
                MemberSearch("bm", "benign_malignant", ("block4_pool:avg",), (0.01, 1.0), VIEWS, ("none",)))
    members = [nested_member(s, feats, labels, fold, tv, seed=0) for s in searches]
    p5, fitted = nested_ensemble(members, labels, fold)
    assert p5.shape == (len(labels), 5) and np.isfinite(p5).all() and np.allclose(p5.sum(axis=1), 1.0)
    assert [r["fold"] for r in fitted] == [1, 2, 3, 4, 5]
    nested = question_aucs("five_class", p5, labels, groups, 0, 0)["auc_benign_vs_malignant"]
    old = question_aucs("five_class", old_ensemble(members, labels), labels, groups, 0, 0)[
        "auc_benign_vs_malignant"]
    if signal == 0.0:
        assert abs(nested - 0.5) < 0.1, nested
    else:
        assert nested > 0.8 and old > 0.8, (nested, old)


def test_bundled_searches_match_train_bundled_sh():
    """The nested figures redo the shipped members' searches: same candidates, C grids, training
    views and TTA options as training_scripts/train_bundled.sh passes (one contract, checked)."""
    import re
    import shlex
    from pathlib import Path

    from mammo_core.training.nested import BUNDLED_SEARCHES

    script = (Path(__file__).resolve().parents[1] / "training_scripts" / "train_bundled.sh").read_text()
    assert "--tta auto" in script
    for s in BUNDLED_SEARCHES:
        m = re.search(rf"member {s.name} \S+(.*?)\n\s*;;", script, re.S)
        assert m, s.name
        args = shlex.split(m.group(1).replace("\\\n", " "))
        opt = {}
        for a in args:
            if a.startswith("--"):
                key = a
                opt[key] = []
            elif a not in ('"${POOLED[@]}"', "${POOLED[@]}"):
                opt[key].append(a)
        assert tuple(float(c) for c in opt["--c-grid"]) == s.c_grid, s.name
        assert tuple(opt["--pool-candidates"]) == s.candidates, s.name
        assert int(opt["--train-views"][0]) == s.train_views, s.name
        assert opt.get("--train-augment", ["none"])[0] == s.train_augment, s.name
        default_views = "1" if s.train_augment != "none" else "0"
        assert int(opt.get("--augment-views", [default_views])[0]) == s.augment_views, s.name
        assert float(opt.get("--feature-squash", ["0"])[0]) == s.feature_squash, s.name
        assert s.tta_options == ("none", "dihedral8")
