"""Grad-CAM through tf-keras-vis: [0, 1] maps at input size, zeros on a constant image."""
from __future__ import annotations

import numpy as np
import pytest
from bundle_factory import GRADCAM_LAYER, synthetic_patches, tiny_bundle

from mammo_core.errors import MammoError
from mammo_core.explain import (
    colorize,
    gradcam,
    last_conv_layer,
    overlay,
    visualizer,
    weighted_mean,
)
from mammo_core.inference import load_bundle


@pytest.fixture(scope="module")
def lm():
    return load_bundle(tiny_bundle("five_class"))


@pytest.fixture(scope="module")
def x():
    imgs, _ = synthetic_patches(5, seed=11)
    return imgs.astype(np.float32)[..., None] / 65535.0


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
def test_maps_are_float32_in_unit_range_at_input_size(lm, x, method):
    maps = gradcam(lm.model, x, method=method, layer=lm.gradcam_layer)
    assert maps.shape == (5, 150, 150) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.reshape(5, -1).max(1).min() > 0.5  # normalised per patch, not all blank


def test_constant_image_gives_an_all_zero_map(lm):
    for value in (0.0, 0.5, 1.0):
        m = gradcam(lm.model, np.full((1, 150, 150, 1), value, np.float32), class_index=2)
        assert m.shape == (1, 150, 150) and not np.isnan(m).any() and (m == 0).all()


def test_class_choice_and_default_layer(lm, x):
    assert last_conv_layer(lm.model) == GRADCAM_LAYER == lm.gradcam_layer
    a = gradcam(lm.model, x[:2], class_index=[0, 4])
    b = gradcam(lm.model, x[:2], class_index=0)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    pred = lm(x[:2]).argmax(1)
    np.testing.assert_allclose(gradcam(lm.model, x[:2]), gradcam(lm.model, x[:2], class_index=pred), atol=1e-6)
    with pytest.raises(MammoError, match="out of range"):
        gradcam(lm.model, x[:1], class_index=7)
    with pytest.raises(MammoError, match="no layer"):
        gradcam(lm.model, x[:1], layer="nope")


def test_visualizer_is_cached_and_leaves_the_model_alone(lm, x):
    before = lm(x)
    v1 = visualizer(lm.model, "gradcam")
    assert visualizer(lm.model, "gradcam") is v1
    assert lm.model.layers[-1].activation.__name__ == "softmax"
    np.testing.assert_allclose(lm(x), before, atol=1e-6)
    # the visualizer's clone outputs logits (pre-softmax): not rows summing to 1
    logits = np.asarray(v1.model([x]))  # the clone takes its inputs as a list
    assert not np.allclose(logits.sum(1), 1.0)


def test_sequential_models_are_refused():
    import keras

    seq = keras.Sequential([keras.Input((150, 150, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                            keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(MammoError, match="functional"):
        gradcam(seq, np.zeros((1, 150, 150, 1), np.float32))


def test_colorize_and_overlay():
    hm = np.linspace(0, 1, 150 * 150, dtype=np.float32).reshape(150, 150)
    rgb = colorize(hm)
    assert rgb.shape == (150, 150, 3) and rgb.dtype == np.uint8
    assert not np.array_equal(rgb[0, 0], rgb[-1, -1])
    px = (np.arange(150 * 150) % 65535).astype(np.uint16).reshape(150, 150)
    ov = overlay(px, hm, alpha=0.4)
    assert ov.shape == (150, 150, 3) and ov.dtype == np.uint8
    grey = overlay(px, hm, alpha=0.0)
    assert (grey[..., 0] == grey[..., 1]).all()  # alpha 0: the windowed patch only
    assert grey.max() == 255 and grey.min() == 0
    np.testing.assert_array_equal(overlay(px, hm, alpha=1.0), rgb)
    with pytest.raises(MammoError):
        overlay(px, hm, alpha=1.5)
    with pytest.raises(MammoError, match="shape"):
        overlay(px[:100], hm)


def test_weighted_mean():
    a, b = np.zeros((150, 150), np.float32), np.ones((150, 150), np.float32)
    np.testing.assert_allclose(weighted_mean([a, b], [0.25, 0.75]), 0.75)
    np.testing.assert_allclose(weighted_mean([a, b], [0, 0]), 0.5)
    assert weighted_mean([], []).shape == (150, 150)


def test_compiled_gradcam_equals_tf_keras_vis(lm, x, monkeypatch):
    """The compiled gradient pass (reused across patches) gives tf-keras-vis' own maps."""
    from mammo_core import explain

    fast = gradcam(lm.model, x, class_index=[0, 1, 2, 3, 4], layer=lm.gradcam_layer)
    monkeypatch.setattr(explain, "COMPILED_GRADCAM", False)
    ref = gradcam(lm.model, x, class_index=[0, 1, 2, 3, 4], layer=lm.gradcam_layer)
    np.testing.assert_allclose(fast, ref, atol=1e-4)


def test_shared_gradcam_pass_equals_one_gradcam_per_model(x):
    """Several members' maps from one forward pass (their identical layers once) are each
    member's own Grad-CAM (the ensemble heatmap's path), trunk sharing included."""
    from mammo_core.explain import gradcam_shared

    ms = [load_bundle(tiny_bundle(t)) for t in ("mass_calc", "baseline_mass_calc", "benign_malignant")]
    idx = [1, 2, 0]
    shared = gradcam_shared([m.model for m in ms], [m.gradcam_layer for m in ms], x[:2], idx)
    assert len(shared) == 3
    for m, ci, got in zip(ms, idx, shared):
        own = gradcam(m.model, x[:2], class_index=ci, layer=m.gradcam_layer)
        np.testing.assert_allclose(got, own, atol=1e-5)
    # one model twice: every layer shared, two classes from the one pass
    a, b = gradcam_shared([ms[1].model, ms[1].model], [None, None], x[:2], [0, 2])
    np.testing.assert_allclose(a, gradcam(ms[1].model, x[:2], class_index=0), atol=1e-5)
    np.testing.assert_allclose(b, gradcam(ms[1].model, x[:2], class_index=2), atol=1e-5)
    with pytest.raises(MammoError, match="out of range"):
        gradcam_shared([ms[0].model], [None], x[:1], [7])
