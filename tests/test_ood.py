"""Out-of-distribution checks (mammo_core.ood) and the acquisition shifts (mammo_core.shifts).
Research use only — not a medical device."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mammo_core import ood, shifts
from mammo_core.errors import BundleError


def test_background_share_and_warning_words():
    x = np.full((3, 150, 150, 1), 0.5, np.float32)
    x[1, :, :30] = 0.0  # a film-edge strip: 20 % of the patch
    x[2, :, :] = 0.05  # below the tissue level everywhere
    share = ood.background_share(x)
    assert share[0] == 0.0 and share[1] == pytest.approx(0.2) and share[2] == 1.0
    got = ood.checks(ood.OodSpec(ood.BACKGROUND_LIMIT), share, None)
    assert got[0].warnings == ()
    assert got[1].warnings == ("20 % of this patch is outside the breast; the models were not trained "
                               "on such patches",)
    assert got[1].to_json()["background_share"] == 0.2


def _features(n: int, seed: int, d: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(size=(8, d))
    return rng.normal(size=(n, 8)) @ basis + 0.3 * rng.normal(size=(n, d)) + 5.0


def test_feature_distance_threshold_warns_about_one_percent_and_shifted_features():
    f = _features(1000, 1)
    fold = np.arange(len(f)) % 5
    d_oof = ood.out_of_fold_distances(f, fold, k=8)
    thr = float(np.percentile(d_oof, 99))
    ref = ood.fit_reference(f, k=8)
    fresh = ref.distance(_features(5000, 2))
    assert 0.002 < (fresh > thr).mean() < 0.03  # ~1 % of new in-distribution patches
    shifted = _features(500, 3)
    shifted[:, :10] += 3.0  # another scanner: some features move
    assert (ref.distance(shifted) > thr).mean() > 0.9


def test_reference_round_trip_no_pickle_and_refusals(tmp_path):
    ref = ood.fit_reference(_features(200, 4), k=4)
    p = tmp_path / ood.REFERENCE_FILE
    ref.save(p)
    back = ood.FeatureReference.load(p)
    x = _features(10, 5)
    np.testing.assert_allclose(back.distance(x), ref.distance(x))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BundleError):
        ood.FeatureReference.load(bad)  # an object array is never unpickled
    np.savez(bad, mean=np.zeros(3), scale=np.ones(3), components=np.zeros((2, 4)), sd=np.ones(2),
             residual=np.array(1.0))
    with pytest.raises(BundleError, match="do not fit"):
        ood.FeatureReference.load(bad)


def test_spec_round_trip_and_refusals():
    spec = ood.OodSpec(0.1, "m", reference_file=ood.REFERENCE_FILE, threshold=9.5, how="x")
    assert ood.OodSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(BundleError):
        ood.OodSpec(1.5)
    with pytest.raises(BundleError):
        ood.OodSpec(0.1, "m", reference_file=None, threshold=2.0)
    with pytest.raises(BundleError):
        ood.OodSpec(0.1, "m", reference_file="../x.npz", threshold=2.0)
    with pytest.raises(BundleError):
        ood.OodSpec.from_dict({"background_limit": 0.1})


@pytest.mark.parametrize("name", shifts.SHIFT_NAMES)
def test_every_shift_keeps_shape_and_range_and_is_deterministic(name):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, size=(4, 150, 150, 1)).astype(np.float32)
    y = shifts.apply_shift(name, x, seed=1)
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.min() >= 0.0 and y.max() <= 1.0
    np.testing.assert_array_equal(y, shifts.apply_shift(name, x, seed=1))
    assert np.array_equal(y, x) is (name == "none") or name.startswith("bits")


def test_shifts_do_what_they_say():
    x = np.tile(np.linspace(0.2, 0.8, 150, dtype=np.float32), (1, 150, 1))
    assert shifts.apply_shift("gamma_2", x)[0, 0, 75] == pytest.approx(x[0, 0, 75] ** 2, rel=1e-5)
    c = shifts.apply_shift("contrast_0.6", x)
    assert c.std() == pytest.approx(0.6 * x.std(), rel=1e-4)
    e = shifts.apply_shift("film_edge", np.repeat(x, 2, axis=0))
    assert ood.background_share(e)[0] == pytest.approx(0.2, abs=0.01)
    n = shifts.apply_shift("noise_snr20", x) - x
    assert n.std() == pytest.approx(x.std() / 10, rel=0.05)
    q = shifts.apply_shift("bits_10", x)
    assert np.allclose(q * 1023, np.round(q * 1023), atol=1e-3)
    with pytest.raises(KeyError):
        shifts.get_shift("nope")
