"""`mammo dataset info`: JSON and text output on synthetic CBIS-layout folders, bad input as
one-line errors with exit code 1, --debug, and `python -m mammo_core --help`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from filemakers import BAD_CASES, make_bad_cbis, write_cbis_folder

from mammo_core.cli import main
from mammo_core.errors import DatasetError
from mammo_core.labels import CLASS_NAMES, class_counts


def run_cli(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_counts_per_class_and_pairs(tmp_path, rng, capsys):
    data = write_cbis_folder(tmp_path, rng, n_train_pairs=7, n_test_pairs=4, n_private=5, channel=True)
    rc, out, err = run_cli(["dataset", "info", str(tmp_path), "--format", "json"], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["path"] == str(tmp_path)
    assert list(doc["splits"]) == ["train", "public_test", "private_test"]
    for name in ("train", "public_test"):
        images, labels = data[name]
        s = doc["splits"][name]
        assert set(s) == {"n", "classes", "pairs_ok", "dtype", "shape", "min", "max"}
        assert s["n"] == len(labels)
        assert s["classes"] == class_counts(labels)
        assert list(s["classes"]) == list(CLASS_NAMES)
        assert s["classes"]["baseline"] == len(labels) // 2
        assert s["pairs_ok"] is True
        assert s["dtype"] == "uint16" and s["shape"] == [150, 150]
        assert s["min"] == int(images.min()) and s["max"] == int(images.max())
        assert isinstance(s["min"], int) and isinstance(s["max"], int)
    priv = doc["splits"]["private_test"]
    assert priv["n"] == 5 and priv["classes"] is None and priv["pairs_ok"] is None


def test_json_pairs_false_when_layout_broken(tmp_path, rng, capsys):
    write_cbis_folder(tmp_path, rng, n_train_pairs=3, n_test_pairs=1, dtype=np.uint8)
    np.save(tmp_path / "train_labels.npy", np.array([0, 1, 2, 0, 0, 3]))
    rc, out, _ = run_cli(["dataset", "info", str(tmp_path), "--format", "json"], capsys)
    doc = json.loads(out)
    assert rc == 0
    assert doc["splits"]["train"]["pairs_ok"] is False
    assert doc["splits"]["public_test"]["pairs_ok"] is True
    assert doc["splits"]["train"]["dtype"] == "uint8"
    assert doc["splits"]["train"]["classes"]["mass_malignant"] == 1


def test_text_table(tmp_path, rng, capsys):
    data = write_cbis_folder(tmp_path, rng, n_train_pairs=4, n_test_pairs=2, n_private=2)
    rc, out, _ = run_cli(["dataset", "info", str(tmp_path)], capsys)
    assert rc == 0
    lines = out.splitlines()
    train_row = next(line for line in lines if line.startswith("train "))
    assert train_row.split()[:4] == ["train", "8", "uint16", "150x150"] and train_row.endswith("ok")
    assert next(line for line in lines if line.startswith("private_test")).endswith("no labels")
    baseline_row = next(line for line in lines if line.startswith("baseline"))
    assert baseline_row.split()[1:] == ["4", "2"]
    for cls in CLASS_NAMES[1:]:
        row = next(line for line in lines if line.startswith(cls + " "))
        expected = [str(int((data[s][1] == CLASS_NAMES.index(cls)).sum())) for s in ("train", "public_test")]
        assert row.split()[1:] == expected


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_1_with_one_line(tmp_path, rng, capsys, case):
    folder = tmp_path / "arrays"
    file_name, problem = make_bad_cbis(folder, rng, case)
    for fmt in ("text", "json"):
        rc, out, err = run_cli(["dataset", "info", str(folder), "--format", fmt], capsys)
        assert rc == 1
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("mammo: error: ")
        assert file_name in lines[0] and problem in lines[0]
        assert "Traceback" not in err


def test_missing_folder_and_debug_traceback(tmp_path, capsys):
    rc, _, err = run_cli(["dataset", "info", str(tmp_path / "absent")], capsys)
    assert rc == 1 and err.strip() == f"mammo: error: {tmp_path / 'absent'}: no such folder"
    with pytest.raises(DatasetError):
        main(["--debug", "dataset", "info", str(tmp_path / "absent")])


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["dataset", "info", str(tmp_path), "--format", "xml"])
    assert info.value.code == 2


def _subprocess_env() -> dict:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def test_python_m_mammo_core_help():
    res = subprocess.run([sys.executable, "-m", "mammo_core", "--help"], capture_output=True, check=False,
                         text=True, timeout=120, env=_subprocess_env())
    assert res.returncode == 0, res.stderr
    assert "usage: mammo" in res.stdout and "dataset" in res.stdout


def test_dataset_info_help_explains_layout():
    res = subprocess.run([sys.executable, "-m", "mammo_core", "dataset", "info", "--help"],
                         capture_output=True, text=True, timeout=120, check=False,
                         env=_subprocess_env())
    assert res.returncode == 0, res.stderr
    for text in ("train_tensor.npy", "public_test_labels.npy", "private_test_tensor.npy",
                 "allow_pickle=False", "--format"):
        assert text in res.stdout


def test_dataset_info_end_to_end_subprocess(tmp_path, rng):
    write_cbis_folder(tmp_path, rng, n_train_pairs=2, n_test_pairs=1)
    res = subprocess.run([sys.executable, "-m", "mammo_core", "dataset", "info", str(tmp_path),
                          "--format", "json"], capture_output=True, text=True, timeout=120, check=False,
                         env=_subprocess_env())
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["splits"]["train"]["n"] == 4
    (tmp_path / "train_labels.npy").write_text("garbage")
    res = subprocess.run([sys.executable, "-m", "mammo_core", "dataset", "info", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=False,
                         env=_subprocess_env())
    assert res.returncode == 1
    labels = Path(tmp_path) / "train_labels.npy"
    assert res.stderr.strip() == f"mammo: error: {labels}: not a .npy file (bad magic string)"
