"""benchmarks/robust_screen.py's building blocks (issue 24 item 3): the centre-pooled feature
model (``--pool-crop``), the feature cache's model factory, and the input front-ends.
Research use only — not a medical device."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import robust_screen


def test_pool_crop_pools_the_centre_of_each_block_map(tmp_path):
    import keras
    from training_data import random_vgg16_weights

    from mammo_core.training.features import _cached_stack, feature_model

    w = random_vgg16_weights(tmp_path / "vgg16.weights.h5")
    x = np.random.default_rng(0).random((3, 150, 150, 1)).astype(np.float32)
    full, keys = feature_model(w)
    crop, ckeys = robust_screen.crop_feature_model(0.1)(w)
    assert ckeys == keys
    maps = keras.Model(full.inputs, [full.get_layer(k[4:]).output for k in keys])(x)
    got = crop(x)
    for k, m, g in zip(keys, maps, got):
        m = np.asarray(m)
        c = round(0.1 * m.shape[1])
        centre = m[:, c:m.shape[1] - c, c:m.shape[2] - c] if c else m
        want = centre.mean(axis=(1, 2)) if k.startswith("gap_") else centre.max(axis=(1, 2))
        np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5, atol=1e-5)
    assert round(0.1 * np.asarray(maps[keys.index("gap_block2_pool")]).shape[1]) > 0  # a real crop
    # the cache builds its model with the factory given, and reuses the files afterwards
    made = []

    def factory(weights):
        made.append(weights)
        return robust_screen.crop_feature_model(0.1)(weights)

    entry = [(tmp_path / "cache" / "v0", "view 0", lambda: x)]
    a = _cached_stack(entry, len(x), w, 2, lambda m: None, factory)
    b = _cached_stack(entry, len(x), w, 2, lambda m: None, factory)
    assert len(made) == 1 and all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_allclose(a["gmp_block3_pool"][0], np.asarray(got[keys.index("gmp_block3_pool")]), atol=1e-5)


def test_std_front_cancels_a_contrast_change():
    x = np.random.default_rng(1).random((2, 150, 150, 1)).astype(np.float32) * 0.5 + 0.2
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    y = robust_screen.front(x, "std")
    y2 = robust_screen.front(m + 0.6 * (x - m), "std")
    np.testing.assert_allclose(y, y2, atol=2e-3)
    assert robust_screen.front(x, "none") is x


def test_rim_diagnosis_mirrors_the_rim_exactly_as_scale_0_8_pads_it():
    import rim_diagnosis

    from mammo_core.shifts import apply_shift

    x = np.random.default_rng(2).random((2, 150, 150, 1)).astype(np.float32)
    s08 = apply_shift("scale_0.8", x, 0)
    np.testing.assert_array_equal(rim_diagnosis.mirrored_rim(s08), s08)  # scale_0.8's rim IS that mirror
    r = rim_diagnosis.mirrored_rim(x)
    np.testing.assert_array_equal(r[:, 15:135, 15:135], x[:, 15:135, 15:135])  # the centre is untouched
    assert not np.array_equal(r, x)
