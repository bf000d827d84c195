"""The Task 5 ensemble: calibration, voting, hierarchy to five classes, uncertainty, bundles."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mammo_core.bundle import sha256_file
from mammo_core.ensemble import (
    ENSEMBLE_FILE,
    EnsembleSpec,
    MemberInfo,
    MemberSpec,
    apply_temperature,
    combine,
    fit_ensemble,
    fit_temperature,
    fit_weights,
    member_class_for,
    member_dirs,
    read_ensemble,
    task_view,
    write_ensemble,
)
from mammo_core.errors import BundleError
from mammo_core.labels import CLASS_NAMES, TASKS
from mammo_core.metrics import expected_calibration_error, nll


def _dirichlet(rng, n, k, conc=1.0):
    return rng.dirichlet(np.full(k, conc), size=n)


def _member(name, task, t=1.0, w=1.0, subset=None):
    return MemberSpec(name, "0" * 64, task, TASKS[task].classes, t, w, subset)


def test_temperature_scaling_lowers_nll_of_an_overconfident_model(rng):
    n, k = 2000, 3
    true_logits = rng.normal(size=(n, k)) * 1.5
    p_true = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p_true])
    over = apply_temperature(p_true, 1 / 3.0)  # logits x3: over-confident
    t = fit_temperature(over, y)
    cal = apply_temperature(over, t)
    assert 2.0 < t < 4.5  # recovers roughly the factor 3
    assert nll(y, cal) < nll(y, over) - 0.1
    assert expected_calibration_error(y, cal) < expected_calibration_error(y, over)


def test_temperature_never_makes_nll_worse_on_fitting_data(rng):
    p = _dirichlet(rng, 200, 2)
    y = rng.integers(0, 2, 200)
    t = fit_temperature(p, y)
    assert nll(y, apply_temperature(p, t)) <= nll(y, p) + 1e-9


def test_fit_weights_prefers_the_informative_member(rng):
    n = 600
    y = rng.integers(0, 2, n)
    good = np.where(y[:, None] == np.arange(2), 0.85, 0.15)
    noise = _dirichlet(rng, n, 2)
    w = fit_weights([good, noise], y)
    assert w.shape == (2,) and abs(w.sum() - 1) < 1e-9 and (w >= 0).all()
    assert w[0] > 0.8


@pytest.mark.parametrize("tasks", [
    ["mass_calc", "benign_malignant", "baseline_mass_calc"],
    ["five_class", "mass_calc", "mass_calc"],
    ["benign_malignant"],
    ["baseline_mass_calc", "benign_malignant", "five_class", "five_class"],
])
def test_five_class_output_is_a_distribution(rng, tasks):
    members = tuple(_member(f"m{i}", t, t=0.5 + i, w=1 + i) for i, t in enumerate(tasks))
    spec = EnsembleSpec(members, threshold=0.1)
    probs = {m.name: _dirichlet(rng, 50, len(m.classes), 0.5) for m in members}
    res = combine(spec, probs)
    assert res.probabilities.shape == (50, 5)
    np.testing.assert_allclose(res.probabilities.sum(1), 1.0, atol=1e-9)
    assert (res.probabilities >= 0).all()
    assert ((res.entropy >= 0) & (res.entropy <= 1)).all()
    assert res.flagged.dtype == bool
    assert len(res.predicted) == 50 and set(res.predicted) <= set(CLASS_NAMES)


def test_one_five_class_member_reduces_to_that_member(rng):
    p = _dirichlet(rng, 100, 5, 0.7)
    spec = EnsembleSpec((_member("only", "five_class"),))
    res = combine(spec, {"only": p})
    np.testing.assert_allclose(res.probabilities, p, atol=1e-9)
    assert res.disagreement is None and not res.flagged.any()
    # with a fitted temperature: the member's temperature-scaled output
    spec_t = EnsembleSpec((_member("only", "five_class", t=2.5),))
    np.testing.assert_allclose(combine(spec_t, {"only": p}).probabilities, apply_temperature(p, 2.5), atol=1e-9)


@pytest.mark.parametrize("task", ["baseline_mass_calc", "mass_calc", "benign_malignant"])
def test_one_member_reduces_to_that_member_in_its_own_task(rng, task):
    k = TASKS[task].n_classes
    p = _dirichlet(rng, 80, k, 0.7)
    res = combine(EnsembleSpec((_member("only", task),)), {"only": p})
    np.testing.assert_allclose(task_view(res.probabilities, task), p, atol=1e-9)


def test_missing_baseline_member_means_conditional_on_abnormal(rng):
    spec = EnsembleSpec((_member("a", "mass_calc"), _member("b", "benign_malignant")))
    assert spec.coverage["baseline"] is False and spec.coverage["mass_given_abnormal"] is True
    res = combine(spec, {"a": _dirichlet(rng, 10, 2), "b": _dirichlet(rng, 10, 2)})
    np.testing.assert_array_equal(res.probabilities[:, 0], 0.0)
    np.testing.assert_allclose(res.probabilities.sum(1), 1.0)


def test_hierarchy_products_match_hand_computation():
    spec = EnsembleSpec((_member("bmc", "baseline_mass_calc"), _member("mc", "mass_calc"),
                         _member("bm", "benign_malignant")))
    res = combine(spec, {"bmc": np.array([[0.2, 0.6, 0.2]]), "mc": np.array([[0.5, 0.5]]),
                         "bm": np.array([[0.7, 0.3]])})
    b = 0.2
    m = (0.75 + 0.5) / 2  # 3-class p(mass)/(p(mass)+p(calc)) averaged with mass_calc
    expected = [b, (1 - b) * m * 0.7, (1 - b) * m * 0.3, (1 - b) * (1 - m) * 0.7, (1 - b) * (1 - m) * 0.3]
    np.testing.assert_allclose(res.probabilities[0], expected, atol=1e-9)


def test_type_specific_malignancy_members():
    spec = EnsembleSpec((_member("bmc", "baseline_mass_calc"),
                         _member("bm_mass", "benign_malignant", subset="mass"),
                         _member("bm_calc", "benign_malignant", subset="calcification")))
    res = combine(spec, {"bmc": np.array([[0.0, 0.5, 0.5]]), "bm_mass": np.array([[0.1, 0.9]]),
                         "bm_calc": np.array([[0.8, 0.2]])})
    np.testing.assert_allclose(res.probabilities[0], [0, 0.05, 0.45, 0.4, 0.1], atol=1e-9)


def test_disagreement_is_zero_for_identical_members_and_grows_with_spread(rng):
    p = _dirichlet(rng, 30, 2)
    spec = EnsembleSpec((_member("a", "mass_calc"), _member("b", "mass_calc")))
    assert np.allclose(combine(spec, {"a": p, "b": p}).disagreement, 0.0)
    far = combine(spec, {"a": np.tile([[0.99, 0.01]], (30, 1)), "b": np.tile([[0.01, 0.99]], (30, 1))})
    np.testing.assert_allclose(far.disagreement, 0.49, atol=1e-6)


def test_fit_ensemble_on_validation_sets_threshold_at_90th_percentile(rng):
    n = 400
    labels = np.where(np.arange(n) % 2 == 0, 0, rng.integers(1, 5, n))
    members = [MemberInfo("bmc1", "a" * 64, "baseline_mass_calc", TASKS["baseline_mass_calc"].classes),
               MemberInfo("bmc2", "b" * 64, "baseline_mass_calc", TASKS["baseline_mass_calc"].classes),
               MemberInfo("bm", "c" * 64, "benign_malignant", TASKS["benign_malignant"].classes)]
    probs = {m.name: _dirichlet(rng, n, len(m.classes)) for m in members}
    spec = fit_ensemble(members, probs, labels)
    res = combine(spec, probs)
    assert spec.threshold is not None
    assert 0.07 <= res.flagged.mean() <= 0.13
    for m in spec.members:
        assert m.temperature > 0
    assert abs(sum(m.weight for m in spec.members if m.task == "baseline_mass_calc") - 1) < 1e-9
    fm = spec.fitted["members"]["bmc1"]
    assert fm["nll_after"] <= fm["nll_before"] + 1e-9 and fm["n"] == n


def test_spec_json_round_trip_and_bundle_hashes(tmp_path, rng):
    spec = EnsembleSpec((_member("a", "mass_calc", 1.3, 0.4), _member("b", "five_class", 0.7, 0.6)),
                        threshold=0.12, fitted={"note": "x"})
    info = write_ensemble(tmp_path / "ens", spec)
    assert info.kind == "ensemble" and info.task == "five_class" and info.classes == CLASS_NAMES
    assert info.card.to_dict()["files"] == {ENSEMBLE_FILE: sha256_file(tmp_path / "ens" / ENSEMBLE_FILE)}
    _, back = read_ensemble(tmp_path / "ens")
    assert back.members == spec.members and back.threshold == 0.12
    assert not list((tmp_path / "ens").glob(".*tmp*"))
    # tampering with the spec is refused
    d = json.loads((tmp_path / "ens" / ENSEMBLE_FILE).read_text())
    d["members"][0]["weight"] = 0.9
    (tmp_path / "ens" / ENSEMBLE_FILE).write_text(json.dumps(d))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        read_ensemble(tmp_path / "ens")


def test_member_lookup_checks_the_members_hash(tmp_path):
    from bundle_factory import tiny_bundle

    src = tiny_bundle("mass_calc")
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    from mammo_core.bundle import read_card

    info = read_card(dst)
    good = EnsembleSpec((MemberSpec(info.name, info.sha256, "mass_calc", info.classes),))
    assert member_dirs(good, tmp_path) == {info.name: dst}
    bad = EnsembleSpec((MemberSpec(info.name, "f" * 64, "mass_calc", info.classes),))
    with pytest.raises(BundleError, match="differs"):
        member_dirs(bad, tmp_path)
    missing = EnsembleSpec((MemberSpec("nope", "f" * 64, "mass_calc", info.classes),))
    with pytest.raises(BundleError, match="not found"):
        member_dirs(missing, tmp_path)


def test_bad_specs_are_refused():
    with pytest.raises(BundleError):
        EnsembleSpec(())
    with pytest.raises(BundleError, match="classes"):
        EnsembleSpec((MemberSpec("a", "0", "mass_calc", ("x", "y")),))
    with pytest.raises(BundleError, match="duplicate"):
        EnsembleSpec((_member("a", "mass_calc"), _member("a", "mass_calc")))
    with pytest.raises(BundleError, match="malformed"):
        EnsembleSpec.from_dict({"schema": "mammo.ensemble/1", "members": [{"name": "a"}]})


def test_member_class_for():
    assert member_class_for("mass_calc", "mass_malignant") == "mass"
    assert member_class_for("mass_calc", "baseline") is None
    assert member_class_for("benign_malignant", "calcification_benign") == "benign"
    assert member_class_for("baseline_mass_calc", "baseline") == "baseline"
    assert member_class_for("five_class", "calcification_malignant") == "calcification_malignant"


def test_task_5_script_fits_writes_and_compares(tmp_path):
    """training_scripts/task_5_ensemble.py on a small CBIS-layout folder with tiny members."""
    import importlib.util
    from pathlib import Path

    from bundle_factory import synthetic_patches, tiny_bundle

    from mammo_core.bundle import verify_bundle

    data = tmp_path / "data"
    data.mkdir()
    for split, n, seed in (("train", 80, 61), ("public_test", 40, 62)):
        imgs, labels = synthetic_patches(n, seed=seed)
        np.save(data / f"{split}_tensor.npy", imgs)
        np.save(data / f"{split}_labels.npy", labels)
    members = [tiny_bundle(t) for t in ("mass_calc", "benign_malignant", "baseline_mass_calc")]
    script = Path(__file__).resolve().parents[1] / "training_scripts" / "task_5_ensemble.py"
    spec = importlib.util.spec_from_file_location("task_5_ensemble", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "ens"
    assert mod.main(["--members", *map(str, members), "--data", str(data), "--out", str(out), "--smoke"]) == 0
    info = verify_bundle(out)
    assert info.kind == "ensemble" and info.card.training.validation["disjoint_from_member_training"] is False
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["model"] for r in metrics["table"]] == [
        "tiny_mass_calc_0", "tiny_benign_malignant_0", "tiny_baseline_mass_calc_0", "ensemble"]
    ens = metrics["table"][-1]
    for key in ("auc_abnormal_vs_baseline", "auc_mass_vs_calcification", "auc_benign_vs_malignant"):
        assert 0.0 <= ens[key] <= 1.0
    assert ens["auc_abnormal_vs_baseline"] > 0.8  # the synthetic baseline/abnormal task is learnt
    assert metrics["table"][0]["auc_abnormal_vs_baseline"] is None  # mass_calc cannot estimate it
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    _, back = read_ensemble(out)
    assert [m.name for m in back.members] == [r["model"] for r in metrics["table"][:3]]


def test_task_5_validation_excludes_every_members_training_part(tmp_path):
    """With cards that record their grouped split and data hash, the ensemble is fitted only on
    train_* patches outside every member's (recomputed) training part."""
    import importlib.util
    import shutil
    from pathlib import Path

    from bundle_factory import synthetic_patches, tiny_bundle

    from mammo_core.bundle import read_card, sha256_file
    from mammo_core.datasets.splits import grouped_split, groups_for_arrays
    from mammo_core.labels import get_task

    data = tmp_path / "data"
    data.mkdir()
    for split, n, seed in (("train", 200, 63), ("public_test", 40, 64)):
        imgs, labels = synthetic_patches(n, seed=seed)
        np.save(data / f"{split}_tensor.npy", imgs)
        np.save(data / f"{split}_labels.npy", labels)
    labels = np.load(data / "train_labels.npy")
    groups = groups_for_arrays(data, split="train")
    members, used = [], np.zeros(len(labels), bool)
    for task in ("mass_calc", "baseline_mass_calc"):
        dst = shutil.copytree(tiny_bundle(task), tmp_path / task)
        keep, y = get_task(task).map_labels(labels)
        tr, va = grouped_split(y, groups[keep], 0.4, seed=0)
        used[np.flatnonzero(keep)[tr]] = True
        card = read_card(dst).card.to_dict()
        card["training"] = {"split": {"train": len(tr), "validation": len(va), "validation_fraction": 0.4,
                                      "seed": 0, "grouped_by": "pair"},
                            "data": {"sha256": {"train_labels.npy": sha256_file(data / "train_labels.npy")}},
                            "protocol": {"smoke": False}}
        (dst / "card.json").write_text(json.dumps(card))
        members.append(dst)
    script = Path(__file__).resolve().parents[1] / "training_scripts" / "task_5_ensemble.py"
    spec = importlib.util.spec_from_file_location("task_5_ensemble_b", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "ens"
    assert mod.main(["--members", *map(str, members), "--data", str(data), "--out", str(out)]) == 0
    val = json.loads((out / "card.json").read_text())["training"]["validation"]
    assert val["disjoint_from_member_training"] is True
    assert val["n"] == int((~used).sum()) >= 20


def test_factor_weights_let_the_informative_task_win():
    """mass | abnormal is estimated by a sharp mass_calc member and by a 3-class member whose
    mass/calcification split is noise: the fitted factor weights favour the sharp one, and the
    combined factor is closer to the truth than an equal-weight average."""
    from mammo_core.ensemble import MemberInfo, combine, fit_ensemble

    rng = np.random.default_rng(7)
    labels = np.repeat([0, 1, 2, 3, 4], 40)
    ab = labels > 0
    mass = np.isin(labels, (1, 2))
    sharp = np.where(mass, 0.9, 0.1)
    p_mc = np.stack([sharp, 1 - sharp], 1)
    pb = np.where(ab, 0.2, 0.8)
    noise = rng.uniform(0.05, 0.95, len(labels))
    p3 = np.stack([pb, (1 - pb) * noise, (1 - pb) * (1 - noise)], 1)
    members = [MemberInfo("mc", "0" * 64, "mass_calc", ("mass", "calcification")),
               MemberInfo("b3", "1" * 64, "baseline_mass_calc", ("baseline", "mass", "calcification"))]
    probs = {"mc": p_mc, "b3": p3}
    spec = fit_ensemble(members, probs, labels)
    fw = spec.fitted["factor_weights"]["mass_given_abnormal"]
    assert fw["mass_calc"] > 0.8 > fw["baseline_mass_calc"]
    res = combine(spec, probs)
    err_fitted = np.abs(res.factors["mass_given_abnormal"][ab] - mass[ab]).mean()
    equal = 0.5 * (res.factor_groups["mass_given_abnormal"]["mass_calc"]
                   + res.factor_groups["mass_given_abnormal"]["baseline_mass_calc"])
    assert err_fitted < np.abs(equal[ab] - mass[ab]).mean()
    np.testing.assert_allclose(res.probabilities.sum(1), 1.0)


@pytest.mark.parametrize("seed", range(8))
def test_mixed_factor_never_ranks_worse_than_its_best_task_on_the_fitting_data(seed):
    """The factor weights are chosen on the factor's AUC (grid incl. the pure tasks): on the
    data they were fitted on, the mixed mass | abnormal ranks at least as well as each task's
    own estimate. A sharp but over-confident task beside a weaker calibrated one: the former
    NLL fit ranked below its best task on seed 3 (0.960 against 0.963)."""
    from sklearn.metrics import roc_auc_score

    from mammo_core.ensemble import fit_factor_weights

    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2, 3, 4], 30)
    ab = labels > 0
    mass = np.isin(labels, (1, 2)).astype(float)
    s_a = (mass - 0.5) * 3 + rng.normal(0, 1, len(labels))
    s_b = (mass - 0.5) * 1.5 + rng.normal(0, 1, len(labels))
    est = {"mass_calc": 1 / (1 + np.exp(-8 * s_a)), "baseline_mass_calc": 1 / (1 + np.exp(-s_b))}
    w = fit_factor_weights({"mass_given_abnormal": est}, labels)["mass_given_abnormal"]
    assert set(w) == set(est) and abs(sum(w.values()) - 1) < 1e-9 and min(w.values()) >= 0
    mixed = sum(w[k] * est[k] for k in est)
    auc_mixed = roc_auc_score(mass[ab], mixed[ab])
    assert all(auc_mixed >= roc_auc_score(mass[ab], v[ab]) - 1e-12 for v in est.values())


def test_simplex_grid_holds_every_pure_task_and_sums_to_one():
    from mammo_core.ensemble.fit import simplex_grid

    g = simplex_grid(3, 10)
    assert len(g) == 66 and np.allclose(g.sum(1), 1) and (g >= 0).all()
    for i in range(3):
        assert any(np.allclose(r, np.eye(3)[i]) for r in g)


def test_call_answers_abnormal_first_then_the_most_likely_abnormal_class():
    from mammo_core.ensemble import call_five_class

    p = np.array([
        [0.34, 0.20, 0.21, 0.13, 0.12],  # argmax says baseline; P(abnormal) 0.66 -> mass_malignant
        [0.50, 0.20, 0.10, 0.10, 0.10],  # P(baseline) 0.5 -> baseline
        [0.10, 0.05, 0.05, 0.60, 0.20],  # plain case agrees with argmax
    ])
    assert call_five_class(p).tolist() == [2, 0, 3]
    with pytest.raises(ValueError):
        call_five_class(np.ones((2, 3)) / 3)


def test_classification_metrics_scores_given_decisions():
    from mammo_core.metrics import classification_metrics

    y = np.array([1, 2])
    p = np.array([[0.34, 0.3, 0.36 - 0.01, 0.005, 0.005], [0.6, 0.1, 0.3, 0.0, 0.0]])
    p = p / p.sum(1, keepdims=True)
    names = ("baseline", "mass_benign", "mass_malignant", "calcification_benign", "calcification_malignant")
    assert classification_metrics(y, p, names)["accuracy"] == 0.0
    assert classification_metrics(y, p, names, np.array([1, 2]))["accuracy"] == 1.0
