"""mammo_core.jsonutil: the one JSON sanitiser (metrics, cards) and its atomic writer."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mammo_core.jsonutil import json_safe, write_json


def test_json_safe_nested_numpy_and_non_finite():
    obj = {
        "auc": float("nan"),
        "bounds": (np.float32(0.25), float("inf"), -math.inf),
        "n": np.int64(7),
        "flag": np.bool_(True),
        "rows": [{"ece": np.float64(np.nan), "k": np.int32(3), "ok": np.bool_(False)}, [np.float16(0.5)]],
        3: "int key",
        "path": Path("a") / "b.npy",
        "text": "x",
        "none": None,
        "plain_bool": True,
    }
    out = json_safe(obj)
    assert out["auc"] is None
    assert out["bounds"] == [0.25, None, None]
    assert type(out["bounds"][0]) is float
    assert out["n"] == 7 and type(out["n"]) is int
    assert out["flag"] is True
    assert out["rows"][0] == {"ece": None, "k": 3, "ok": False}
    assert type(out["rows"][0]["k"]) is int and out["rows"][0]["ok"] is False
    assert out["rows"][1] == [0.5] and type(out["rows"][1][0]) is float
    assert out["3"] == "int key" and 3 not in out
    assert out["path"] == str(Path("a") / "b.npy")
    assert out["text"] == "x" and out["none"] is None and out["plain_bool"] is True
    # strict JSON (no NaN/Infinity tokens) is now possible; the input is not modified
    json.dumps(out, allow_nan=False)
    assert math.isnan(obj["auc"]) and isinstance(obj["bounds"], tuple)


def test_json_safe_keeps_finite_values_exactly():
    assert json_safe(np.float32(0.1)) == float(np.float32(0.1))
    assert json_safe(0.1) == 0.1 and json_safe(-0.0) == 0.0
    assert json_safe(np.int64(2**40)) == 2**40
    assert json_safe([]) == [] and json_safe({}) == {}


def test_write_json_round_trip_atomic_indent_newline(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    doc = {"table": [{"model": "m", "auc": np.float64(0.75), "ece": float("nan"), "n": np.int64(40)}],
           "smoke": np.bool_(False)}
    assert write_json(path, doc) == path
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text.startswith('{\n  "table": [')  # indent=2
    assert "NaN" not in text
    assert json.loads(text) == {"table": [{"model": "m", "auc": 0.75, "ece": None, "n": 40}], "smoke": False}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_write_json_failure_leaves_previous_file(tmp_path):
    path = tmp_path / "card.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
