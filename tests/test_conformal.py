"""Class-conditional conformal sets (mammo_core.ensemble.conformal) on synthetic scores with
known coverage. Research use only — not a medical device."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mammo_core.ensemble import (
    ConformalSpec,
    EnsembleSpec,
    MemberSpec,
    combine,
    coverage_table,
    cross_conformal_sets,
    fit_conformal,
    fit_ensemble,
    is_uncertain,
    set_words,
)
from mammo_core.ensemble.conformal import class_quantile
from mammo_core.ensemble.fit import MemberInfo
from mammo_core.errors import BundleError
from mammo_core.labels import CLASS_NAMES


def synthetic(n: int, seed: int, sizes=(0.6, 0.15, 0.1, 0.1, 0.05), sharp: float = 1.5):
    """Labels drawn with the given class shares, probabilities a noisy softmax that favours the
    true class (an imperfect classifier: about half the argmax calls are wrong)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(5, size=n, p=sizes)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), y] += sharp
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), y


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_class_conditional_coverage_on_fresh_data(level):
    p_cal, y_cal = synthetic(4000, 0)
    spec = fit_conformal(p_cal, y_cal, level)
    p_new, y_new = synthetic(20000, 1)
    tab = coverage_table(spec.sets(p_new), y_new)
    for name in CLASS_NAMES:  # every class on its own reaches the level, and not by much
        cov = tab["per_class"][name]["coverage"]
        assert level - 0.03 <= cov <= level + 0.05, (name, cov)
    assert 1.0 < tab["mean_set_size"] < 5.0  # an imperfect classifier needs sets of > 1 class


def test_in_sample_coverage_is_the_level_by_construction():
    p, y = synthetic(3000, 2)
    spec = fit_conformal(p, y, 0.9)
    tab = coverage_table(spec.sets(p), y)
    for name in CLASS_NAMES:
        c = tab["per_class"][name]
        assert 0.9 <= c["coverage"] <= 0.9 + 2.0 / c["n"]  # k/n, k = ceil((n + 1) 0.9)


def test_cross_conformal_by_fold_covers_unseen_folds():
    p, y = synthetic(5000, 3)
    fold = np.arange(len(y)) % 5
    sets = cross_conformal_sets(p, y, fold, 0.9)
    assert abs(coverage_table(sets, y)["coverage"] - 0.9) < 0.03


def test_perfect_scores_give_singletons_and_too_few_patches_include_the_class():
    y = np.array([0] * 50 + [1] * 50 + [2] * 50 + [3] * 50 + [4] * 3)
    p = np.full((len(y), 5), 0.01)
    p[np.arange(len(y)), y] = 0.96
    spec = fit_conformal(p, y, 0.9)
    assert spec.thresholds[4] == 0.0  # 3 patches < 1/alpha - 1: always in the set
    names = spec.names(p[:200])
    assert all(s == (CLASS_NAMES[c], CLASS_NAMES[4]) or s == (CLASS_NAMES[4],)
               for s, c in zip(names, y[:200]))
    assert class_quantile(np.array([]), 0.9) == 1.0
    assert class_quantile(np.arange(19) / 19, 0.9) == 17 / 19  # k = ceil(20 * 0.9) = 18 -> s[17]


def test_wrong_calls_counted_with_sets():
    p, y = synthetic(2000, 4)
    spec = fit_conformal(p, y, 0.9)
    calls = p.argmax(axis=1)
    tab = coverage_table(spec.sets(p), y, calls, groups=np.arange(len(y)) // 4, n_boot=200)
    assert tab["wrong_calls"] == int((calls != y).sum()) > 0
    assert 0 < tab["wrong_calls_uncertain"] <= tab["wrong_calls"]
    lo, hi = tab["coverage_ci95"]
    assert lo <= tab["coverage"] <= hi
    assert "women" in tab["ci_method"]


def test_words_and_uncertainty():
    assert set_words(["baseline", "mass_benign"], 0.9) == "90 % set: baseline, mass_benign"
    assert "empty" in set_words([], 0.9)
    assert is_uncertain(()) and is_uncertain(("a", "b")) and not is_uncertain(("a",))


def test_spec_round_trip_and_refusals():
    spec = ConformalSpec(0.9, (0.1, 0.2, 0.3, 0.0, 1.0), (10, 5, 5, 3, 2), "oof")
    assert ConformalSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    for bad in ({**spec.to_dict(), "level": 1.5}, {**spec.to_dict(), "thresholds": [0.1] * 4},
                {**spec.to_dict(), "thresholds": [2.0] * 5}, {**spec.to_dict(), "classes": ["a"] * 5},
                {k: v for k, v in spec.to_dict().items() if k != "n"}):
        with pytest.raises(BundleError):
            ConformalSpec.from_dict(bad)


def test_fit_ensemble_stores_conformal_in_the_spec_and_combine_gives_sets():
    rng = np.random.default_rng(5)
    y = rng.choice(5, size=600, p=(0.5, 0.2, 0.1, 0.1, 0.1))
    three = np.stack([y == 0, np.isin(y, (1, 2)), np.isin(y, (3, 4))], 1).astype(float) + rng.random((600, 3))
    two = np.stack([np.isin(y, (1, 3)), np.isin(y, (2, 4))], 1).astype(float) + rng.random((600, 2))
    probs = {"a": three / three.sum(1, keepdims=True), "b": two / two.sum(1, keepdims=True)}
    members = [MemberInfo("a", "0" * 64, "baseline_mass_calc", ("baseline", "mass", "calcification")),
               MemberInfo("b", "1" * 64, "benign_malignant", ("benign", "malignant"))]
    spec = fit_ensemble(members, probs, y, validation={"how": "synthetic"})
    assert spec.conformal is not None and spec.conformal.level == 0.9
    assert spec.conformal.calibration == "synthetic"
    back = EnsembleSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back.conformal == spec.conformal
    res = combine(back, probs)
    assert res.sets is not None and res.level == 0.9
    cov = coverage_table(res.sets, y)["per_class"]
    assert all(cov[c]["coverage"] >= 0.9 for c in CLASS_NAMES)
    old = EnsembleSpec((MemberSpec("a", "0" * 64, "baseline_mass_calc", ("baseline", "mass", "calcification")),))
    assert combine(old, {"a": probs["a"]}).sets is None  # a spec fitted before conformal sets
