"""Reports: the JSON contract, CSV rows, PDF pages, atomic writes."""
from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from mammo_core import DISCLAIMER
from mammo_core.io import Patch, ReadFailure
from mammo_core.report import PredictionRun, csv_text, to_json, write_report
from mammo_core.session import ModelOutput, PatchPrediction


def _run(with_heatmap=True):
    rng = np.random.default_rng(0)
    patches = [Patch(rng.integers(0, 65535, (150, 150)).astype(np.uint16), "a.png"),
               Patch(rng.integers(0, 255, (150, 150)).astype(np.uint8), "stack.npy", 3)]
    preds = []
    for p in patches:
        mc = ModelOutput("m1", "mass_calc", {"mass": 0.3, "calcification": 0.7}, "calcification")
        ens = ModelOutput("ensemble", "five_class", {"baseline": 0.1, "mass_benign": 0.1, "mass_malignant": 0.1,
                                                     "calcification_benign": 0.2,
                                                     "calcification_malignant": 0.5}, "calcification_malignant")
        preds.append(PatchPrediction(p.source, p.index, p.sha256, {"m1": mc}, ens, 0.12, True, 0.8))
    prov = {"created": "2026-11-25T20:00:00+00:00", "software": {"version": "0.1.0"}, "disclaimer": DISCLAIMER,
            "models": [{"name": "m1", "version": "1.0.0", "sha256": "a" * 64, "task": "mass_calc",
                        "classes": ["mass", "calcification"], "kind": "model"},
                       {"name": "ensemble", "version": "1.0.0", "sha256": "b" * 64, "task": "five_class",
                        "classes": ["baseline", "mass_benign", "mass_malignant", "calcification_benign",
                                    "calcification_malignant"], "kind": "ensemble"}],
            "ensemble": {"name": "ensemble", "threshold": 0.1}}
    hms = {}
    paths = {}
    if with_heatmap:
        hms = {("stack.npy#3", "ensemble"): np.full((150, 150), 0.5, np.float32),
               (patches[0].sha256, "m1"): np.zeros((150, 150), np.float32)}
        paths = {("a.png", "m1"): "maps/a_m1.npy"}
    return PredictionRun(preds, prov, [ReadFailure("bad.png", "not a readable PNG image")], patches, hms, paths)


def test_json_contract():
    d = to_json(_run())
    assert d["schema"] == "mammo.predictions/1" and d["disclaimer"] == DISCLAIMER
    assert re.match(r"\d{4}-\d\d-\d\dT", d["created"]) and d["software"]["version"] == "0.1.0"
    for m in d["models"]:
        assert {"name", "version", "sha256", "task", "classes"} <= set(m)
    assert len(d["predictions"]) == 4  # 2 patches x (1 model + ensemble)
    keys = {"source", "index", "sha256", "model", "task", "probabilities", "predicted", "uncertainty", "heatmap"}
    for row in d["predictions"]:
        assert keys <= set(row)
        assert row["index"] is None or isinstance(row["index"], int)
        assert row["uncertainty"] is None or isinstance(row["uncertainty"], float)
    first = d["predictions"][0]
    assert first["model"] == "m1" and first["uncertainty"] is None and first["heatmap"] == "maps/a_m1.npy"
    ens = d["predictions"][1]
    assert ens["model"] == "ensemble" and ens["uncertainty"] == 0.12 and ens["flagged"] is True
    assert d["predictions"][2]["index"] == 3
    assert d["errors"] == [{"source": "bad.png", "error": "not a readable PNG image"}]
    json.dumps(d, allow_nan=False)


def test_csv_has_one_row_per_patch_and_model():
    text = csv_text(_run())
    first, rest = text.split("\n", 1)
    assert first.startswith("# " + DISCLAIMER)
    rows = list(csv.DictReader(io.StringIO(rest)))
    data = [r for r in rows if r["predicted"] != "ERROR"]
    assert len(data) == 4 and [r["model"] for r in data] == ["m1", "ensemble", "m1", "ensemble"]
    assert data[0]["p_mass"] == "0.300000" and data[0]["p_baseline"] == ""
    assert data[1]["p_calcification_malignant"] == "0.500000" and data[1]["uncertainty"] == "0.120000"
    assert data[2]["index"] == "3"
    assert [r["source"] for r in rows if r["predicted"] == "ERROR"] == ["bad.png"]


@pytest.mark.parametrize("with_heatmap", [True, False])
def test_pdf_has_a_page_per_patch_plus_errors(tmp_path, with_heatmap):
    out = write_report(tmp_path / "r.pdf", "pdf", _run(with_heatmap))
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    # a summary page (two patches), a page per patch, the unreadable inputs
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["r.pdf"]


def test_failed_write_leaves_no_file(tmp_path):
    run = _run()
    run.predictions[0].per_model["m1"].probabilities["mass"] = float("nan")  # not valid JSON
    with pytest.raises(ValueError):
        write_report(tmp_path / "r.json", "json", run)
    assert list(tmp_path.iterdir()) == []
