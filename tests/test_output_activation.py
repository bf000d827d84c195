"""The sigmoid output arm (issue 25, D7): two sigmoid units for a two-class task (the study's
parameter counts), trained with binary cross-entropy, saved as a bundle whose outputs are the
sigmoids normalised to sum 1, so that inference, the ensemble, `mammo predict` and the cards
read it in the one contract. Refused (exit 2) where it does not apply. Research use only - not
a medical device."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_training_scripts import _config, load_script
from training_data import make_cbis_folder

from mammo_core.errors import MammoError
from mammo_core.training.config import parse_grid


def _logits_and_probs(model, x):
    from mammo_core.models.output import training_view

    view, _ = training_view(model)
    z = view.predict(x, verbose=0).astype(np.float64)
    return z, np.asarray(model.predict(x, verbose=0), dtype=np.float64)


def _normalised_sigmoids(z):
    s = 1.0 / (1.0 + np.exp(-z))
    return s / s.sum(axis=1, keepdims=True)


def test_two_sigmoid_units_normalised_and_trained_with_binary_cross_entropy(tmp_path):
    import keras

    from mammo_core.models import build_model
    from mammo_core.models.output import sparse_binary_cross_entropy, training_view

    m = build_model("scratch_v1", 2, output_activation="sigmoid")
    x = np.random.default_rng(3).random((6, 150, 150, 1)).astype(np.float32)
    z, p = _logits_and_probs(m, x)
    assert z.shape == (6, 2)
    np.testing.assert_allclose(p, _normalised_sigmoids(z), atol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    # the training loss: Keras's binary cross-entropy of the sigmoid outputs on one-hot labels
    y = np.array([0, 1, 1, 0, 1, 0])
    s = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    want = keras.losses.BinaryCrossentropy(reduction=None)(np.eye(2, dtype=np.float32)[y], s)
    got = sparse_binary_cross_entropy(y.astype(np.float32), z.astype(np.float32))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4)
    # the study's output layer: two units, the same parameter count as the softmax (343,842)
    assert m.count_params() == build_model("scratch_v1", 2).count_params() == 343_842
    view, loss = training_view(m)
    assert loss is sparse_binary_cross_entropy and view.layers[-1].name == "sigmoid_logits"
    assert training_view(build_model("scratch_v1", 2))[0].layers[-1].name == "predictions"
    f = tmp_path / "m.keras"
    m.save(f)
    again = keras.saving.load_model(f, safe_mode=True, compile=False)
    np.testing.assert_allclose(again.predict(x, verbose=0), p, atol=1e-7)


def test_a_sigmoid_transfer_model_trains_its_head_view_on_cached_features():
    from mammo_core.models import build_model
    from mammo_core.models.output import training_view
    from mammo_core.models.transfer import split_base_head

    m = build_model("transfer", 2, backbone="vgg16_block4", output_activation="sigmoid")
    fe = build_model("transfer", 2, backbone="vgg16_block4")
    assert sum(int(np.prod(w.shape)) for w in m.trainable_weights) == sum(
        int(np.prod(w.shape)) for w in fe.trainable_weights)
    base, head = split_base_head(m)
    view, _ = training_view(head)  # the head's own logits, though the layers are also in m
    f = np.random.default_rng(1).random((3, *base.output_shape[1:])).astype(np.float32)
    z = view.predict(f, verbose=0).astype(np.float64)
    np.testing.assert_allclose(head.predict(f, verbose=0), _normalised_sigmoids(z), atol=1e-6)
    assert training_view(m)[0].output_shape == (None, 2)


def test_sigmoid_is_refused_where_it_does_not_fit():
    from mammo_core.models import build_model

    with pytest.raises(MammoError, match="two classes"):
        build_model("scratch_v1", 3, output_activation="sigmoid")
    with pytest.raises(MammoError, match="pooled head"):
        build_model("transfer", 2, head="pooled", output_activation="sigmoid")
    with pytest.raises(MammoError, match="output activation must be"):
        build_model("scratch_v2", 2, output_activation="tanh")
    with pytest.raises(MammoError, match="output_activation values"):
        parse_grid(["output_activation=softmax,relu"])


@pytest.mark.parametrize("script, argv, words", [
    ("task_4_baseline_mass_calc", ["--output-activation", "sigmoid"], "this task has 3"),
    ("task_2_1_scratch_mass_calc", ["--output-activation", "tanh"], "invalid choice"),
    ("task_4_baseline_mass_calc", ["--grid", "output_activation=softmax,sigmoid"], "this task has 3"),
    ("task_3_1_pretrained_mass_calc", ["--head", "pooled", "--folds", "3", "--output-activation", "sigmoid"],
     "--output-activation not used by --head pooled"),
])
def test_the_flag_is_refused_exit_2_before_any_work(script, argv, words, tmp_path, capsys):
    try:
        rc = load_script(script).main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_presets_tag_the_output_activation():
    c = _config("task_2_1_scratch_mass_calc", [])
    assert c.model_options["output_activation"] == "softmax" and c.settings["output_activation"]["source"] == "study"
    assert "--output-activation sigmoid" in c.settings["output_activation"]["reason"]
    c = _config("task_2_1_scratch_mass_calc", ["--output-activation", "sigmoid"])
    assert c.model_options["output_activation"] == "sigmoid" and c.settings["output_activation"]["source"] == "flag"
    for script in ("task_3_1_pretrained_mass_calc", "task_3_2_pretrained_benign_malignant"):
        c = _config(script, [])  # the study's transfer models ended in a sigmoid
        s = c.settings["output_activation"]
        assert (c.model_options["output_activation"], s["value"], s["source"]) == ("sigmoid", "sigmoid",
                                                                                 "literal reading")
        assert _config(script, ["--output-activation", "softmax"]).model_options["output_activation"] == "softmax"
    c = _config("task_4_baseline_mass_calc", ["--model", "transfer"])  # three classes: softmax
    assert c.model_options["output_activation"] == "softmax"
    assert c.settings["output_activation"]["source"] == "project choice"
    pooled = _config("task_3_1_pretrained_mass_calc", ["--head", "pooled", "--folds", "3"])
    assert "output_activation" not in pooled.model_options
    assert parse_grid(["output_activation=softmax,sigmoid"]) == (("output_activation", ("softmax", "sigmoid")),)
    assert _config("task_2_1_scratch_mass_calc", []).with_(output_activation="sigmoid").model_options[
        "output_activation"] == "sigmoid"


@pytest.fixture(scope="module")
def sigmoid_bundle(tmp_path_factory):
    """A tiny Task 2.1 model with the sigmoid output, trained by the script (smoke)."""
    root = tmp_path_factory.mktemp("sig")
    data = make_cbis_folder(root / "d", n_train_pairs=8, n_test_pairs=4, patients=True)
    out = root / "t21_sigmoid"
    rc = load_script("task_2_1_scratch_mass_calc").main(
        ["--data", str(data), "--out", str(out), "--smoke", "--output-activation", "sigmoid",
         "--name", "t21_sigmoid"])
    assert rc == 0
    return out


def test_a_sigmoid_bundle_is_read_in_the_one_contract(sigmoid_bundle):
    from bundle_factory import synthetic_patches

    from mammo_core.inference import load_bundle, predict_arrays

    card = json.loads((sigmoid_bundle / "card.json").read_text())
    assert card["architecture"]["options"]["output_activation"] == "sigmoid"
    out = card["training"]["protocol"]["output"]
    assert out["activation"] == "sigmoid" and out["units"] == 2 and "binary cross-entropy" in out["loss"]
    assert card["training"]["protocol"]["preset"]["settings"]["output_activation"]["source"] == "flag"
    lm = load_bundle(sigmoid_bundle)
    assert lm.classes == ("mass", "calcification")
    imgs, _ = synthetic_patches(5, seed=9)
    x = (imgs.astype(np.float32) / 65535.0)[..., None]
    p = predict_arrays([lm], x)[lm.name]
    z, direct = _logits_and_probs(lm.model, x)
    assert p.shape == (5, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p, _normalised_sigmoids(z), atol=1e-5)
    np.testing.assert_allclose(p, direct, atol=1e-5)


@pytest.mark.slow
def test_mammo_predict_and_the_ensemble_take_a_sigmoid_member(sigmoid_bundle, tmp_path, capsys):
    import cv2
    from bundle_factory import synthetic_patches, tiny_bundle

    from mammo_core.cli import main
    from mammo_core.ensemble_fit import EnsembleFitConfig, fit_and_evaluate

    imgs, labels = synthetic_patches(3, seed=5)
    png = tmp_path / "p.png"
    assert cv2.imwrite(str(png), imgs[0])
    rc = main(["predict", str(png), "--model", str(sigmoid_bundle), "--gradcam", "--gradcam-dir",
               str(tmp_path / "maps"), "--format", "json", "--no-progress"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    (pred,) = doc["predictions"]
    assert set(pred["probabilities"]) == {"mass", "calcification"}
    assert abs(sum(pred["probabilities"].values()) - 1) < 1e-5
    hm = np.load(pred["heatmap"], allow_pickle=False)
    assert hm.shape == (150, 150) and np.isfinite(hm).all()
    # the ensemble: a sigmoid member next to a softmax one
    data = tmp_path / "data"
    data.mkdir()
    for split, n, seed in (("train", 60, 71), ("public_test", 30, 72)):
        imgs, labels = synthetic_patches(n, seed=seed)
        np.save(data / f"{split}_tensor.npy", imgs)
        np.save(data / f"{split}_labels.npy", labels)
    cfg = EnsembleFitConfig(members=[sigmoid_bundle, tiny_bundle("baseline_mass_calc")], data=data,
                            out=tmp_path / "ens", name="ens_sig", smoke=True)
    res = fit_and_evaluate(cfg, log=lambda m: None)
    rows = {r["model"]: r for r in res.metrics["table"]}
    assert set(rows) == {"t21_sigmoid", "tiny_baseline_mass_calc_0", "ens_sig"}
    assert rows["ens_sig"]["n"] == 30 and 0.0 <= rows["ens_sig"]["accuracy"] <= 1.0
