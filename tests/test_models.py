"""Model registry and builders: the study's parameter counts, flat graphs, in-graph caffe
preprocessing, fe/ft freezing, safe_mode save/load round trips, the local VGG16 weights."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_core.errors import MammoError
from mammo_core.models import REGISTRY, build_model, gradcam_layer

keras = pytest.importorskip("keras")


def n_trainable(model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def assert_flat_safe(model) -> None:
    for layer in model.layers:
        assert not isinstance(layer, keras.Model), f"nested model {layer.name}"
        assert type(layer).__name__ != "Lambda"


@pytest.fixture
def x(rng):
    return rng.random((2, 150, 150, 1)).astype("float32")


@pytest.mark.parametrize("name,n,expected", [
    ("scratch_v1", 2, 343_842), ("scratch_v2", 2, 360_354),
    ("scratch_v1", 3, 343_842 + 65), ("scratch_v2", 3, 360_354 + 65),
])
def test_scratch_parameter_counts_match_study(name, n, expected):
    m = build_model(name, n)
    assert m.count_params() == expected
    assert n_trainable(m) == expected
    assert m.input_shape == (None, 150, 150, 1)
    assert m.output_shape == (None, n)
    assert_flat_safe(m)


def test_scratch_v1_layer_shapes_are_valid_padding():
    m = build_model("scratch_v1", 2)
    assert m.get_layer("conv5").output.shape[1:] == (5, 5, 128)
    assert m.get_layer("flatten").output.shape[1:] == (3200,)
    assert build_model("scratch_v2", 2).get_layer("conv6").output.shape[1:] == (3, 3, 128)


@pytest.mark.parametrize("backbone,total", [("vgg16", 16_812_610), ("vgg19", 22_122_306)])
def test_vgg_parameter_counts_match_study(backbone, total):
    m = build_model("transfer", 2, backbone=backbone, mode="fe", weights="none")
    assert m.count_params() == total
    assert n_trainable(m) == 2_097_922  # head only: Dense(8192 -> 256) + Dense(256 -> 2)
    assert_flat_safe(m)
    m.get_layer(gradcam_layer("transfer", backbone=backbone))  # exists in the flat graph


def test_ft_unfreezes_only_last_block():
    m = build_model("transfer", 2, backbone="vgg16", mode="ft")
    trainable = {l.name for l in m.layers if l.trainable and l.weights}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3", "dense_hidden", "predictions"}
    assert n_trainable(m) == 2_097_922 + 3 * (3 * 3 * 512 * 512 + 512)


def test_resnet50_builds_flat():
    m = build_model("transfer", 2, backbone="resnet50")
    assert_flat_safe(m)
    assert m.get_layer(gradcam_layer("transfer", backbone="resnet50")).output.shape[1:] == (5, 5, 2048)
    assert m.output_shape == (None, 2)


def test_caffe_preprocessing_matches_keras_applications(x):
    m = build_model("transfer", 2, backbone="vgg16")
    pre = keras.Model(m.inputs, m.get_layer("caffe_preprocess").output)
    ours = pre.predict(x, verbose=0)
    ref = keras.applications.vgg16.preprocess_input(np.repeat(x * 255.0, 3, axis=-1))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)
    ref50 = keras.applications.resnet50.preprocess_input(np.repeat(x * 255.0, 3, axis=-1))
    np.testing.assert_allclose(ours, ref50, rtol=0, atol=1e-3)


def test_split_base_head_composes_to_model(x):
    from mammo_core.models.transfer import split_base_head

    m = build_model("transfer", 3, backbone="vgg16")
    base, head = split_base_head(m)
    np.testing.assert_allclose(head.predict(base.predict(x, verbose=0), verbose=0),
                               m.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,opts", [("scratch_v1", {}), ("scratch_v2", {"hidden": 32}),
                                       ("transfer", {"backbone": "vgg16", "mode": "ft"})])
def test_save_load_round_trip_safe_mode(tmp_path, x, name, opts):
    m = build_model(name, 2, **opts)
    path = tmp_path / "m.keras"
    m.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))
    assert [l.trainable for l in loaded.layers] == [l.trainable for l in m.layers]
    p = loaded.predict(x, verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert p.dtype == np.float32


@pytest.mark.slow
def test_save_load_round_trip_resnet50(tmp_path, x):
    m = build_model("transfer", 2, backbone="resnet50", mode="ft")
    m.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))


def test_registry_errors(tmp_path):
    with pytest.raises(MammoError, match="unknown model"):
        build_model("nope", 2)
    with pytest.raises(MammoError, match="unknown backbone"):
        build_model("transfer", 2, backbone="alexnet")
    with pytest.raises(MammoError, match="weights file not found"):
        build_model("transfer", 2, weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(MammoError, match="takes options"):
        build_model("scratch_v1", 2, backbone="vgg16")
    with pytest.raises(MammoError, match="at least 2"):
        build_model("scratch_v1", 1)
    assert set(REGISTRY) == {"scratch_v1", "scratch_v2", "transfer"}


def test_gradcam_layers_are_last_convs():
    assert gradcam_layer("scratch_v1") == "conv5"
    assert gradcam_layer("scratch_v2") == "conv6"
    assert gradcam_layer("transfer", backbone="vgg19") == "block5_conv4"


@pytest.mark.shared
def test_vgg16_local_weights_equal_keras_applications(vgg16_weights, x):
    from mammo_core.models.transfer import split_base_head

    m = build_model("transfer", 2, backbone="vgg16", weights=str(vgg16_weights))
    ref = keras.applications.VGG16(include_top=False, weights=str(vgg16_weights), input_shape=(150, 150, 3))
    base, _ = split_base_head(m)
    ours = base.predict(x, verbose=0)
    theirs = ref.predict(keras.applications.vgg16.preprocess_input(np.repeat(x * 255.0, 3, axis=-1)), verbose=0)
    assert np.abs(theirs).max() > 1.0  # real weights give non-trivial features
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)
    conv = keras.Model(m.inputs, m.get_layer("block5_conv3").output).predict(x, verbose=0)
    conv_ref = keras.Model(ref.inputs, ref.get_layer("block5_conv3").output).predict(
        keras.applications.vgg16.preprocess_input(np.repeat(x * 255.0, 3, axis=-1)), verbose=0)
    np.testing.assert_allclose(conv, conv_ref, rtol=1e-4, atol=1e-3)


def test_vgg16_block4_is_cut_after_block4_and_small():
    m = build_model("transfer", 3, backbone="vgg16_block4", mode="fe", weights="none", hidden=32)
    names = [layer.name for layer in m.layers]
    assert "block4_pool" in names and not any(n.startswith("block5") for n in names)
    assert m.get_layer("flatten").input.shape[1:] == (9, 9, 512)
    assert gradcam_layer("transfer", backbone="vgg16_block4") == "block4_conv3"
    assert m.count_params() == 7_635_264 + 9 * 9 * 512 * 32 + 32 + 32 * 3 + 3


@pytest.mark.shared
def test_vgg16_block4_local_weights_equal_keras_applications(vgg16_weights, x):
    import keras

    m = build_model("transfer", 3, backbone="vgg16_block4", weights=str(vgg16_weights), hidden=32)
    ref = keras.applications.VGG16(include_top=False, weights=str(vgg16_weights), input_shape=(150, 150, 3))
    ref4 = keras.Model(ref.input, ref.get_layer("block4_pool").output)
    ours = keras.Model(m.input, m.get_layer("block4_pool").output).predict(x, verbose=0)
    theirs = ref4.predict(keras.applications.vgg16.preprocess_input(np.repeat(x * 255.0, 3, axis=-1)), verbose=0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)
