"""Attacks on the training scripts' inputs and outputs (issue 26 N1, N11, item 5; issue 25 items
1 and 3): a run never writes into the bundled models folder, an input, a file or an existing
bundle (unless --overwrite, and then only a complete, verified bundle replaces it); bad input
is one line (exit 2 usage, 1 data) before any folder is made; a collapsed run leaves its history,
curves and metrics. Research use only - not a medical device."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_training_scripts import _config, load_script
from training_data import make_cbis_folder

from mammo_core.errors import MammoError
from mammo_core.paths import REPO_DIR
from mammo_core.training.outdir import UsageError, plan_out

ASSETS = REPO_DIR / "assets"


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cbis(tmp_path_factory):
    return make_cbis_folder(tmp_path_factory.mktemp("cbis"), n_train_pairs=16, n_test_pairs=8, patients=True)


@pytest.fixture
def assets_copy(tmp_path, monkeypatch):
    """A copy of assets/ (the ensemble bundle whole, a member's card) as $MAMMO_ASSETS."""
    root = tmp_path / "assets"
    shutil.copytree(ASSETS / "models" / "ensemble", root / "models" / "ensemble")
    (root / "models" / "vgg16_mass_calc").mkdir(parents=True)
    shutil.copy2(ASSETS / "models" / "vgg16_mass_calc" / "card.json", root / "models" / "vgg16_mass_calc")
    monkeypatch.setenv("MAMMO_ASSETS", str(root))
    return root


def _one_line_error(err: str) -> None:
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err, err


@pytest.mark.parametrize("script", ["task_2_1_scratch_mass_calc", "task_3_1_pretrained_mass_calc"])
def test_training_into_a_bundled_model_is_refused_and_the_bundle_stays_byte_identical(
        script, cbis, assets_copy, capsys):
    target = assets_copy / "models" / "vgg16_mass_calc"
    before = tree_digest(assets_copy)
    for extra in ([], ["--overwrite"]):
        rc = load_script(script).main(["--data", str(cbis), "--out", str(target), "--smoke", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and "bundled models folder" in err, err
        _one_line_error(err)
    rc = load_script(script).main(["--data", str(cbis), "--out", str(assets_copy / "models" / "new"), "--smoke"])
    assert rc == 2 and "bundled models folder" in capsys.readouterr().err
    assert tree_digest(assets_copy) == before and not (assets_copy / "models" / "new").exists()


def test_the_repository_assets_are_protected_even_with_mammo_assets_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_ASSETS", str(tmp_path))
    for out in (ASSETS / "models" / "vgg16_mass_calc", ASSETS / "models", ASSETS / "models" / "x" / "y"):
        with pytest.raises(UsageError, match="bundled models folder"):
            plan_out(out, {}, overwrite=True)


def test_ensemble_into_the_bundled_ensemble_or_a_member_is_refused(cbis, assets_copy, tmp_path, capsys):
    before = tree_digest(assets_copy)
    mod = load_script("task_5_ensemble")
    member = tmp_path / "member"
    member.mkdir()
    (member / "card.json").write_text("{}")
    for out, words in ((assets_copy / "models" / "ensemble", "bundled models folder"),
                       (member, "is the --members"), (cbis, "is the --data"), (member / "sub", "inside the --members")):
        rc = mod.main(["--members", str(member), "--data", str(cbis), "--out", str(out), "--smoke", "--overwrite"])
        err = capsys.readouterr().err
        assert rc == 2 and words in err, (out, err)
        _one_line_error(err)
    assert tree_digest(assets_copy) == before and (member / "card.json").read_text() == "{}"


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_out_equal_to_inside_or_around_the_data_is_refused(where, cbis, capsys):
    out = {"same": cbis, "inside": cbis / "run", "around": cbis.parent}[where]
    before = tree_digest(cbis)
    rc = load_script("task_2_1_scratch_mass_calc").main(["--data", str(cbis), "--out", str(out), "--smoke"])
    err = capsys.readouterr().err
    assert rc == 2 and "--data" in err, err
    _one_line_error(err)
    assert tree_digest(cbis) == before and not (cbis / "run").exists()


def test_out_that_is_a_file_is_one_line_exit_2(cbis, tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    for script, argv in (("task_2_1_scratch_mass_calc", ["--data", str(cbis), "--smoke"]),
                         ("task_5_ensemble", ["--members", str(tmp_path), "--data", str(cbis)])):
        for out, words in ((f, "is a file"), (f / "run", "not a folder")):
            rc = load_script(script).main([*argv, "--out", str(out)])
            err = capsys.readouterr().err
            assert rc == 2 and words in err, err
            _one_line_error(err)
    assert f.read_text() == "keep me"


def test_existing_bundle_needs_overwrite_and_is_replaced_only_by_a_verified_bundle(cbis, tmp_path, capsys):
    from mammo_core.bundle import verify_bundle

    mod = load_script("task_2_1_scratch_mass_calc")
    out = tmp_path / "run"
    assert mod.main(["--data", str(cbis), "--out", str(out), "--smoke", "--no-augment"]) == 0
    first = tree_digest(out)
    capsys.readouterr()
    assert mod.main(["--data", str(cbis), "--out", str(out), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert "already holds a bundle" in err and "--overwrite" in err
    assert tree_digest(out) == first
    # a failing run under --overwrite (a data error found after the plan) leaves the old bundle
    broken = make_cbis_folder(tmp_path / "broken", n_train_pairs=4, n_test_pairs=2)
    y = np.load(broken / "train_labels.npy")
    y[1::2] = 1  # masses only: no calcification to learn
    np.save(broken / "train_labels.npy", y)
    assert mod.main(["--data", str(broken), "--out", str(out), "--smoke", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "calcification 0" in err and "missing" in err
    assert tree_digest(out) == first
    assert mod.main(["--data", str(cbis), "--out", str(out), "--smoke", "--overwrite", "--seed", "3"]) == 0
    assert tree_digest(out) != first and "--seed 3" in json.loads((out / "card.json").read_text())[
        "training"]["command"]
    verify_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "run"]  # no temporary sibling left


def test_binary_metadata_is_one_line_exit_1_and_no_folder_is_made(tmp_path, capsys):
    data = make_cbis_folder(tmp_path / "d", n_train_pairs=4, n_test_pairs=2, patients=True)
    (data / "metadata.csv").write_bytes(bytes(range(256)) * 8)
    out = tmp_path / "o"
    rc = load_script("task_2_1_scratch_mass_calc").main(["--data", str(data), "--out", str(out), "--smoke"])
    err = capsys.readouterr().err
    assert rc == 1 and "metadata.csv" in err and "UTF-8" in err, err
    _one_line_error(err)
    assert not out.exists()


@pytest.mark.parametrize("script, words", [
    ("task_2_2_scratch_benign_malignant", "malignant 0"),
    ("task_4_baseline_mass_calc", "calcification 0"),
])
def test_a_training_set_without_a_needed_class_is_refused_with_counts(script, words, tmp_path, capsys):
    data = make_cbis_folder(tmp_path / "d", n_train_pairs=8, n_test_pairs=4)
    y = np.load(data / "train_labels.npy")
    y[1::2] = np.where(y[1::2] % 2 == 0, y[1::2] - 1, y[1::2]) if "malignant" in words else 1
    np.save(data / "train_labels.npy", y)
    out = tmp_path / "o"
    rc = load_script(script).main(["--data", str(data), "--out", str(out), "--smoke"])
    err = capsys.readouterr().err
    assert rc == 1 and words in err and "missing" in err, err
    _one_line_error(err)
    assert not out.exists()


def test_flat_grey_patches_are_not_training_examples(tmp_path, caplog):
    from mammo_core.training.data import load_task_data

    data = make_cbis_folder(tmp_path / "d", n_train_pairs=8, n_test_pairs=4)
    x = np.load(data / "train_tensor.npy")
    y = np.load(data / "train_labels.npy")
    x[1] = 30000  # a flat grey "lesion" and its flat baseline partner
    x[0] = 12345
    np.save(data / "train_tensor.npy", x)
    td = load_task_data(data, "baseline_mass_calc")
    assert len(td.y_train) == len(y) - 2
    assert not any(np.ptp(p) == 0 for p in td.x_train)
    assert "2 uniform (flat) train_* patch(es) left out" in caplog.text


@pytest.mark.parametrize("argv, words", [
    (["--class-weights", "1,2,3"], "3 weights for the 2 classes"),
    (["--workers", "-1"], "workers"),
    (["--epochs", "0"], "epochs"),
    (["--val-fraction", "1.5"], "validation fraction"),
    (["--grid", "colour=1,2"], "grid key"),
])
def test_usage_errors_exit_2_before_any_folder(argv, words, cbis, tmp_path, capsys):
    out = tmp_path / "o"
    rc = load_script("task_2_2_scratch_benign_malignant").main(["--data", str(cbis), "--out", str(out),
                                                               "--smoke", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and words in err, err
    _one_line_error(err)
    assert not out.exists()


@pytest.mark.parametrize("flag", [["--epochs", "5"], ["--batch-size", "8"], ["--lr", "1e-4"], ["--patience", "3"],
                                  ["--augment", "none"], ["--no-augment"], ["--val-fraction", "0.3"],
                                  ["--grid", "batch=25,50"], ["--distribute", "mirrored"], ["--mixed-precision"],
                                  ["--workers", "2"], ["--mode", "ft"]])
def test_pooled_head_refuses_a_flag_it_would_ignore(flag, cbis, tmp_path, capsys):
    out = tmp_path / "o"
    rc = load_script("task_3_1_pretrained_mass_calc").main(
        ["--data", str(cbis), "--out", str(out), "--head", "pooled", "--folds", "3", *flag])
    err = capsys.readouterr().err
    assert rc == 2 and "not used by --head pooled" in err and flag[0] in err, err
    _one_line_error(err)
    assert not out.exists()


@pytest.mark.parametrize("flag", [["--c-grid", "0.1", "1"], ["--feature-squash", "4"]])
def test_flatten_head_refuses_pooled_only_flags(flag, cbis, tmp_path, capsys):
    rc = load_script("task_3_1_pretrained_mass_calc").main(
        ["--data", str(cbis), "--out", str(tmp_path / "o"), "--smoke", *flag])
    err = capsys.readouterr().err
    assert rc == 2 and f"{flag[0]} not used by --head flatten" in err, err


def test_pooled_class_weights_follow_the_preset():
    from mammo_core.training.pooled import sklearn_class_weight

    assert _config("task_3_2_pretrained_benign_malignant", ["--head", "pooled"]).class_weights == "1,1.25"
    assert _config("task_3_1_pretrained_mass_calc", ["--head", "pooled"]).class_weights == "none"
    assert sklearn_class_weight("1,1.25", 2) == {0: 1.0, 1: 1.25}
    assert sklearn_class_weight("none", 2) is None and sklearn_class_weight("balanced", 3) == "balanced"
    with pytest.raises(MammoError, match="3 class weights"):
        sklearn_class_weight("1,1,1", 2)


def test_a_collapsed_run_leaves_history_curves_and_metrics_marked_refused(cbis, tmp_path, monkeypatch, capsys):
    from mammo_core.training import runner

    def collapsed(p, where, **k):
        raise MammoError(f"{where}: predictions are (near) constant (largest class-probability std 0 < 0.01); "
                         "refusing to write a collapsed model")

    monkeypatch.setattr(runner, "check_not_collapsed", collapsed)
    out = tmp_path / "o"
    rc = load_script("task_2_1_scratch_mass_calc").main(
        ["--data", str(cbis), "--out", str(out), "--epochs", "2", "--batch-size", "8", "--n-boot", "0"])
    err = capsys.readouterr().err
    assert rc == 1
    last = err.strip().splitlines()[-1]
    assert "no model written" in last and str(out) in last and "history.csv" in last and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [".refused", "curves.png", "history.csv", "metrics.json"]
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["model_written"] is False and "constant" in doc["refused"] and doc["public_test"] is None
    assert len((out / "history.csv").read_text().splitlines()) == 1 + doc["epochs_run"] >= 2
    # the smoke wording: written anyway, never "refusing" beside "written"
    monkeypatch.setattr(runner, "check_not_collapsed", collapsed)
    rc = load_script("task_2_1_scratch_mass_calc").main(
        ["--data", str(cbis), "--out", str(tmp_path / "s"), "--smoke"])
    err = capsys.readouterr().err
    assert rc == 0 and "bundle written anyway (smoke run" in err and "refusing" not in err
    assert not os.path.exists(tmp_path / "s" / ".refused")


def test_a_disk_error_during_the_run_is_one_line_exit_1(cbis, tmp_path, monkeypatch, capsys):
    import errno

    from mammo_core.training import cli

    def full_disk(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", str(cfg.out_dir / "model.keras"))

    monkeypatch.setattr(cli, "train", full_disk)
    rc = load_script("task_2_1_scratch_mass_calc").main(["--data", str(cbis), "--out", str(tmp_path / "o"), "--smoke"])
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device" in err and "model.keras" in err, err
    _one_line_error(err)
