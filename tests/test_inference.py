"""Bundles are verified before loading; batched prediction matches Keras; `mammo models`."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from bundle_factory import models_dir_with, synthetic_patches, tiny_bundle

from mammo_core.bundle import read_card, write_card, write_manifest
from mammo_core.card import parse_card
from mammo_core.cli import main
from mammo_core.errors import BundleError, MammoError
from mammo_core.inference import check_bundle, find_bundle, load_bundle, predict_arrays


@pytest.fixture(scope="module")
def x():
    imgs, _ = synthetic_patches(37, seed=3)
    return imgs.astype(np.float32)[..., None] / 65535.0


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_modified_model_file_is_refused(tmp_path):
    b = shutil.copytree(tiny_bundle("mass_calc"), tmp_path / "b")
    _tamper(b / "model.keras")
    with pytest.raises(BundleError, match="sha256 mismatch") as err:
        load_bundle(b)
    assert "model.keras" in str(err.value) and "\n" not in str(err.value)


def test_missing_model_file_is_refused(tmp_path):
    b = shutil.copytree(tiny_bundle("mass_calc"), tmp_path / "b")
    (b / "model.keras").unlink()
    with pytest.raises(BundleError, match="missing file model.keras"):
        load_bundle(b)


def test_bundle_in_models_dir_must_match_the_manifest(tmp_path):
    root = models_dir_with(tmp_path / "models", ["mass_calc"], ensemble=False)
    b = next(p for p in root.iterdir() if p.is_dir())
    check_bundle(b, root)  # clean
    from mammo_core.bundle import sha256_file

    def swap_model(src):  # another model.keras, the card's hashes made consistent with it
        shutil.copy(src / "model.keras", b / "model.keras")
        card = read_card(b).card.to_dict()
        card["files"] = {"model.keras": sha256_file(b / "model.keras")}
        card["sha256"] = card["files"]["model.keras"]
        write_card(b, parse_card(card))

    # re-saved model (same task) with a consistent card, but the manifest still has the old hash
    swap_model(tiny_bundle("mass_calc", seed=1))
    with pytest.raises(BundleError, match="MANIFEST"):
        check_bundle(b, root)
    # the same folder given as a path elsewhere is checked against its card only
    elsewhere = shutil.copytree(b, tmp_path / "elsewhere" / b.name)
    assert check_bundle(elsewhere, root).name == read_card(b).name
    # ... and the model's own binding: a model trained for benign_malignant under this
    # mass_calc card is refused, manifest or not
    swap_model(tiny_bundle("benign_malignant"))
    for folder in (b, shutil.copytree(b, tmp_path / "elsewhere2" / b.name)):
        with pytest.raises(BundleError, match="trained for 'benign_malignant'"):
            check_bundle(folder, root)


def test_predict_arrays_matches_keras_and_is_batch_size_invariant(x):
    m = load_bundle(tiny_bundle("baseline_mass_calc"))
    ref = m.model.predict(x, batch_size=64, verbose=0)
    for bs in (1, 8, 37, 100):
        out = predict_arrays([m], x, batch_size=bs)[m.name]
        assert out.shape == (37, 3)
        np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)


def test_predict_arrays_several_models_progress_and_cancel(x):
    ms = [load_bundle(tiny_bundle(t)) for t in ("mass_calc", "five_class")]
    seen = []
    out = predict_arrays(ms, x, batch_size=10, progress=lambda d, t: seen.append((d, t)))
    assert {k: v.shape for k, v in out.items()} == {ms[0].name: (37, 2), ms[1].name: (37, 5)}
    assert seen == [(10, 37), (20, 37), (30, 37), (37, 37)]
    calls = []
    part = predict_arrays(ms, x, batch_size=10, cancel=lambda: len(calls) >= 2 or calls.append(1))
    assert all(v.shape[0] == 20 for v in part.values())
    with pytest.raises(MammoError, match="150, 150, 1"):
        predict_arrays(ms, x[:, :100], batch_size=4)


def test_find_bundle_by_name_or_path(tmp_path):
    root = models_dir_with(tmp_path / "models", ["mass_calc"], ensemble=False)
    name = read_card(next(p for p in root.iterdir() if p.is_dir())).name
    assert find_bundle(name, root).is_dir()
    assert find_bundle(tiny_bundle("five_class"), root) == tiny_bundle("five_class")
    with pytest.raises(BundleError, match=f"bundled: {name}"):
        find_bundle("no_such_model", root)


def test_models_list_and_verify(tmp_path, capsys):
    root = models_dir_with(tmp_path / "models", ["mass_calc", "benign_malignant"], ensemble=True)
    assert main(["models", "list", "--models-dir", str(root), "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {b["kind"] for b in listed["bundles"]} == {"model", "ensemble"}
    assert len(listed["bundles"]) == 3
    assert main(["models", "verify", "--models-dir", str(root), "--no-spread"]) == 0
    capsys.readouterr()
    victim = next(p for p in root.iterdir() if p.name.startswith("tiny_benign"))
    _tamper(victim / "model.keras")
    assert main(["models", "verify", "--models-dir", str(root), "--no-spread"]) == 1
    err = capsys.readouterr().err
    assert "tiny_benign_malignant_0" in err and "model.keras" in err and "sha256 mismatch" in err


def test_models_verify_reports_missing_manifest(tmp_path, capsys):
    root = models_dir_with(tmp_path / "models", ["mass_calc"], ensemble=False)
    (root / "MANIFEST.json").unlink()
    assert main(["models", "verify", "--models-dir", str(root), "--no-spread"]) == 1
    assert "MANIFEST.json" in capsys.readouterr().err
    write_manifest(root)
    assert main(["models", "verify", "--models-dir", str(root), "--no-spread"]) == 0


@pytest.fixture()
def wrong_outputs(tmp_path):
    """A models folder with one mass_calc bundle (2 classes) whose model has 3 outputs; its
    manifest written by hand (`mammo models manifest` refuses the bundle)."""
    from bundle_factory import GRADCAM_LAYER, build_tiny_model

    from mammo_core.bundle import MANIFEST_SCHEMA, write_bundle

    root = tmp_path / "models"
    info = write_bundle(build_tiny_model(3), root / "wrong", {
        "name": "wrong_outputs", "task": "mass_calc", "classes": ["mass", "calcification"],
        "gradcam_layer": GRADCAM_LAYER})
    (root / "MANIFEST.json").write_text(json.dumps({"schema": MANIFEST_SCHEMA, "bundles": {info.name: {
        "path": "wrong", "kind": "model", "task": info.task, "version": info.version,
        "files": dict(info.card.to_dict()["files"]), "card": info.card_sha256}}}))
    return root


def _one_line_naming_the_card(text, root):
    lines = [ln for ln in text.strip().splitlines() if "3 outputs" in ln]
    assert lines and "Traceback" not in text, text
    assert all(str(root / "wrong" / "card.json") in ln and "'wrong_outputs'" in ln
               and "the card lists 2 classes (mass, calcification)" in ln for ln in lines), lines


def test_card_classes_not_matching_the_outputs_are_caught_at_verify_and_load(wrong_outputs, tmp_path, capsys):
    """Caught from model.keras's config.json, without TensorFlow: `models verify --no-spread`,
    `models manifest`, loading and `mammo predict` all stop on one line naming the card."""
    from mammo_core.bundle import check_keras_archive, keras_output_units, verify_bundle

    root = wrong_outputs
    assert keras_output_units(check_keras_archive(root / "wrong" / "model.keras")) == 3
    with pytest.raises(BundleError) as err:
        verify_bundle(root / "wrong", json.loads((root / "MANIFEST.json").read_text()))
    _one_line_naming_the_card(str(err.value), root)
    with pytest.raises(BundleError) as err:
        load_bundle(root / "wrong", root)
    _one_line_naming_the_card(str(err.value), root)
    assert main(["models", "verify", "--models-dir", str(root), "--no-spread"]) == 1
    _one_line_naming_the_card(capsys.readouterr().err, root)
    assert main(["models", "manifest", "--models-dir", str(root)]) == 1
    _one_line_naming_the_card(capsys.readouterr().err, root)
    import cv2

    imgs, _ = synthetic_patches(1, seed=5)
    assert cv2.imwrite(str(tmp_path / "p.png"), imgs[0])
    assert main(["predict", str(tmp_path / "p.png"), "--models-dir", str(root), "--model", "wrong_outputs",
                 "--no-progress"]) == 1
    _one_line_naming_the_card(capsys.readouterr().err, root)


def test_keras_output_units_reads_simple_configs_only():
    from mammo_core.bundle import keras_output_units

    dense = {"class_name": "Dense", "name": "probs", "config": {"name": "probs", "units": 5}}
    act = {"class_name": "Activation", "name": "act", "config": {"name": "act"}}
    assert keras_output_units({"class_name": "Functional", "config": {
        "layers": [act, dense], "output_layers": ["probs", 0, 0]}}) == 5
    assert keras_output_units({"class_name": "Functional", "config": {
        "layers": [act, dense], "output_layers": [["probs", 0, 0]]}}) == 5
    assert keras_output_units({"class_name": "Sequential", "config": {"layers": [act, dense]}}) == 5
    for unclear in ({}, [], {"config": {"layers": [dense, act], "output_layers": ["act", 0, 0]}},
                    {"config": {"layers": [dense], "output_layers": [["probs", 0, 0], ["probs", 0, 0]]}},
                    {"config": {"layers": [dense], "output_layers": ["nowhere", 0, 0]}},
                    {"class_name": "Sequential", "config": {"layers": [
                        {"config": {"units": True}}]}}):
        assert keras_output_units(unclear) is None
