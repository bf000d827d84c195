"""The pooled head's feature squash (``--feature-squash K``: each pooled feature f -> f / (f + d),
d = K x its median over the fitting rows, before the standardisation; issue 24 item 3).
Research use only — not a medical device."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_core.errors import MammoError


def test_squash_scaler_is_softsign_of_f_over_k_median_then_standardisation():
    from mammo_core.training.pooled import SquashScaler

    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 1.5, (200, 5))
    X[:, 4] = 0.0  # a dead feature: its divisor is floored, not zero
    sc = SquashScaler(4.0).fit(X)
    d = 4.0 * np.median(X, axis=0)
    np.testing.assert_allclose(sc.divisor_[:4], d[:4])
    assert sc.divisor_[4] > 0
    z = X[:, :4] / (X[:, :4] + d[:4])
    np.testing.assert_allclose(sc.squash(X)[:, :4], z)
    np.testing.assert_allclose(sc.transform(X)[:, :4], (z - z.mean(0)) / z.std(0), atol=1e-9)
    big = sc.squash(X * 1e6)[:, :4]  # bounded: a huge activation cannot dominate the head
    assert big.max() < 1.0
    with pytest.raises(MammoError, match="feature squash"):
        SquashScaler(0.0)


def test_squashed_pooled_model_equals_sklearn_and_reloads_safely(tmp_path):
    import keras
    from sklearn.linear_model import LogisticRegression

    from mammo_core.models import build_model
    from mammo_core.training.pooled import SquashScaler

    keras.utils.set_random_seed(0)
    opts = {"backbone": "vgg16_block4", "head": "pooled", "pool_layers": "block2_pool", "pooling": "avgmax"}
    plain = build_model("transfer", 3, **opts)
    feats = keras.Model(plain.inputs, plain.get_layer("pooled_features").output)
    x = np.random.default_rng(1).random((12, 150, 150, 1)).astype("float32")
    f = np.asarray(feats.predict(x, verbose=0), np.float64)
    y = np.arange(12) % 3
    sc = SquashScaler(4.0).fit(f)
    lr = LogisticRegression(C=0.5, max_iter=1000).fit(sc.transform(f), y)
    m = build_model("transfer", 3, **opts, squash_divisor=sc.divisor_)
    m.set_weights(plain.get_weights()[:len(m.get_weights())])  # same backbone weights; head folded below
    from mammo_core.models.transfer import fold_linear_head

    fold_linear_head(m, sc.mean_, sc.scale_, lr.coef_, lr.intercept_)
    assert [layer.name for layer in m.layers][-3:] == ["feature_scale", "feature_squash", "predictions"]
    assert not any(type(layer).__name__ == "Lambda" for layer in m.layers)
    p = m.predict(x, verbose=0)
    np.testing.assert_allclose(p, lr.predict_proba(sc.transform(f)), atol=1e-4)
    m.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), p, atol=1e-6)


def test_squash_divisor_is_checked():
    from mammo_core.models import build_model

    opts = {"backbone": "vgg16_block4", "head": "pooled", "pool_layers": "block2_pool", "pooling": "avg"}
    with pytest.raises(MammoError, match="128 positive numbers"):
        build_model("transfer", 2, **opts, squash_divisor=np.ones(5))
    with pytest.raises(MammoError, match="128 positive numbers"):
        build_model("transfer", 2, **opts, squash_divisor=np.r_[np.ones(127), 0.0])
    with pytest.raises(MammoError, match="pooled head"):
        build_model("transfer", 2, backbone="vgg16_block4", squash_divisor=np.ones(5))
    from mammo_core.training.config import TrainConfig

    with pytest.raises(MammoError, match="feature_squash"):
        TrainConfig("mass_calc", "transfer", ".", ".", feature_squash=-1.0)


def test_pooled_training_with_feature_squash_records_it_and_ships_the_squash(tmp_path):
    from training_data import make_cbis_folder, random_vgg16_weights

    from mammo_core.bundle import read_card
    from mammo_core.inference import load_bundle
    from mammo_core.training.config import TrainConfig
    from mammo_core.training.runner import train
    from mammo_core.training.shift_eval import _member

    data = make_cbis_folder(tmp_path / "d", n_train_pairs=16, n_test_pairs=4, patients=True)
    w = random_vgg16_weights(tmp_path / "vgg16.weights.h5")
    out = tmp_path / "m"
    train(TrainConfig("baseline_mass_calc", "transfer", data, out, name="sq", folds=2, n_boot=50,
                      model_options={"backbone": "vgg16_block4", "weights": str(w), "head": "pooled"},
                      pool_candidates=("block2_pool:avgmax",), c_grid=(1.0,), tta="none", train_views=2,
                      feature_squash=4.0, feature_cache=str(tmp_path / "cache"), allow_collapsed=True))
    card = read_card(out).card.to_dict()
    rec = card["training"]["protocol"]["feature_squash"]
    assert rec["kind"] == "softsign" and rec["k"] == 4.0
    assert "feature squash" in card["architecture"]["head"]
    model = load_bundle(out).model  # training already checked Keras == scikit-learn (1e-3)
    assert model.get_layer("feature_squash").get_config()["activation"] == "softsign"

    class Spec:
        name, task, subset = "sq", "baseline_mass_calc", None

    assert _member(out, Spec).squash == 4.0  # the shift bench refits the member with its squash
