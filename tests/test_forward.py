"""Models with identical leading layers share one forward pass (mammo_core/forward.py), and the
result is each model's own prediction: bundles built here with one frozen trunk and different
heads, as the bundled VGG16 members are."""
from __future__ import annotations

import numpy as np
import pytest
from bundle_factory import synthetic_patches

from mammo_core.inference import load_bundle, predict_arrays, shared_forward
from mammo_core.tta import predict_tta


def _trunk_weights(seed: int = 0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((150, 150, 1))
    x = layers.Concatenate(name="grey_to_rgb")([inp, inp, inp])
    x = layers.Conv2D(6, 5, strides=3, activation="relu", name="block1_conv1")(x)
    x = layers.MaxPooling2D(2, name="block1_pool")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="block2_conv1")(x)
    x = layers.MaxPooling2D(2, name="block2_pool")(x)
    return keras.Model(inp, x).get_weights()


def _member(trunk, pool: str, n_classes: int, seed: int, name: str):
    """A member: the trunk (weights ``trunk``), pooled from ``pool`` (1 or 2 blocks), a
    Dense softmax head of its own (random, seeded)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((150, 150, 1), name="patch")
    x = layers.Concatenate(name="grey_to_rgb")([inp, inp, inp])
    x = layers.Conv2D(6, 5, strides=3, activation="relu", name="block1_conv1")(x)
    b1 = layers.MaxPooling2D(2, name="block1_pool")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="block2_conv1")(b1)
    b2 = layers.MaxPooling2D(2, name="block2_pool")(x)
    feats = [layers.GlobalAveragePooling2D(name="gap_block2")(b2)]
    if pool == "both":
        feats.insert(0, layers.GlobalMaxPooling2D(name="gmp_block1")(b1))
        feats = [layers.Concatenate(name="pooled")(feats)]
    out = layers.Dense(n_classes, activation="softmax", name="predictions")(feats[0])
    model = keras.Model(inp, out, name=name)
    trunk_layers = [model.get_layer(n) for n in ("block1_conv1", "block2_conv1")]
    trunk_layers[0].set_weights(trunk[0:2])
    trunk_layers[1].set_weights(trunk[2:4])
    return model


def _bundle(model, out, task, classes, tta="none"):
    from mammo_core.bundle import write_bundle

    write_bundle(model, out, {"name": out.name, "task": task, "classes": list(classes),
                              "inference": {"tta": tta}, "gradcam_layer": None})
    return load_bundle(out)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    trunk = _trunk_weights()
    a = _bundle(_member(trunk, "both", 3, 1, "a"), root / "a", "baseline_mass_calc",
                ("baseline", "mass", "calcification"), tta="dihedral8")
    b = _bundle(_member(trunk, "both", 2, 2, "b"), root / "b", "mass_calc", ("mass", "calcification"))
    c = _bundle(_member(trunk, "one", 2, 3, "c"), root / "c", "benign_malignant",
                ("benign", "malignant"), tta="dihedral8")
    other = _trunk_weights(seed=5)          # same architecture, other trunk weights
    d = _bundle(_member(other, "both", 2, 2, "d"), root / "d", "mass_calc", ("mass", "calcification"))
    return a, b, c, d


@pytest.fixture(scope="module")
def x():
    imgs, _ = synthetic_patches(19, seed=11)
    return imgs.astype(np.float32)[..., None] / 65535.0


def _alone(m, x, tta):
    """The model's own Keras forward pass (no sharing), with the TTA given."""
    return predict_tta(lambda v: m.model.predict(v, batch_size=64, verbose=0), x, tta)


def test_identical_trunks_are_computed_once(members):
    a, b, c, d = members
    fwd = shared_forward([a, b, c])
    # layers per model: concat, conv, pool, conv, pool, pooling(s), [concat], dense
    # b shares all of a's but the Dense head (pooling included), c the trunk and block 2's
    # average pooling
    assert fwd.layer_calls == 9 + 9 + 7
    assert fwd.shared_calls == 8 + 6
    # other trunk weights: nothing is shared beyond the weight-free first layer
    assert shared_forward([b, d]).shared_calls == 1


def test_shared_pass_gives_each_models_own_prediction(members, x):
    a, b, c, d = members
    for group in ([a, b, c], [a, b, c, d], [d, b], [c]):
        out = predict_arrays(group, x, batch_size=8, tta="none")
        for m in group:
            np.testing.assert_allclose(out[m.name], _alone(m, x, "none"), rtol=0, atol=1e-6,
                                       err_msg=f"{m.name} in {[g.name for g in group]}")


def test_shared_pass_with_each_cards_tta(members, x):
    """a and c ask for the 8 dihedral views, b for one: views 1-7 run a and c only."""
    a, b, c, d = members
    out = predict_arrays([a, b, c, d], x, batch_size=7)
    for m in (a, b, c, d):
        np.testing.assert_allclose(out[m.name], _alone(m, x, m.tta), rtol=0, atol=1e-6)
    assert not np.allclose(out[a.name], _alone(a, x, "none"), atol=1e-6)  # the views matter
    assert shared_forward([a, c]).shared_calls == 6
    # LoadedModel.__call__ takes the same path
    np.testing.assert_allclose(c(x), out[c.name], rtol=0, atol=1e-7)


def test_a_changed_head_or_trunk_weight_is_not_shared(members, x, tmp_path):
    """A member whose weights differ in one value is computed on its own from that layer on."""
    import keras

    b = members[1]

    m = keras.models.clone_model(b.model)
    m.set_weights(b.model.get_weights())
    w = m.get_layer("block2_conv1").get_weights()
    w[1] = w[1].copy()
    w[1][0] += 0.5
    m.get_layer("block2_conv1").set_weights(w)
    e = _bundle(m, tmp_path / "e", "mass_calc", ("mass", "calcification"))
    # concat, block 1 conv + pool and the max pooling of block 1: all before the change
    assert shared_forward([b, e]).shared_calls == 4
    out = predict_arrays([b, e], x, batch_size=19, tta="none")
    np.testing.assert_allclose(out[e.name], _alone(e, x, "none"), rtol=0, atol=1e-6)
    assert not np.allclose(out[e.name], out[b.name], atol=1e-4)


def test_sharing_switched_off_gives_the_same_probabilities(members, x, monkeypatch):
    """``forward.SHARE_LAYERS = False`` (the benchmark's baseline): every model on its own."""
    from mammo_core import forward

    group = list(members)
    shared = predict_arrays(group, x, batch_size=8)
    monkeypatch.setattr(forward, "SHARE_LAYERS", False)
    assert shared_forward(group).shared_calls == 0
    alone = predict_arrays(group, x, batch_size=8)
    for m in group:
        np.testing.assert_allclose(shared[m.name], alone[m.name], rtol=0, atol=1e-6)


def test_a_keras_without_the_graph_internals_still_predicts(members, x, monkeypatch):
    """The graph walk reads Keras 3 internals (``_nodes_by_depth``, ``node.arguments``); a
    Keras release without them must not stop predictions: every model then runs alone, with
    the same probabilities."""
    from mammo_core import forward

    group = list(members)
    shared = predict_arrays(group, x, batch_size=8, tta="none")  # view 0, as fwd(x) gives

    def broken(self, *a):
        raise AttributeError("'Functional' object has no attribute '_nodes_by_depth'")

    monkeypatch.setattr(forward.SharedForward, "_walk", broken)
    fwd = forward.SharedForward([m.model for m in group])
    assert fwd.plain and fwd.shared_calls == 0
    out = fwd(x[:8])
    for m, o in zip(group, out):
        np.testing.assert_allclose(o, shared[m.name][:8], rtol=0, atol=1e-6)


def test_session_predict_and_map_share_the_trunk_and_match_each_member(members, x, tmp_path):
    """Through the Session (the viewer's and ``mammo predict`` / ``mammo scan``'s path): the
    per-model probabilities are each member's own, and P(abnormal) of the map pass (every
    P(baseline) member, the cards' TTA) is the ensemble's 1 - P(baseline) from ``predict``."""
    import shutil

    from bundle_factory import tiny_ensemble

    from mammo_core.bundle import write_manifest
    from mammo_core.io import Patch
    from mammo_core.session import Session

    a, b, c, _d = members
    root = tmp_path / "models"
    dirs = [shutil.copytree(m.info.path, root / m.info.path.name) for m in (a, b, c)]
    tiny_ensemble(dirs, root / "ensemble")
    write_manifest(root)
    s = Session(root)
    assert s.load() == []
    loaded = [s._state.models[m.name] for m in (a, b, c)]
    assert shared_forward(loaded).shared_calls == 14
    pixels = np.rint(x[..., 0] * 65535).astype(np.uint16)
    preds = s.predict([Patch(p, f"p{i}.png", None) for i, p in enumerate(pixels)], batch_size=8)
    for m in (a, b, c):
        own = _alone(m, pixels.astype(np.float32)[..., None] / 65535.0, m.tta)
        got = np.array([[p.per_model[m.name].probabilities[k] for k in m.classes] for p in preds])
        np.testing.assert_allclose(got, own, rtol=0, atol=1e-6, err_msg=m.name)
    p_ab = s.p_abnormal(pixels, batch_size=8)
    np.testing.assert_allclose(p_ab, [1 - p.ensemble.probabilities["baseline"] for p in preds],
                               rtol=0, atol=1e-9)
