"""The pooled members' acquisition augmentation of training views (issue 24 item 3):
mammo_core.shifts.random_acquisition, its feature-cache key, the training rows it replaces, the
decision rule of benchmarks/augment_bench.py, and one tiny training run. Research use only."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_core import shifts
from mammo_core.errors import MammoError


def _patches(n=6, seed=0):
    from mammo_core.io import to_model_input

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:150, :150]
    base = 20000 + 30000 * np.exp(-((yy - 75) ** 2 + (xx - 70) ** 2) / 900.0)
    raw = np.clip(base[None] + rng.normal(0, 2000, (n, 150, 150)), 0, 65535).astype(np.uint16)  # 16-bit range
    return to_model_input(raw)


def test_random_acquisition_is_deterministic_per_seed_and_keeps_shape_dtype_and_range():
    x = _patches()
    assert x.shape == (6, 150, 150, 1) and x.max() > 0.5  # 16-bit pixels scaled by their depth
    y, prm = shifts.random_acquisition(x, seed=3)
    y2, prm2 = shifts.random_acquisition(x, seed=3)
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.min() >= 0.0 and y.max() <= 1.0 and np.isfinite(y).all()
    np.testing.assert_array_equal(y, y2)
    for k in prm:
        np.testing.assert_array_equal(prm[k], prm2[k])
    y3, _ = shifts.random_acquisition(x, seed=4)
    assert not np.array_equal(y, y3)
    assert np.abs(y - x).mean() > 1e-3  # it changes the patches
    y2d, _ = shifts.random_acquisition(x[..., 0], seed=3)  # (N, H, W) in, (N, H, W) out, same values
    assert y2d.shape == (6, 150, 150)
    np.testing.assert_array_equal(y2d, y[..., 0])
    assert x.dtype == np.float32 and not np.shares_memory(x, y)


def test_random_acquisition_draws_inside_the_documented_ranges():
    prm = shifts.draw_acquisition(4000, seed=0)
    for k, (lo, hi, kind) in shifts.ACQUISITION_RANGES.items():
        v = prm[k]
        assert v.shape == (4000,) and lo <= v.min() and v.max() <= hi, k
        assert v.min() < lo + 0.05 * (hi - lo) and v.max() > hi - 0.05 * (hi - lo), k  # the whole range
        mid = np.sqrt(lo * hi) if kind == "log" else (lo + hi) / 2
        assert abs(np.median(v) - mid) < 0.05 * (hi - lo), k
    # the bench's fixed shifts are points inside these ranges (docs/robust_inputs.md)
    r = shifts.ACQUISITION_RANGES
    assert r["gamma"][0] <= 0.5 and r["gamma"][1] >= 2 and r["contrast"][0] <= 0.6
    assert r["snr_db"][0] <= shifts.NOISE_SNR_DB <= r["snr_db"][1] and r["blur_sigma"][1] >= 1.0
    assert r["scale"][0] <= 0.8 and r["scale"][1] >= 1.25


def test_random_acquisition_uses_the_bench_functions():
    """One drawn change equals the bench's own functions applied with its parameters."""
    x = _patches(1)
    y, p = shifts.random_acquisition(x, seed=5)
    z = shifts._rescale_one(x[0, ..., 0].astype(np.float64), float(p["scale"][0]))[None]
    z = shifts._blur(z, 0, float(p["blur_sigma"][0]))
    z = np.clip(shifts._noise(z, int(p["noise_seed"][0]), float(p["snr_db"][0])), 0, 1)
    z = np.clip(np.power(np.clip(shifts._contrast(z, 0, float(p["contrast"][0])), 0, 1), p["gamma"][0]), 0, 1)
    np.testing.assert_allclose(y[0, ..., 0], z[0], atol=1e-6)


def test_random_acquisition_refuses_raw_pixels_and_values_outside_0_1():
    raw = (_patches(2) * 65535).astype(np.uint16)
    with pytest.raises(MammoError, match=r"model inputs in \[0, 1\]"):
        shifts.random_acquisition(raw, seed=0)
    with pytest.raises(MammoError, match="outside"):
        shifts.random_acquisition(np.full((1, 150, 150), 2.0, np.float32), seed=0)
    with pytest.raises(MammoError, match="needs patches"):
        shifts.random_acquisition(np.zeros((150, 150), np.float32), seed=0)


def test_augment_cache_key_names_augmentation_ranges_seed_copy_and_views(monkeypatch):
    from mammo_core.training.features import augment_key, augment_seed

    dv = np.array([1, 2, 3, 4])
    k = augment_key("acquisition", 0, 0, dv)
    assert k == augment_key("acquisition", 0, 0, dv.copy()) and k.startswith("aug-acquisition-s0-c0-")
    others = {augment_key("acquisition", 1, 0, dv), augment_key("acquisition", 0, 1, dv),
              augment_key("acquisition", 0, 0, np.array([1, 2, 3, 5])), augment_key("acquisition", 0, 0, dv[:3])}
    assert k not in others and len(others) == 4
    monkeypatch.setitem(shifts.ACQUISITION_RANGES, "gamma", (0.6, 2.0, "log"))
    assert augment_key("acquisition", 0, 0, dv) != k  # changed ranges never reuse old features
    with pytest.raises(MammoError, match="unknown training augmentation"):
        augment_key("none", 0, 0, dv)
    assert augment_seed(0, 0) == augment_seed(0, 0) != augment_seed(0, 1)


def test_rows_replace_views_1_to_copies_and_keep_view_0():
    from mammo_core.training.pooled import _rows, check_augment, training_views

    n, d = 5, 3
    F = np.arange(8 * n * d, dtype=float).reshape(8, n, d)
    Fa = -np.arange(2 * n * d, dtype=float).reshape(2, n, d) - 1
    tv = training_views(n, 8, 4, seed=0)
    idx = np.array([0, 2, 4])
    plain, aug = _rows(F, idx, tv), _rows(F, idx, tv, Fa)
    assert plain.shape == aug.shape == (3 * 4, d)
    a = aug.reshape(3, 4, d)
    p = plain.reshape(3, 4, d)
    np.testing.assert_array_equal(a[:, 0], F[0, idx])  # view 0: the patch as cut
    np.testing.assert_array_equal(a[:, 1], Fa[0, idx])
    np.testing.assert_array_equal(a[:, 2], Fa[1, idx])
    np.testing.assert_array_equal(a[:, 3], p[:, 3])
    check_augment("none", 0, 1)
    check_augment("acquisition", 1, 2)
    with pytest.raises(MammoError, match="augment-views must be 1..train_views - 1"):
        check_augment("acquisition", 1, 1)
    with pytest.raises(MammoError, match="augment-views"):
        check_augment("acquisition", 2, 2)
    with pytest.raises(MammoError, match="train augment must be one of"):
        check_augment("mixup", 1, 2)


def test_decision_rule():
    from mammo_core.training.augment_eval import decide

    q = "auc_abnormal_vs_baseline"

    def rows(cur, aug):
        return [{"shift": s, "current": {q: c}, "augmented": {q: a}}
                for s, c, a in zip(("none", "gamma_2", "blur_1px"), cur, aug)]

    assert decide(rows((0.85, 0.70, 0.68), (0.846, 0.80, 0.75)), q)["keep"]  # -0.004 unshifted: within 0.005
    d = decide(rows((0.85, 0.70, 0.68), (0.84, 0.80, 0.75)), q)
    assert not d["keep"] and d["worst_rises"] and not d["unshifted_holds"]
    d = decide(rows((0.85, 0.70, 0.68), (0.86, 0.66, 0.80)), q)
    assert not d["keep"] and d["worst"]["augmented"] == {"shift": "gamma_2", "auc": 0.66}


def test_pooled_training_with_acquisition_augment_records_it_and_caches_its_features(tmp_path):
    from training_data import make_cbis_folder, random_vgg16_weights

    from mammo_core.bundle import read_card
    from mammo_core.training.config import TrainConfig
    from mammo_core.training.runner import train

    data = make_cbis_folder(tmp_path / "d", n_train_pairs=16, n_test_pairs=4, patients=True)
    w = random_vgg16_weights(tmp_path / "vgg16.weights.h5")
    out = tmp_path / "m"
    cfg = TrainConfig("baseline_mass_calc", "transfer", data, out, name="aug", folds=2, n_boot=50,
                      model_options={"backbone": "vgg16_block4", "weights": str(w), "head": "pooled"},
                      pool_candidates=("block2_pool:avg",), c_grid=(1.0,), tta="none", train_views=2,
                      train_augment="acquisition", augment_views=1, feature_cache=str(tmp_path / "cache"),
                      allow_collapsed=True)
    train(cfg)
    rec = read_card(out).card.to_dict()["training"]["protocol"]["train_augment"]
    assert rec["kind"] == "acquisition" and rec["views"] == 1 and rec["seed"] == 0
    assert rec["ranges"]["gamma"][:2] == [0.5, 2.0]
    dirs = [p.name for p in (tmp_path / "cache").glob("*/train/aug-acquisition-s0-c0-*")]
    assert len(dirs) == 1
    with pytest.raises(MammoError, match="augment-views"):
        train(TrainConfig("baseline_mass_calc", "transfer", data, tmp_path / "m2", name="aug", folds=2,
                          model_options={"backbone": "vgg16_block4", "weights": str(w), "head": "pooled"},
                          train_views=1, train_augment="acquisition", feature_cache=str(tmp_path / "cache")))


def test_paired_delta_interval_is_zero_for_equal_scores_and_positive_for_a_clearly_better_one():
    from mammo_core.training.shift_eval import paired_delta_ci

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 3], 40)  # baseline, mass benign, calcification benign
    groups = np.arange(len(labels)) // 3  # 40 women, 3 patches each
    noise = rng.dirichlet(np.ones(3), len(labels))
    lo, hi = paired_delta_ci(labels, "baseline_mass_calc", "auc_abnormal_vs_baseline", noise, noise, groups,
                             n_boot=200)
    assert lo == hi == 0.0
    good = np.full((len(labels), 3), 0.05)
    good[np.arange(len(labels)), np.array([0, 1, 2])[np.searchsorted([0, 1, 3], labels)]] = 0.9
    lo, hi = paired_delta_ci(labels, "baseline_mass_calc", "auc_abnormal_vs_baseline", noise, good, groups,
                             n_boot=200)
    assert 0.2 < lo <= hi <= 0.7
