"""One definition per contract: a patch's key and split (set on the Patch), the heatmap key,
the ensemble alias resolved to the bundle's name once, the input shape."""
from __future__ import annotations

import numpy as np

from mammo_core import contract, inference, io
from mammo_core.models import registry
from mammo_core.predictions import ENSEMBLE, HeatKey, ModelOutput, PatchPrediction, patch_key
from mammo_core.report import PredictionRun, canonical_keys


def _patch(source="a.png", index=None, **kw):
    fill = sum(map(ord, f"{source}{index}")) % 256  # different pixels, different sha256
    return io.Patch(np.full((150, 150), fill, np.uint8), source, index, **kw)


def test_patch_key_and_split_come_with_the_patch(tmp_path):
    assert _patch().key == "a.png" and _patch().split == ""
    row = _patch("/d/public_test_tensor.npy", 7)
    assert row.key == "/d/public_test_tensor.npy#7" == patch_key(row.source, row.index)
    assert row.split == "public_test"
    assert _patch("/d/train_tensor.npy", None).split == ""  # not a row of an array
    assert _patch("/d/x.npy", 3, split="train").split == "train"  # given wins
    np.save(tmp_path / "train_tensor.npy", np.zeros((2, 150, 150), np.uint16))
    np.save(tmp_path / "train_labels.npy", np.array([0, 1]))
    np.save(tmp_path / "stack.npy", np.zeros((2, 150, 150), np.uint8))
    got = io.read_patches([tmp_path])
    assert [(p.split, p.key) for p in got.patches] == [
        ("", f"{tmp_path / 'stack.npy'}#0"), ("", f"{tmp_path / 'stack.npy'}#1"),
        ("train", f"{tmp_path / 'train_tensor.npy'}#0"),
        ("train", f"{tmp_path / 'train_tensor.npy'}#1")]


def _pred(patch, ensemble="ens_v2"):
    m = ModelOutput("m1", "mass_calc", {"mass": 0.4, "calcification": 0.6}, "calcification")
    e = ModelOutput(ensemble, "five_class", {"baseline": 1.0}, "baseline") if ensemble else None
    return PatchPrediction(patch.source, patch.index, patch.sha256, {"m1": m}, e, None, False)


def test_output_resolves_the_ensemble_alias():
    p = _pred(_patch())
    assert p.output(ENSEMBLE) is p.ensemble and p.output("ens_v2") is p.ensemble
    assert p.output("m1").predicted == "calcification" and p.output("nope") is None
    assert _pred(_patch(), ensemble=None).output(ENSEMBLE) is None


def test_heatmap_keys_become_patch_key_and_model_name():
    a, b, c = _patch("a.png"), _patch("s.npy", 0), _patch("s.npy", 1)
    preds = [_pred(a), _pred(b), _pred(c)]
    one, two, three = (np.full((150, 150), v, np.float32) for v in (0.1, 0.2, 0.3))
    got = canonical_keys({(a.sha256, "m1"): one, ("a.png", ENSEMBLE): two,
                          ("s.npy", "m1"): three, ("s.npy#1", "m1"): one,
                          ("elsewhere.png", "m1"): two}, preds)
    assert set(got) == {("a.png", "m1"), ("a.png", "ens_v2"), ("s.npy#0", "m1"), ("s.npy#1", "m1")}
    assert got[("a.png", "ens_v2")] is two  # the alias, under the bundle's own name
    assert got[("s.npy#0", "m1")] is three and got[("s.npy#1", "m1")] is one  # specific wins
    run = PredictionRun(preds, {}, heatmaps={("a.png", ENSEMBLE): two})
    assert list(run.heatmaps) == [("a.png", "ens_v2")]
    assert canonical_keys({}, preds) == {}


def test_the_input_shape_is_defined_once():
    assert contract.INPUT_SHAPE == (contract.PATCH_SIZE, contract.PATCH_SIZE, 1)
    assert registry.INPUT_SHAPE is contract.INPUT_SHAPE is inference.INPUT_SHAPE
    assert io.PATCH_SHAPE is contract.PATCH_SHAPE
    assert HeatKey("s", "m", "gradcam", "mass")[1] == "m"
