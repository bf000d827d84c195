"""The shipped bundles (assets/models) and sample patches (assets/samples).

They verify against MANIFEST.json, load with safe_mode, predict the real held-out samples with
their task's classes, and `mammo predict assets/samples` works with no extra step. The `shared`
test rebuilds the mini-MIAS arrays and checks that the sample PNGs are exactly the built
held-out patches. Research use only — not a medical device.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "assets" / "models"
SAMPLES = ROOT / "assets" / "samples"
MEMBERS = ("vgg16b4_baseline_mass_calc", "vgg16_mass_calc", "vgg16_benign_malignant")
EXPECTED_TASK = {"vgg16_mass_calc": "mass_calc", "vgg16_benign_malignant": "benign_malignant",
                 "vgg16b4_baseline_mass_calc": "baseline_mass_calc", "ensemble": "five_class"}

pytestmark = pytest.mark.skipif(not (MODELS / "MANIFEST.json").is_file(),
                                reason="no bundled models (assets/models/MANIFEST.json)")


def sample_rows() -> list[dict]:
    with open(SAMPLES / "labels.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def sample_input():
    from mammo_core import io

    rows = sample_rows()
    x = io.to_model_input(np.stack([io.read_image(SAMPLES / r["file"]) for r in rows]))
    return rows, x, np.array([int(r["label"]) for r in rows])


def test_manifest_lists_every_bundle_and_all_verify():
    from mammo_core.bundle import read_manifest, verify_bundle

    manifest = read_manifest(MODELS)
    names = {b["name"] if isinstance(b, dict) and "name" in b else b for b in manifest["bundles"]}
    for name in (*MEMBERS, "ensemble"):
        assert name in names
        info = verify_bundle(MODELS / name, manifest)
        assert info.name == name
        assert info.task == EXPECTED_TASK[name]


def test_cli_verify_passes():
    r = subprocess.run([sys.executable, "-m", "mammo_core", "models", "verify"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cards_hold_measured_heldout_numbers_and_data_statement():
    from mammo_core.bundle import read_card

    for name in (*MEMBERS, "ensemble"):
        card = read_card(MODELS / name).card.to_dict()
        m = card["metrics"]
        assert m["split"] == "public_test"
        assert 0.0 <= m["auc"] <= 1.0 and 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["ece"] <= 1.0
        lo, hi = m["auc_ci95"]
        assert 0.0 <= lo <= hi <= 1.0
        assert np.asarray(m["confusion_matrix"]).sum() == m["n"]
        d = card["training_data"]
        assert "mini-MIAS" in d["source"] and "v1" in d["protocol"]
        assert "Suckling" in d["citation"] and "MIAS licence" in d["licence"]
        assert d["held_out_images"] and not set(d["held_out_images"]) & set(d["train_images"])
        assert card["training"]["command"]
    for name in MEMBERS:
        card = read_card(MODELS / name).card.to_dict()
        folds = card["training"]["folds"]
        assert [r["fold"] for r in folds][-2:] == ["mean", "std"] and len(folds) >= 4
        oof = card["training"]["oof"]  # chosen out of fold, intervals over women, not constant
        assert "women" in oof["auc_ci_method"] and "women" in card["metrics"]["auc_ci_method"]
        assert max(oof["spread"]["std"]) > 0.01 and oof["spread"]["predicted_classes"] >= 2
        assert card["inference"]["tta"] in ("none", "dihedral8")


def test_every_member_loads_safely_and_predicts_the_samples_with_its_classes():
    from mammo_core.inference import load_bundle, predict_arrays
    from mammo_core.labels import get_task

    rows, x, _ = sample_input()
    assert len(rows) >= 15
    loaded = [load_bundle(MODELS / n, MODELS) for n in MEMBERS]
    probs = predict_arrays(loaded, x)
    for m in loaded:
        assert m.classes == tuple(get_task(m.task).classes)
        p = probs[m.name]
        assert p.shape == (len(rows), len(m.classes))
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-4)


def test_ensemble_on_samples_five_classes_and_separates_baseline():
    """The ensemble gives five-class distributions; on these real held-out patches it must rank
    abnormal above baseline better than chance (its card reports the full held-out number)."""
    from sklearn.metrics import roc_auc_score

    from mammo_core.ensemble import combine, member_dirs, read_ensemble
    from mammo_core.inference import load_bundle, predict_arrays
    from mammo_core.labels import CLASS_NAMES

    rows, x, y = sample_input()
    _, spec = read_ensemble(MODELS / "ensemble")
    dirs = member_dirs(spec, MODELS)
    assert set(dirs) == set(MEMBERS)
    res = combine(spec, predict_arrays([load_bundle(d, MODELS) for d in dirs.values()], x))
    assert res.probabilities.shape == (len(rows), len(CLASS_NAMES))
    assert np.allclose(res.probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert set(y) == set(range(len(CLASS_NAMES)))  # the samples cover all five classes
    assert roc_auc_score(y != 0, 1.0 - res.probabilities[:, 0]) > 0.5


def test_mammo_predict_samples_default_ensemble(tmp_path):
    out = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "mammo_core", "predict", "assets/samples", "--no-progress",
                        "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text(encoding="utf-8"))
    preds = [p for p in rep["predictions"] if p["model"] == "ensemble"]
    files = {r["file"] for r in sample_rows()}
    assert len(preds) == len(files)
    assert {Path(p["source"]).name for p in preds} == files
    for p in preds:
        assert set(p["probabilities"]) == {"baseline", "mass_benign", "mass_malignant",
                                           "calcification_benign", "calcification_malignant"}
        assert p["predicted"] in p["probabilities"]


def test_samples_notice_and_labels():
    notice = (SAMPLES / "NOTICE").read_text(encoding="utf-8")
    assert "Suckling" in notice and "research use" in notice.lower()
    rows = sample_rows()
    assert {r["split"] for r in rows} == {"public_test"}
    from mammo_core import io

    for r in rows:
        img = io.read_image(SAMPLES / r["file"])
        assert img.shape == (150, 150) and img.dtype == np.uint16


def test_assets_size_budget():
    total = sum(f.stat().st_size for f in (ROOT / "assets").rglob("*") if f.is_file())
    assert total <= 200 * 1024 * 1024


@pytest.mark.shared
def test_samples_equal_rebuilt_heldout_patches(tmp_path, mias_dir):
    """Rebuild the arrays from the shared mini-MIAS (as train_bundled.sh does) and check every
    sample PNG is, pixel for pixel, the held-out patch its labels.csv names."""
    from mammo_core import io
    from mammo_core.bundle import read_card

    stmt = read_card(MODELS / "ensemble").card.to_dict()["training_data"]
    out = tmp_path / "mias"
    r = subprocess.run([sys.executable, "-m", "mammo_core", "dataset", "build-mias", "--images", str(mias_dir),
                        "--info", str(mias_dir / "Info.txt"), "--out", str(out), "--seed", str(stmt["seed"]),
                        "--jitter", str(stmt["jitter_copies_per_train_lesion"]), "--no-progress"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    test = io.load_patch_arrays(out).splits["public_test"]
    images, labels = np.asarray(test.images), np.asarray(test.labels)
    held = sorted(set(stmt["held_out_images"]))
    with open(out / "metadata.csv", newline="", encoding="utf-8") as fh:
        rebuilt_held = sorted({m["image"] for m in csv.DictReader(fh) if m["split"] == "public_test"})
    assert rebuilt_held == held
    for row in sample_rows():
        i = int(row["source_index"])
        assert int(labels[i]) == int(row["label"])
        png = io.read_image(SAMPLES / row["file"])
        ref = images[i].reshape(150, 150)
        if ref.dtype == np.uint8:
            ref = ref.astype(np.uint16) * 257
        np.testing.assert_array_equal(png, ref)
