"""mammo_core.ensemble_fit (the library behind training_scripts/task_5_ensemble.py) and the
ensemble comparison plot, called directly rather than through the script."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest

from mammo_core.errors import MammoError


def _data(tmp_path, n_train=80, n_test=40, seeds=(71, 72)):
    from bundle_factory import synthetic_patches

    data = tmp_path / "data"
    data.mkdir()
    for split, n, seed in (("train", n_train, seeds[0]), ("public_test", n_test, seeds[1])):
        imgs, labels = synthetic_patches(n, seed=seed)
        np.save(data / f"{split}_tensor.npy", imgs)
        np.save(data / f"{split}_labels.npy", labels)
    return data


def test_config_is_frozen_and_normalises_paths(tmp_path):
    from mammo_core.ensemble_fit import EnsembleFitConfig

    cfg = EnsembleFitConfig(members=[str(tmp_path / "a"), tmp_path / "b"], data=str(tmp_path), out="o")
    assert cfg.members == (tmp_path / "a", tmp_path / "b") and cfg.data == tmp_path
    assert (cfg.name, cfg.val_fraction, cfg.percentile, cfg.seed, cfg.batch_size, cfg.smoke) == (
        "ensemble", 0.2, 90.0, 0, 64, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


def test_fit_and_evaluate_writes_bundle_metrics_and_plot(tmp_path):
    from bundle_factory import tiny_bundle

    from mammo_core.bundle import verify_bundle
    from mammo_core.ensemble import read_ensemble
    from mammo_core.ensemble_fit import EnsembleFitConfig, fit_and_evaluate

    data = _data(tmp_path)
    members = [tiny_bundle(t) for t in ("mass_calc", "baseline_mass_calc")]
    logged = []
    cfg = EnsembleFitConfig(members=members, data=data, out=tmp_path / "ens", name="ens_t", smoke=True,
                            command="fit --from-test")
    res = fit_and_evaluate(cfg, log=logged.append)
    assert [p.name for p in res.files] == ["card.json", "ensemble.json", "metrics.json", "comparison.png"]
    assert all(p.is_file() for p in res.files)
    info = verify_bundle(tmp_path / "ens")
    assert info.kind == "ensemble" and info.name == "ens_t"
    tr = info.card.to_dict()["training"]
    assert tr["command"] == "fit --from-test" and tr["held_out"] == "public_test"
    assert tr["validation"]["disjoint_from_member_training"] is False  # cards record no split
    assert any(m.startswith("WARNING: grouped split (20%, seed 0)") for m in logged)
    on_disk = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert on_disk == res.metrics
    assert [r["model"] for r in on_disk["table"]] == ["tiny_mass_calc_0", "tiny_baseline_mass_calc_0", "ens_t"]
    # mass_calc cannot estimate abnormal-vs-baseline: NaN in the rows, null in the JSON
    assert math.isnan(res.rows[0]["auc_abnormal_vs_baseline"])
    assert on_disk["table"][0]["auc_abnormal_vs_baseline"] is None
    assert "| tiny_mass_calc_0 | mass_calc |" in res.table_markdown and "—" in res.table_markdown
    ens = on_disk["table"][-1]
    assert 0.0 <= ens["auc_abnormal_vs_baseline"] <= 1.0 and 0.0 <= ens["flagged_fraction"] <= 1.0
    # the card's metrics are the ensemble row's
    assert {k: info.card.to_dict()["metrics"][k] for k in ("n", "accuracy", "ece", "nll")} == {
        k: ens[k] for k in ("n", "accuracy", "ece", "nll")}
    _, spec = read_ensemble(tmp_path / "ens")
    assert spec.fitted["disagreement_percentile"] == 90.0
    assert info.card.to_dict()["metrics"]["blind"] is True and "not_blind_because" not in info.card.to_dict()["metrics"]
    # a split seen before a change to the fit: the card says its numbers are not blind
    seen = EnsembleFitConfig(members=members, data=data, out=tmp_path / "ens2", name="ens_t", smoke=True,
                             held_out_seen="rule changed after a look")
    fit_and_evaluate(seen, log=logged.append)
    m = verify_bundle(tmp_path / "ens2").card.to_dict()["metrics"]
    assert m["blind"] is False and m["not_blind_because"] == "rule changed after a look"


def test_fit_and_evaluate_rejects_bad_input(tmp_path):
    from bundle_factory import tiny_bundle

    from mammo_core.ensemble_fit import EnsembleFitConfig, fit_and_evaluate

    data = _data(tmp_path, n_train=20, n_test=10)
    src = tiny_bundle("mass_calc")
    dup = [shutil.copytree(src, tmp_path / "a" / src.name), shutil.copytree(src, tmp_path / "b" / src.name)]
    with pytest.raises(MammoError, match="member names must be unique"):
        fit_and_evaluate(EnsembleFitConfig(members=dup, data=data, out=tmp_path / "o1"), log=lambda m: None)
    (data / "public_test_labels.npy").unlink()
    (data / "public_test_tensor.npy").unlink()
    with pytest.raises(MammoError, match="needs labelled public_test"):
        fit_and_evaluate(EnsembleFitConfig(members=dup[:1], data=data, out=tmp_path / "o2"), log=lambda m: None)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_ensemble_comparison_plot_draws_missing_aucs(tmp_path):
    from PIL import Image

    from mammo_core.plots import ensemble_comparison

    rows = [{"model": "a", "task": "mass_calc", "auc_abnormal_vs_baseline": math.nan,
             "auc_mass_vs_calcification": 0.8, "auc_benign_vs_malignant": None},
            {"model": "ens", "task": "five_class", "auc_abnormal_vs_baseline": 0.9,
             "auc_mass_vs_calcification": 0.7, "auc_benign_vs_malignant": 0.6}]
    path = ensemble_comparison(rows, tmp_path / "cmp" / "comparison.png", "title")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert Image.open(path).size == (1320, 540)  # 11 x 4.5 in at 120 dpi
    assert [p.name for p in path.parent.iterdir()] == ["comparison.png"]


def test_one_task_auc_definition_for_members_and_the_ensemble():
    from sklearn.metrics import roc_auc_score

    from mammo_core.ensemble import malignancy
    from mammo_core.ensemble_fit import TASK_AUCS, task_auc_cis, task_aucs, task_scores

    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(5), 12)
    p5 = rng.dirichlet(np.ones(5), size=len(labels))
    p5[np.arange(len(labels)), labels] += 0.5
    p5 /= p5.sum(axis=1, keepdims=True)
    mal = malignancy(p5)
    assert np.allclose(mal, (p5[:, 2] + p5[:, 4]) / (1 - p5[:, 0]))
    got = task_aucs(labels, task_scores("five_class", p5))
    ab = labels != 0
    assert got["auc_abnormal_vs_baseline"] == pytest.approx(roc_auc_score(ab, 1 - p5[:, 0]))
    assert got["auc_benign_vs_malignant"] == pytest.approx(
        roc_auc_score(np.isin(labels[ab], (2, 4)), mal[ab]))
    # a mass_calc member answers one question; the others are NaN
    mc = np.stack([p5[:, 1] + p5[:, 2], p5[:, 3] + p5[:, 4]], axis=1)
    mc /= mc.sum(axis=1, keepdims=True)
    one = task_aucs(labels, task_scores("mass_calc", mc))
    assert np.isnan(one["auc_abnormal_vs_baseline"]) and np.isnan(one["auc_benign_vs_malignant"])
    assert 0.5 < one["auc_mass_vs_calcification"] <= 1.0
    groups = np.arange(len(labels)) // 2  # pairs of patches, one woman each
    cis = task_auc_cis(labels, p5, groups, n_boot=200, seed=0)
    assert set(cis) == {f"{k}_{s}" for k in TASK_AUCS for s in ("ci95", "n")} | {"auc_ci_method"}
    assert cis["auc_mass_vs_calcification_n"] == int(ab.sum()) and "30" in cis["auc_ci_method"]
    lo, hi = cis["auc_abnormal_vs_baseline_ci95"]
    assert lo <= got["auc_abnormal_vs_baseline"] <= hi
