"""Every training script runs --smoke on a synthetic CBIS-layout folder and writes its bundle;
flags, help and bad input behave as documented."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from training_data import make_cbis_folder, random_vgg16_weights

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "training_scripts"
CASES = {
    "task_2_1_scratch_mass_calc": ("mass_calc", ["mass", "calcification"], [], "conv5"),
    "task_2_2_scratch_benign_malignant": ("benign_malignant", ["benign", "malignant"], [], "conv6"),
    "task_3_1_pretrained_mass_calc": ("mass_calc", ["mass", "calcification"],
                                      ["--weights", "none", "--mode", "ft"], "block5_conv3"),
    "task_3_2_pretrained_benign_malignant": ("benign_malignant", ["benign", "malignant"],
                                             ["--weights", "none"], "block5_conv3"),
    "task_4_baseline_mass_calc": ("baseline_mass_calc", ["baseline", "mass", "calcification"], [], "conv5"),
}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cbis(tmp_path_factory):
    return make_cbis_folder(tmp_path_factory.mktemp("cbis"), n_train_pairs=16, n_test_pairs=8, patients=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_script_smoke(name, cbis, tmp_path, capsys):
    task, classes, extra, layer = CASES[name]
    out = tmp_path / name
    rc = load_script(name).main(["--data", str(cbis), "--out", str(out), "--smoke", "--seed", "1", *extra])
    assert rc == 0
    card = json.loads((out / "card.json").read_text())
    assert card["task"] == task and card["classes"] == classes and card["gradcam_layer"] == layer
    assert card["training"]["protocol"]["smoke"] is True
    assert card["training"]["split"]["grouped_by"] == "patient"
    assert "--smoke" in card["training"]["command"] and name in card["training"]["command"]
    for f in ("model.keras", "metrics.json", "history.csv", "curves.png", "confusion_matrix.png", "roc.png"):
        assert (out / f).is_file()
    if "pretrained" in name:
        assert card["architecture"]["params"] == 16_812_610  # the real VGG16 + head
        assert card["training"]["protocol"]["feature_cache"]["size"] == "2N"  # smoke: 1 variant + originals
    if "--mode" in extra:  # fine-tuning "the last layer": the last conv layer and the head
        ft = card["training"]["protocol"]["fine_tuning"]
        assert ft["unfreeze"] == "last_conv"
        # the study's sigmoid output (the default of Task 3): its weights are in sigmoid_logits
        assert ft["trainable_layers"] == ["block5_conv3", "dense_hidden", "sigmoid_logits"]
    preset = card["training"]["protocol"]["preset"]
    assert preset["settings"]["task"]["value"] == task
    assert {s["source"] for s in preset["settings"].values()} <= {"study", "literal reading", "project choice", "flag"}
    assert "public_test accuracy" in capsys.readouterr().out


def test_help_and_usage_errors(capsys):
    mod = load_script("task_3_1_pretrained_mass_calc")
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert "--backbone" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        load_script("task_2_1_scratch_mass_calc").main(["--out", "x"])  # --data missing
    assert e.value.code == 2


@pytest.mark.parametrize("script, argv", [
    ("task_2_1_scratch_mass_calc", ["--data", "", "--out", "o"]),
    ("task_2_1_scratch_mass_calc", ["--data", "d", "--out", ""]),
    ("task_3_2_pretrained_benign_malignant", ["--data", "d", "--out", ""]),
    ("task_5_ensemble", ["--members", "m", "--data", "", "--out", "o"]),
    ("task_5_ensemble", ["--members", "m", "--data", "d", "--out", ""]),
    ("task_5_ensemble", ["--members", "", "--data", "d", "--out", "o"]),
    ("models_table", ["--data", ""]),
    ("models_table", ["--data", "d", "--out", ""]),
])
def test_an_empty_data_or_out_is_refused_not_the_current_folder(script, argv, tmp_path, monkeypatch, capsys):
    """`--out ""` (an unset shell variable) was Path('') = the current folder: a training run
    wrote its bundle there. Now argparse refuses it (exit 2) naming the flag, before any work."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        load_script(script).main(argv)
    err = capsys.readouterr().err
    flag = argv[argv.index("") - 1]
    assert e.value.code == 2 and f"argument {flag}" in err and "empty path" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_input_exit_1_and_usage_exit_2(tmp_path, capsys):
    rc = load_script("task_2_1_scratch_mass_calc").main(["--data", str(tmp_path / "nope"), "--out",
                                                         str(tmp_path / "o"), "--smoke"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "nope" in err
    folder = make_cbis_folder(tmp_path / "d", n_train_pairs=4, n_test_pairs=2)
    rc = load_script("task_2_2_scratch_benign_malignant").main(
        ["--data", str(folder), "--out", str(tmp_path / "o2"), "--smoke", "--class-weights", "1,2,3"])
    assert rc == 2  # a usage error (issue 26 N11: usage exits 2, bad data 1)
    capsys.readouterr()
    for flags, words in ((["--distribute", "data-parallel"], "KERAS_BACKEND=jax"),
                         (["--workers", "-1"], "workers"), (["--fe-copies", "-2"], "fe_copies")):
        rc = load_script("task_3_1_pretrained_mass_calc").main(
            ["--data", str(folder), "--out", str(tmp_path / "o3"), "--smoke", "--weights", "none", *flags])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and "Traceback" not in err, (flags, err)
        assert not (tmp_path / "o3").exists()


# start-up lines of TensorFlow / absl / CUDA / JAX that must never reach a training script's terminal
NOISE = ("absl::InitializeLog", "oneDNN", "cuInit", "cudart_stub", "I0000", "E0000", "W0000",
         "Unable to initialize backend", "backend 'tpu'", "TF_ENABLE_ONEDNN_OPTS", "structure of `inputs`")


def quiet_run(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """A training script as a user runs it; asserts its terminal is free of library start-up
    lines and that they went to the log file instead."""
    import os

    log = tmp_path / "xdg" / "mammo-patches" / "training.log"
    full = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"), PYTHONPATH=str(ROOT), **env)
    full.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell: nothing set
    proc = subprocess.run([sys.executable, *argv], check=False, capture_output=True, text=True, timeout=600,
                          env=full)
    terminal = proc.stdout + proc.stderr
    for noise in NOISE:
        assert noise not in terminal, (noise, terminal[-3000:])
    assert log.is_file() and log.read_text(encoding="utf-8", errors="replace").strip()
    return proc


def test_script_runs_as_subprocess(cbis, tmp_path):
    out = tmp_path / "sub"
    proc = quiet_run([str(SCRIPTS / "task_2_1_scratch_mass_calc.py"), "--data", str(cbis),
                      "--out", str(out), "--smoke", "--no-augment", "--name", "ci"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 1/1" in proc.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["name"] == "ci" and card["training"]["protocol"]["augmentation"] == "none"


@pytest.mark.shared
def test_transfer_script_with_local_vgg16_weights(cbis, tmp_path, vgg16_weights):
    out = tmp_path / "vgg"
    rc = load_script("task_3_1_pretrained_mass_calc").main(
        ["--data", str(cbis), "--out", str(out), "--smoke", "--weights", str(vgg16_weights)])
    assert rc == 0
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"]["options"]["weights"] == str(vgg16_weights)
    assert card["architecture"]["trainable_params"] == 2_097_922


def _config(name: str, argv: list[str]):
    from mammo_core.training.cli import config_from_args, make_parser

    mod = load_script(name)
    captured = {}

    def fake_run(argv_, **kw):
        captured.update(kw)
        return 0

    mod.run = fake_run
    mod.main([])
    kw = captured
    scratch = kw.get("scratch_models") or ()
    parser = make_parser(kw["prog"], kw["description"], scratch_models=scratch, transfer=kw["transfer"],
                         default_model=kw["model"], preset=kw["preset"])
    args = parser.parse_args(["--data", "d", "--out", "o", *argv])
    return config_from_args(args, kw["task"], kw["model"], argv, kw["prog"], kw["preset"])


def test_held_out_seen_flag_reaches_the_config():
    assert _config("task_3_1_pretrained_mass_calc", []).held_out_seen == ""
    c = _config("task_3_1_pretrained_mass_calc", ["--held-out-seen", "  C search fixed after a look "])
    assert c.held_out_seen == "C search fixed after a look"


def test_models_md_says_which_models_were_changed_after_public_test_was_seen():
    from types import SimpleNamespace as NS

    mod = load_script("models_table")  # the typed card's fields it reads: metrics.blind / not_blind_because
    blind = NS(metrics=NS(blind=True, not_blind_because=""))
    seen = NS(metrics=NS(blind=False, not_blind_because="grid fixed after a look"))
    assert mod._seen_text({"a": blind, "b": blind}, ["a", "b"], NS(blind=True, not_blind_because="")) == ""
    t = mod._seen_text({"a": blind, "b": blind}, ["a", "b"], NS(blind=False, not_blind_because="rule"))
    assert "the ensemble: rule" in t and "members' numbers are blind" in t
    t = mod._seen_text({"a": seen, "b": seen}, ["a", "b"], NS(blind=False, not_blind_because="rule"))
    assert "the members: grid fixed after a look" in t
    assert "Every model's numbers" in t and "not blind" in t
    t = mod._seen_text({"a": seen, "b": blind}, ["a", "b"], NS(blind=True, not_blind_because=""))
    assert "`a`: grid fixed" in t and "ensemble's numbers are blind" in t


def test_study_presets_are_the_defaults_and_flags_override():
    c = _config("task_2_1_scratch_mass_calc", [])
    assert (c.model, c.augmentation, c.class_weights, c.learning_rate) == ("scratch_v1", "geometric", "none", 1e-3)
    assert c.settings["augment"]["source"] == "literal reading"
    c = _config("task_2_2_scratch_benign_malignant", ["--augment", "rot90"])
    assert (c.model, c.augmentation, c.class_weights) == ("scratch_v2", "rot90", "balanced")
    assert c.settings["augment"]["source"] == "flag"
    c = _config("task_4_baseline_mass_calc", [])
    assert (c.model, c.class_weights) == ("scratch_v1", "none")  # the study reused Fig. 2
    c = _config("task_3_2_pretrained_benign_malignant", [])
    assert (c.class_weights, c.batch_size, c.epochs, c.fe_copies, c.ft_unfreeze) == ("1,1.25", 50, 100, 2, "last_conv")
    assert c.settings["output_activation"]["source"] == "literal reading"  # one sigmoid unit
    c = _config("task_3_2_pretrained_benign_malignant", ["--backbone", "vgg19"])
    assert (c.class_weights, c.batch_size, c.epochs) == ("1,1.2", 32, 65)
    c = _config("task_3_2_pretrained_benign_malignant", ["--backbone", "vgg19", "--batch-size", "16",
                                                         "--ft-unfreeze", "last_block", "--lr", "1e-4"])
    assert (c.batch_size, c.epochs, c.ft_unfreeze, c.learning_rate) == (16, 65, "last_block", 1e-4)
    assert c.settings["batch_size"] == {"value": 16, "source": "flag", "reason": "given on the command line"}
    c = _config("task_3_1_pretrained_mass_calc", ["--no-augment"])
    assert (c.augmentation, c.class_weights) == ("none", "none")


def test_help_prints_the_preset_table(capsys):
    with pytest.raises(SystemExit):
        load_script("task_3_2_pretrained_benign_malignant").main(["--help"])
    out = capsys.readouterr().out
    assert "Study protocol (Task 3.2)" in out and "[literal reading]" in out and "[project choice]" in out
    assert "epochs (vgg19)" in out and "--parallel-augment" not in out


@pytest.mark.slow
def test_script_terminal_is_quiet_under_jax(cbis, tmp_path):
    proc = quiet_run([str(SCRIPTS / "task_2_1_scratch_mass_calc.py"), "--data", str(cbis), "--out",
                      str(tmp_path / "j"), "--smoke"], tmp_path, KERAS_BACKEND="jax")
    assert proc.returncode == 0 and "Keras backend jax" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_pooled_head_and_task_5_terminals_are_quiet(cbis, tmp_path):
    """The pooled member (Keras 'structure of inputs' warnings) and the ensemble script keep
    library lines off the terminal too (issue 25 item 5)."""

    w = random_vgg16_weights(tmp_path / "vgg16.weights.h5")
    member = tmp_path / "pooled"
    proc = quiet_run([str(SCRIPTS / "task_3_1_pretrained_mass_calc.py"), "--data", str(cbis), "--out", str(member),
                      "--smoke", "--head", "pooled", "--folds", "2", "--backbone", "vgg16_block4", "--weights", str(w),
                      "--pool-candidates", "block2_pool:avg", "--c-grid", "1.0", "--tta", "none",
                      "--train-views", "1", "--feature-cache", str(tmp_path / "cache")], tmp_path)
    assert proc.returncode == 0 and (member / "model.keras").is_file(), proc.stderr[-2000:]
    proc = quiet_run([str(SCRIPTS / "task_5_ensemble.py"), "--members", str(member), "--data", str(cbis),
                      "--out", str(tmp_path / "ens"), "--smoke", "--n-boot", "20"], tmp_path)
    assert proc.returncode == 0 and (tmp_path / "ens" / "ensemble.json").is_file(), proc.stderr[-2000:]
