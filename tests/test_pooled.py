"""The small-data member (transfer, head="pooled"), test-time augmentation, the collapse guard
(training and `mammo models verify`), cluster bootstrap intervals. Research use only."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mammo_core.errors import MammoError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ pooled head = scikit-learn

@pytest.mark.parametrize("n_classes", [2, 3])
def test_pooled_model_equals_sklearn_predict_proba_and_reloads_safely(tmp_path, n_classes):
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from mammo_core.models import build_model, gradcam_layer
    from mammo_core.models.transfer import fold_linear_head

    keras.utils.set_random_seed(0)
    opts = {"backbone": "vgg16_block4", "head": "pooled", "pool_layers": "block2_pool,block3_pool",
            "pooling": "avgmax"}
    m = build_model("transfer", n_classes, **opts)
    assert not any(layer.name.startswith("block4") for layer in m.layers)  # only what the pools need
    assert all(not layer.trainable for layer in m.layers if layer.name.startswith("block"))
    assert not any(type(layer).__name__ == "Lambda" for layer in m.layers)
    feats = keras.Model(m.inputs, m.get_layer("pooled_features").output)
    x = np.random.default_rng(1).random((10, 150, 150, 1)).astype("float32")
    f = np.asarray(feats.predict(x, verbose=0), np.float64)
    assert f.shape == (10, 2 * (128 + 256))
    y = np.arange(10) % n_classes
    sc = StandardScaler().fit(f)
    lr = LogisticRegression(C=0.5, max_iter=1000).fit(sc.transform(f), y)
    fold_linear_head(m, sc.mean_, sc.scale_, lr.coef_, lr.intercept_)
    p_keras = m.predict(x, verbose=0)
    np.testing.assert_allclose(p_keras, lr.predict_proba(sc.transform(f)), atol=1e-4)
    m.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), p_keras, atol=1e-6)
    cam = gradcam_layer("transfer", **opts)
    assert cam == "block3_conv3" and again.get_layer(cam) is not None


def test_pooled_rejects_layer_outside_backbone_and_bad_pooling():
    from mammo_core.models import build_model

    with pytest.raises(MammoError, match="block5_pool"):
        build_model("transfer", 2, backbone="vgg16_block4", head="pooled", pool_layers="block5_pool")
    with pytest.raises(MammoError, match="pooling"):
        build_model("transfer", 2, backbone="vgg16_block4", head="pooled", pool_layers="block2_pool",
                    pooling="median")


def test_fold_linear_head_rejects_wrong_shape():
    from mammo_core.models import build_model
    from mammo_core.models.transfer import fold_linear_head

    m = build_model("transfer", 3, backbone="vgg16_block4", head="pooled", pool_layers="block2_pool")
    with pytest.raises(MammoError, match="does not fit"):
        fold_linear_head(m, np.zeros(128), np.ones(128), np.zeros((1, 128)), np.zeros(1))


# ------------------------------------------------------------------ TTA

def test_dihedral_views_are_the_8_symmetries_and_tta_is_invariant():
    from mammo_core.tta import N_VIEWS, dihedral, predict_tta

    x = np.random.default_rng(0).random((3, 6, 6, 1))
    views = [dihedral(x, k) for k in range(N_VIEWS)]
    assert np.array_equal(views[0], x)
    assert len({v.tobytes() for v in views}) == 8  # all distinct for a random patch

    def f(v):  # any non-symmetric "model"
        return np.stack([v[:, 0, :3].sum(axis=(1, 2)), v[:, 2, 4:].sum(axis=(1, 2))], axis=1)

    base = predict_tta(f, x)
    for k in range(N_VIEWS):  # the mean over the group does not depend on the input's orientation
        np.testing.assert_allclose(predict_tta(f, dihedral(x, k)), base)
    np.testing.assert_allclose(predict_tta(f, x, "none"), f(x))
    with pytest.raises(ValueError):
        predict_tta(f, x, "flips")


# ------------------------------------------------------------------ collapse guard

def test_check_not_collapsed():
    from mammo_core.training.pooled import check_not_collapsed

    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1], size=50)
    assert check_not_collapsed(p, "x")["predicted_classes"] == 2
    with pytest.raises(MammoError, match="constant"):
        check_not_collapsed(np.tile([[0.514, 0.486]], (58, 1)) + 1e-5 * rng.random((58, 2)), "member")
    with pytest.raises(MammoError, match="same class"):
        check_not_collapsed(np.c_[np.linspace(0.6, 0.99, 20), 1 - np.linspace(0.6, 0.99, 20)], "member")


def _constant(model):
    """Zero the last Dense kernel: the model then outputs one constant distribution."""
    last = model.layers[-1]
    w = last.get_weights()
    last.set_weights([np.zeros_like(w[0]), *w[1:]])
    return model


def test_training_refuses_to_write_a_constant_model(tmp_path, monkeypatch):
    from training_data import make_cbis_folder

    from mammo_core.training import loop, runner
    from mammo_core.training.config import TrainConfig

    data = make_cbis_folder(tmp_path / "d", n_train_pairs=16, n_test_pairs=4, patients=True)
    real_fit = loop.fit_model

    def fit_constant(*a, **k):
        res = real_fit(*a, **k)
        res.model = _constant(res.model)
        return res

    monkeypatch.setattr(runner, "fit_model", fit_constant)
    cfg = TrainConfig("mass_calc", "scratch_v1", data, tmp_path / "out", epochs=1, batch_size=8,
                      n_boot=0, val_fraction=0.3)
    with pytest.raises(MammoError, match="constant"):
        runner.train(cfg)
    assert not (tmp_path / "out" / "model.keras").exists()


def test_verify_reports_spread_and_fails_on_a_constant_model(tmp_path):
    import keras
    from bundle_factory import models_dir_with, synthetic_patches

    from mammo_core.bundle import read_card, write_bundle, write_manifest

    root = models_dir_with(tmp_path / "models", ["mass_calc"], ensemble=False)
    samples = tmp_path / "samples"
    samples.mkdir()
    imgs, _ = synthetic_patches(8, seed=3)
    np.save(samples / "s_tensor.npy", imgs)
    cmd = [sys.executable, "-m", "mammo_core", "models", "verify", "--models-dir", str(root),
           "--samples", str(samples)]
    ok = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "spread on 8 samples" in ok.stdout
    bundle = next(p for p in root.iterdir() if (p / "card.json").is_file())
    card = read_card(bundle).card.to_dict()
    model = _constant(keras.saving.load_model(bundle / "model.keras", safe_mode=True))
    write_bundle(model, bundle, {k: v for k, v in card.items() if k not in ("files", "sha256")})
    write_manifest(root)
    bad = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert "constant model" in bad.stderr
    # a card naming a Grad-CAM layer its model lacks fails verify too (one line, naming the card)
    model = keras.saving.load_model(bundle / "model.keras", safe_mode=True)
    write_bundle(model, bundle, {**{k: v for k, v in card.items() if k not in ("files", "sha256")},
                                 "gradcam_layer": "no_such_conv"})
    write_manifest(root)
    bad = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert [ln for ln in bad.stderr.splitlines() if "no_such_conv" in ln and "card.json" in ln]


# ------------------------------------------------------------------ intervals over women

def test_cluster_bootstrap_resamples_women_not_patches():
    from mammo_core.metrics import auc, bootstrap_ci, ci_method

    rng = np.random.default_rng(0)
    n_women = 12
    y1 = np.tile([0, 1], n_women // 2)
    s1 = np.clip(0.5 * y1 + 0.6 * rng.random(n_women), 0, 1)
    # each woman's patch repeated 10 times: resampling patches pretends there are 120 women
    y, s = np.repeat(y1, 10), np.repeat(s1, 10)
    g = np.repeat(np.arange(n_women), 10)
    p = np.c_[1 - s, s]
    lo_p, hi_p = bootstrap_ci(y, p, auc, n_boot=400, seed=1)
    lo_w, hi_w = bootstrap_ci(y, p, auc, n_boot=400, seed=1, groups=g)
    lo_1, hi_1 = bootstrap_ci(y1, np.c_[1 - s1, s1], auc, n_boot=400, seed=1)
    assert (hi_w - lo_w) > 1.5 * (hi_p - lo_p)
    assert abs((hi_w - lo_w) - (hi_1 - lo_1)) < 0.1  # like bootstrapping one row per woman
    assert "women (12)" in ci_method(400, g)
    with pytest.raises(ValueError):
        bootstrap_ci(y, p, auc, n_boot=10, groups=g[:5])


# ------------------------------------------------------------------ folds and selection

def test_woman_folds_keep_each_woman_in_one_fold_and_task_score():
    from mammo_core.training.pooled import task_score, woman_folds

    labels = np.array([0, 1, 0, 3, 0, 2, 0, 4] * 5)
    groups = np.repeat(np.arange(20), 2)
    fold = woman_folds(labels, groups, 4, seed=0)
    assert set(fold) == {0, 1, 2, 3}
    for w in np.unique(groups):
        assert len(set(fold[groups == w])) == 1
    assert np.array_equal(fold, woman_folds(labels, groups, 4, seed=0))
    y = np.array([0, 1, 2, 0, 1, 2])
    perfect = np.eye(3)[y] * 0.9 + 0.1 / 3
    assert task_score("baseline_mass_calc", y, perfect) == pytest.approx(1.0)


def test_every_c_of_the_grid_is_scored_with_the_model_the_final_refit_would_ship():
    """Attack on the C search: near-separable features (as pooled VGG features of a few hundred
    patches are). A fit warm-started from the previous C stopped early there (lbfgs saw a
    gradient below tol; on the bundled 3-class member it stopped after 0 iterations at C=10), so
    a larger C was scored with weights that were not its own while the final refit at that C was
    another model. Each C's out-of-fold predictions must be those of a fit from scratch on the
    other folds - the function the final refit uses."""
    from mammo_core.metrics import nll
    from mammo_core.training.pooled import Candidate, _fit_lr, _predict_views, _rows, select, training_views

    rng = np.random.default_rng(0)
    n, d = 160, 100
    labels = np.repeat([1, 3], n // 2)  # mass benign / calcification benign
    y = (labels == 3).astype(int)
    w = rng.normal(size=d)
    base = rng.normal(size=(n, d)) + 2.0 * np.outer(2 * y - 1, w) / np.linalg.norm(w)
    views = np.stack([base + 0.05 * rng.normal(size=(n, d)) for _ in range(2)]).astype(np.float32)
    fold = np.arange(n) // 2 % 4
    grid = (0.01, 0.1, 1.0, 10.0, 100.0)
    tv = training_views(n, 2, 2, 0)
    rows, best, oof, _ = select("mass_calc", {"gap_block4_pool": views}, labels, fold,
                                [Candidate.parse("block4_pool:avg")], grid, ("none",), 0, tv)
    assert [r["C"] for r in rows] == list(grid)
    for r in rows:
        p = np.zeros((n, 2))
        for f in range(4):
            tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            scaler, lr = _fit_lr(_rows(views, tr, tv), np.repeat(y[tr], 2), r["C"], 0)
            p[te] = _predict_views(scaler, lr, views[:, te])[0]
        assert r["nll"] == pytest.approx(nll(y, p), abs=1e-3), f"C={r['C']}"
        if r["C"] == best[1]:
            assert np.abs(oof - p).max() < 2e-3


# ------------------------------------------------------------------ end to end (slow)

@pytest.mark.slow
def test_pooled_members_and_out_of_fold_ensemble_end_to_end(tmp_path):
    """Three pooled members on tiny synthetic data (random-init VGG16 weights written by the
    test), chosen out of fold, bundled; then the ensemble fitted on their out-of-fold
    predictions."""
    from training_data import make_cbis_folder, random_vgg16_weights

    from mammo_core.bundle import read_card
    from mammo_core.ensemble_fit import EnsembleFitConfig, fit_and_evaluate
    from mammo_core.inference import load_bundle, predict_arrays
    from mammo_core.training.config import TrainConfig
    from mammo_core.training.runner import train

    data = make_cbis_folder(tmp_path / "d", n_train_pairs=24, n_test_pairs=8, patients=True)
    w = random_vgg16_weights(tmp_path / "vgg16.weights.h5")
    runs = {}
    for task, bb in (("baseline_mass_calc", "vgg16_block4"), ("mass_calc", "vgg16"), ("benign_malignant", "vgg16")):
        out = tmp_path / "models" / task
        cfg = TrainConfig(task, "transfer", data, out, name=task, folds=3, n_boot=100,
                          model_options={"backbone": bb, "weights": str(w), "head": "pooled"},
                          pool_candidates=("block2_pool:avg", "block2_pool,block3_pool:avgmax"),
                          c_grid=(0.01, 1.0), tta="auto", train_views=2, feature_cache=str(tmp_path / "cache"),
                          held_out_seen="seen" if task == "mass_calc" else "")
        res = train(cfg)
        card = read_card(out).card.to_dict()
        assert card["metrics"]["blind"] is (task != "mass_calc")
        chosen = card["training"]["protocol"]["chosen"]
        assert chosen["tta"] in ("none", "dihedral8") and chosen["C"] in (0.01, 1.0)
        assert card["inference"]["tta"] == chosen["tta"]
        assert "women" in card["metrics"]["auc_ci_method"] and "women" in card["training"]["oof"]["auc_ci_method"]
        assert (out / "oof.npz").is_file() and res.folds[-2]["fold"] == "mean"
        doc = json.loads((out / "metrics.json").read_text())  # D3/D5: hard-label AUC beside the AUC
        for part in (doc["public_test"], doc["out_of_fold"], res.folds[-2]):
            assert 0.0 <= part["auc_hard_labels"] <= 1.0 and "auc" in part
        grid_rows = list(csv.DictReader((out / "grid.csv").read_text().splitlines()))
        assert {"auc_hard_labels", "score"} <= set(grid_rows[0])
        assert "auc_hard_labels" in (out / "folds.csv").read_text().splitlines()[0]
        m = load_bundle(out)  # the bundle loads (safe mode) and predicts with its card's TTA
        x = np.random.default_rng(0).random((3, 150, 150, 1)).astype("float32")
        assert predict_arrays([m], x)[m.name].shape == (3, len(card["classes"]))
        runs[task] = out
    assert (tmp_path / "cache").is_dir()  # features computed once, reused by the 2nd and 3rd member
    members = tuple(runs.values())
    ens = fit_and_evaluate(EnsembleFitConfig(members=members, data=data, out=tmp_path / "models" / "ensemble",
                                             oof=members, n_boot=100))
    assert ens.metrics["validation"]["disjoint_from_member_training"]
    assert "out-of-fold" in ens.metrics["validation"]["how"]
    assert ens.metrics["oof_table"][-1]["model"] == "ensemble"
    with pytest.raises(MammoError, match="one out-of-fold run folder per member"):
        EnsembleFitConfig(members=members, data=data, out=tmp_path / "e2", oof=members[:1])
