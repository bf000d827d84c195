"""`mammo predict`: every good patch predicted, broken files reported, exit codes 0/1/2/3."""
from __future__ import annotations

import csv
import io
import json
import shutil

import cv2
import numpy as np
import pytest
from bundle_factory import models_dir_with, synthetic_patches, tiny_bundle

from mammo_core import DISCLAIMER
from mammo_core.cli import main


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return models_dir_with(tmp_path_factory.mktemp("models"), ["mass_calc", "benign_malignant", "baseline_mass_calc"])


@pytest.fixture()
def folder(tmp_path):
    """3 good PNGs (16-bit), a good stack of 3, a truncated .npy and a text file named .png."""
    imgs, _ = synthetic_patches(6, seed=31)
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(d / f"good{i}.png"), imgs[i])
    np.save(d / "stack.npy", imgs[3:])
    np.save(d / "trunc.npy", imgs[0])
    raw = (d / "trunc.npy").read_bytes()
    (d / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    (d / "notes.png").write_text("this is not an image\n")
    return d


def test_broken_files_among_good_ones(folder, tmp_path, capsys):
    bundle = tiny_bundle("five_class")
    maps = tmp_path / "maps"
    rc = main(["predict", str(folder), "--model", str(bundle), "--gradcam", "--gradcam-dir", str(maps),
               "--format", "json", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 3
    d = json.loads(cap.out)
    assert d["schema"] == "mammo.predictions/1" and d["disclaimer"] == DISCLAIMER
    assert sorted(e["source"].rsplit("/", 1)[-1] for e in d["errors"]) == ["notes.png", "trunc.npy"]
    assert "notes.png" in cap.err and "trunc.npy" in cap.err
    preds = d["predictions"]
    assert len(preds) == 6 and {p["model"] for p in preds} == {"tiny_five_class_0"}
    assert sorted((p["source"].rsplit("/", 1)[-1], p["index"]) for p in preds) == [
        ("good0.png", None), ("good1.png", None), ("good2.png", None),
        ("stack.npy", 0), ("stack.npy", 1), ("stack.npy", 2)]
    assert [m["name"] for m in d["models"]] == ["tiny_five_class_0"]
    for p in preds:
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-5 and len(p["sha256"]) == 64
        hm = np.load(p["heatmap"], allow_pickle=False)
        assert hm.shape == (150, 150) and hm.dtype == np.float32
        assert np.isfinite(hm).all() and hm.min() >= 0 and hm.max() <= 1
        png = cv2.imread(p["heatmap"][:-4] + ".png")
        assert png is not None and png.shape == (150, 150, 3)


def test_default_ensemble_all_good_exit_0(root, folder, capsys):
    (folder / "trunc.npy").unlink()
    (folder / "notes.png").unlink()
    rc = main(["predict", str(folder), "--models-dir", str(root), "--no-progress", "--batch-size", "4"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["errors"] == []
    ens = [p for p in d["predictions"] if p["model"] == "ensemble"]
    assert len(ens) == 6 and len(d["predictions"]) == 24
    for p in ens:
        assert list(p["probabilities"]) == ["baseline", "mass_benign", "mass_malignant",
                                            "calcification_benign", "calcification_malignant"]
        assert isinstance(p["uncertainty"], float)


def test_csv_to_stdout_and_pdf_to_file(root, folder, tmp_path, capsys):
    good = [str(folder / "good0.png"), str(folder / "stack.npy")]
    assert main(["predict", *good, "--models-dir", str(root), "--model", "tiny_mass_calc_0",
                 "--format", "csv", "--no-progress"]) == 0
    text = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))
    assert len(rows) == 4 and {r["model"] for r in rows} == {"tiny_mass_calc_0"}
    out = tmp_path / "r.pdf"
    assert main(["predict", *good, str(folder / "notes.png"), "--models-dir", str(root), "--gradcam",
                 "--format", "pdf", "-o", str(out), "--no-progress"]) == 3
    assert out.read_bytes().startswith(b"%PDF")


def test_usage_errors_exit_2(folder, capsys):
    assert main(["predict", str(folder), "--format", "pdf"]) == 2
    assert "requires -o" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # refused at parse time (issue 26)
        main(["predict", str(folder), "--batch-size", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["predict", str(folder), "--method", "magic"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["predict"])
    assert e.value.code == 2


def test_no_bundles_and_bad_bundles_exit_1(folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(folder / "good0.png"), "--models-dir", str(empty), "--no-progress"]) == 1
    assert "no model bundles" in capsys.readouterr().err
    bad = shutil.copytree(tiny_bundle("mass_calc"), tmp_path / "bad")
    blob = bytearray((bad / "model.keras").read_bytes())
    blob[-50] ^= 0xFF
    (bad / "model.keras").write_bytes(bytes(blob))
    assert main(["predict", str(folder / "good0.png"), "--model", str(bad), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and "model.keras" in err
    assert main(["predict", str(folder / "good0.png"), "--models-dir", str(empty), "--model", "nope",
                 "--no-progress"]) == 1


def test_all_inputs_unreadable_exit_1(root, folder, capsys):
    rc = main(["predict", str(folder / "notes.png"), "--models-dir", str(root), "--no-progress"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 1 and d["predictions"] == [] and len(d["errors"]) == 1


def test_gradcam_with_a_card_naming_a_missing_layer_is_one_line_naming_the_card(tmp_path, capsys, monkeypatch):
    """A card whose gradcam_layer is not in its model: `--gradcam` stops with one line naming
    the model and its card (Grad-CAM used to fail inside tf-keras-vis, naming only Keras's
    model name), before it predicts anything; without --gradcam the model still predicts."""
    from mammo_core.session import Session

    calls = []
    real_predict = Session.predict
    monkeypatch.setattr(Session, "predict", lambda self, *a, **k: calls.append(1) or real_predict(self, *a, **k))
    b = shutil.copytree(tiny_bundle("mass_calc"), tmp_path / "b")
    card = json.loads((b / "card.json").read_text())
    card["gradcam_layer"] = "no_such_conv"
    (b / "card.json").write_text(json.dumps(card, indent=2))
    imgs, _ = synthetic_patches(1, seed=9)
    assert cv2.imwrite(str(tmp_path / "p.png"), imgs[0])
    rc = main(["predict", str(tmp_path / "p.png"), "--model", str(b), "--gradcam", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "no_such_conv" in ln]
    assert len(lines) == 1 and str(b / "card.json") in lines[0] and "'tiny_mass_calc_0'" in lines[0]
    assert calls == []  # refused before predicting
    assert main(["predict", str(tmp_path / "p.png"), "--model", str(b), "--no-progress"]) == 0
    assert calls == [1]
