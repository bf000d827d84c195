"""Every study variant is expressible from the command line (issue 25 item 2: D1, D4, D6, D7)
and each preset value carries where it comes from. Research use only - not a medical device."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_training_scripts import _config, load_script
from training_data import make_cbis_folder

from mammo_core.errors import MammoError
from mammo_core.training.augment import AUGMENT_SPECS, draw_params, element_uniforms, get_spec, with_overrides
from mammo_core.training.config import parse_grid


def test_both_readings_of_section_5_2_with_the_default_stated():
    c = _config("task_2_2_scratch_benign_malignant", [])
    assert c.augmentation == "geometric_rot90_reflect"
    s = c.settings["augment"]
    assert s["source"] == "literal reading" and "rotate90_reflect" in s["reason"] and "kept" in s["reason"]
    kept, named = get_spec("geometric_rot90_reflect"), get_spec("rotate90_reflect")
    assert (kept.rotation_range, kept.fill_mode, kept.horizontal_flip) == (90.0, "reflect", False)
    assert (kept.width_shift_range, kept.height_shift_range, kept.zoom_range, kept.shear_range) == (0.2,) * 4
    assert (named.width_shift_range, named.zoom_range, named.shear_range) == (0.0, 0.0, 0.0)
    p = draw_params(kept, element_uniforms(0, 0, np.arange(64)), (150, 150))
    assert np.abs(p["tx"]).max() > 10 and np.ptp(p["zx"]) > 0.2  # shifts and zoom are drawn
    assert _config("task_2_2_scratch_benign_malignant", ["--augment", "rotate90_reflect"]).augmentation \
        == "rotate90_reflect"
    assert _config("task_3_2_pretrained_benign_malignant", []).augmentation == "geometric_rot90_reflect"


def test_every_image_data_generator_argument_via_augment_spec():
    c = _config("task_2_1_scratch_mass_calc",
                ["--augment-spec", json.dumps({"width_shift_range": 0.1, "fill_mode": "reflect",
                                               "vertical_flip": True, "cval": 0.5})])
    spec = c.augmentation_spec
    assert (spec.width_shift_range, spec.fill_mode, spec.vertical_flip, spec.cval) == (0.1, "reflect", True, 0.5)
    assert spec.rotation_range == 40.0 and spec.name == "geometric+custom"
    assert "width_shift_range=0.1" in spec.description and "ImageDataGenerator(" in spec.description
    assert with_overrides(AUGMENT_SPECS["geometric"], {}) is AUGMENT_SPECS["geometric"]
    for bad, words in (({"colour": 1}, "unknown argument"), ({"zoom_range": 5}, "zoom_range"),
                       ({"horizontal_flip": 1}, "true or false"), ({"fill_mode": "wrap"}, "fill_mode"),
                       ({"rotation_range": float("nan")}, "rotation_range")):
        with pytest.raises(MammoError, match=words):
            with_overrides(AUGMENT_SPECS["none"], bad)


@pytest.mark.parametrize("argv, words", [
    (["--augment-spec", "{not json"], "not JSON"),
    (["--augment-spec", "[1, 2]"], "JSON object"),
    (["--augment-spec", '{"colour": 1}'], "unknown argument"),
    (["--optimizer", "adagrad"], "invalid choice"),
    (["--grid", "optimizer=adam,adagrad"], "optimizer values"),
])
def test_variant_flags_refuse_bad_values_exit_2(argv, words, tmp_path, capsys):
    try:
        rc = load_script("task_2_1_scratch_mass_calc").main(["--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                                             *argv])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_preset_tags_batch_25_without_augmentation_and_vgg19_for_task_3_1():
    c = _config("task_2_1_scratch_mass_calc", [])
    for k in ("batch_size", "epochs", "patience", "optimizer"):
        assert c.settings[k]["source"] == "study", k
    c = _config("task_2_1_scratch_mass_calc", ["--no-augment"])
    assert (c.batch_size, c.augmentation) == (25, "none") and c.settings["batch_size"]["source"] == "study"
    assert _config("task_2_1_scratch_mass_calc", ["--no-augment", "--batch-size", "50"]).batch_size == 50
    c = _config("task_3_1_pretrained_mass_calc", ["--backbone", "vgg19"])
    assert (c.batch_size, c.epochs) == (32, 65) and c.settings["epochs"]["source"] == "study"
    c = _config("task_3_1_pretrained_mass_calc", [])
    assert (c.batch_size, c.epochs) == (50, 100)
    assert c.settings["optimizer"]["source"] == "project choice"  # the study does not name Task 3's
    assert c.settings["augment"]["source"] == "project choice"
    assert c.settings["preprocessing"]["value"] == "caffe" and "x255" in c.settings["preprocessing"]["reason"]
    assert "preprocessing" not in _config("task_2_1_scratch_mass_calc", []).settings


def test_optimizer_and_dropout_variants():
    from mammo_core.models import build_model

    c = _config("task_2_1_scratch_mass_calc", ["--dropout", "0.5", "--hidden", "256", "--optimizer", "rmsprop"])
    assert c.optimizer == "rmsprop"
    assert c.model_options == {"hidden": 256, "dropout": 0.5, "output_activation": "softmax"}
    assert c.settings["optimizer"]["source"] == "flag"
    m = build_model("scratch_v1", 2, hidden=256, dropout=0.5)
    assert m.get_layer("dropout").rate == 0.5
    assert build_model("scratch_v1", 2).count_params() == 343_842  # Fig. 2 unchanged, no dropout layer
    assert "dropout" not in [layer.name for layer in build_model("scratch_v1", 2).layers]
    assert parse_grid(["optimizer=adam,rmsprop"]) == (("optimizer", ("adam", "rmsprop")),)


def test_a_smoke_run_records_the_variant_in_its_card(tmp_path):
    data = make_cbis_folder(tmp_path / "d", n_train_pairs=8, n_test_pairs=4, patients=True)
    out = tmp_path / "o"
    rc = load_script("task_2_1_scratch_mass_calc").main(
        ["--data", str(data), "--out", str(out), "--smoke", "--optimizer", "rmsprop", "--dropout", "0.3",
         "--augment-spec", '{"zoom_range": 0.1}'])
    assert rc == 0
    card = json.loads((out / "card.json").read_text())
    p = card["training"]["protocol"]
    assert p["optimizer"] == "RMSprop" and p["augmentation"] == "geometric+custom"
    assert "zoom_range=0.1" in p["augmentation_detail"]
    assert card["architecture"]["options"]["dropout"] == 0.3
