"""Hardening at the edges (issue 11): each of the 13 defects written as the attack that found
it, asserting the contract: a bad input is one line naming the file, the rest is predicted and
reported (exit 3), no Python traceback, nothing hangs (anything that could hang runs in a child
process under a timeout). Fixtures: tests/attack_fixtures.py."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from attack_fixtures import (
    FORMULA_PREFIXES,
    bad_float_npy,
    big_valid_png,
    cycle_folder,
    deep_json,
    dicom_slope,
    edit_card,
    env,
    fifo,
    formula_names,
    good_png,
    link,
    mammo_in_subprocess,
    newline_name,
    non_utf8_name,
    png_header_only,
    read_in_subprocess,
)
from bundle_factory import copy_bundle, models_dir_with, tiny_bundle
from test_build_cbis import make_tree

from mammo_core.cli import main

HANG_S = float(os.environ.get("MAMMO_TEST_HANG_S", "60"))  # a reader that has not answered by then is hung


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return models_dir_with(tmp_path_factory.mktemp("models"), ["mass_calc"], ensemble=False)


@pytest.fixture()
def own_models(tmp_path) -> Path:
    """A private copy of a models folder (a test may vandalise it)."""
    return models_dir_with(tmp_path / "models", ["mass_calc", "benign_malignant"], ensemble=True)


def predict(args, models: Path, capsys) -> tuple[int, str, str]:
    rc = main(["predict", *map(str, args), "--models-dir", str(models), "--model", "tiny_mass_calc_0",
               "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_one_line_errors(err: str) -> None:
    assert "Traceback" not in err
    for line in err.splitlines():
        assert line.startswith("mammo"), f"stray stderr line: {line!r}"


# --------------------------------------------------------------------------- 1 value ranges
def test_d01_float_npy_out_of_range_is_one_error_not_the_whole_run(tmp_path, models, capsys):
    a, b = good_png(tmp_path / "good.png", 1), good_png(tmp_path / "good2.png", 2)
    bad = bad_float_npy(tmp_path / "bad_float.npy")
    rc, out, err = predict([a, bad, b], models, capsys)
    assert rc == 3
    d = json.loads(out)
    assert sorted(Path(p["source"]).name for p in d["predictions"]) == ["good.png", "good2.png"]
    assert [Path(e["source"]).name for e in d["errors"]] == ["bad_float.npy"]
    assert "[0, 1]" in d["errors"][0]["error"]
    assert_one_line_errors(err)


def test_d01_float_stack_with_one_bad_row_is_refused_per_file(tmp_path):
    from mammo_core.io import read_patches

    stack = np.full((3, 150, 150), 0.5, np.float32)
    stack[1, 0, 0] = -0.25
    np.save(tmp_path / "stack.npy", stack)
    good_png(tmp_path / "ok.png")
    coll = read_patches(tmp_path)
    assert len(coll.patches) == 1 and len(coll.errors) == 1
    assert "patch 1" in coll.errors[0].error and coll.errors[0].source.endswith("stack.npy")


# --------------------------------------------------------------------------- 2 CSV injection
def test_d02_csv_cells_never_start_a_formula(tmp_path, models, capsys, monkeypatch):
    files = formula_names(tmp_path / "in")
    monkeypatch.chdir(tmp_path / "in")  # names given as typed: the cell starts with the name
    rc = main(["predict", "--format", "csv", "--models-dir", str(models), "--model", "tiny_mass_calc_0",
               "--no-progress", "--", *[f.name for f in files]])
    out = capsys.readouterr().out
    assert rc == 3
    rows = list(csv.reader(io.StringIO(out)))
    body = [r for r in rows[2:] if r]
    assert len(body) == 5  # 4 predictions + 1 error row
    for r in body:
        for cell in r:
            assert not cell.startswith(FORMULA_PREFIXES), f"formula cell {cell!r}"
    names = {Path(r[0].lstrip("'")).name for r in body}
    assert '=HYPERLINK("http:__evil","click").png' in names and "=cmd_bad.png" in names


# --------------------------------------------------------------------------- 3 card integrity
def test_d03_reversed_classes_in_card_fail_verify_and_predict(tmp_path, own_models, capsys):
    card = json.loads((own_models / "tiny_mass_calc_0" / "card.json").read_text())
    edit_card(own_models / "tiny_mass_calc_0", classes=card["classes"][::-1])
    assert main(["models", "verify", "--models-dir", str(own_models)]) == 1
    err = capsys.readouterr().err
    assert "card.json" in err and "MANIFEST" in err
    good_png(tmp_path / "a.png")
    rc, out, err = predict([tmp_path / "a.png"], own_models, capsys)
    assert rc == 1 and out == "" and "card.json" in err
    assert_one_line_errors(err)


def test_d03_report_gives_the_hash_computed_from_the_loaded_file(tmp_path, own_models, capsys):
    from mammo_core.bundle import sha256_file

    good_png(tmp_path / "a.png")
    rc, out, _ = predict([tmp_path / "a.png"], own_models, capsys)
    assert rc == 0
    real = sha256_file(own_models / "tiny_mass_calc_0" / "model.keras")
    assert [m["sha256"] for m in json.loads(out)["models"]] == [real]
    # a card whose self-declared sha256 lies (even with the manifest re-hashing that card) is refused
    edit_card(own_models / "tiny_mass_calc_0", sha256="0" * 64)
    man = json.loads((own_models / "MANIFEST.json").read_text())
    man["bundles"]["tiny_mass_calc_0"]["card"] = sha256_file(own_models / "tiny_mass_calc_0" / "card.json")
    (own_models / "MANIFEST.json").write_text(json.dumps(man))
    rc, out, err = predict([tmp_path / "a.png"], own_models, capsys)
    assert rc == 1 and "sha256" in err
    assert_one_line_errors(err)


@pytest.mark.parametrize("change, words", [
    ({"task": "five_class"}, "classes"),
    ({"task": "no_such_task"}, "task"),
    ({"name": "../../evil"}, "name"),
    ({"files": {"../../../../etc/hostname": "0" * 64}}, "plain file name"),
    ({"files": {"/etc/hostname": "0" * 64}}, "plain file name"),
])
def test_d03_card_fields_checked_against_labels_and_bundle(tmp_path, change, words):
    from mammo_core.bundle import verify_bundle
    from mammo_core.errors import BundleError

    b = copy_bundle(tiny_bundle("mass_calc"), tmp_path)
    edit_card(b, **change)
    with pytest.raises(BundleError) as exc:
        verify_bundle(b)
    assert words in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------------------- 4 output paths
def test_d04_output_symlink_to_dev_null_is_written_through(tmp_path, models, capsys):
    good_png(tmp_path / "a.png")
    out_link = link(tmp_path / "report.json", os.devnull)
    rc, _, err = predict([tmp_path / "a.png", "-o", out_link], models, capsys)
    assert rc == 0, err
    assert out_link.is_symlink() and stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_d04_output_dev_stdout_prints_the_report(tmp_path, models, capfd):
    good_png(tmp_path / "a.png")
    stdout_link = link(tmp_path / "out.json", "/dev/stdout")  # the same write path as -o /dev/stdout
    rc = main(["predict", str(tmp_path / "a.png"), "-o", str(stdout_link), "--models-dir", str(models),
               "--model", "tiny_mass_calc_0", "--no-progress"])
    cap = capfd.readouterr()
    assert rc == 0, cap.err
    assert json.loads(cap.out)["predictions"] and stdout_link.is_symlink()


def test_d04_output_naming_an_input_is_refused_before_work(tmp_path, models, capsys):
    a = good_png(tmp_path / "a.png")
    before = a.read_bytes()
    rc, _, err = predict([a, "-o", a, "--format", "csv"], models, capsys)
    assert rc == 2 and "input" in err and a.read_bytes() == before
    folder = tmp_path / "in"
    folder.mkdir()
    good_png(folder / "b.png")
    rc, _, err = predict([folder, "--recursive", "-o", folder / "b.png"], models, capsys)
    assert rc == 2 and (folder / "b.png").read_bytes() != b"" and "input" in err


def test_d04_gradcam_dir_inside_an_input_folder_is_refused(tmp_path, models, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good_png(folder / "b.png")
    for maps in (folder, folder / "maps"):
        rc, _, err = predict([folder, "--recursive", "--gradcam-dir", maps], models, capsys)
        assert rc == 2 and "--gradcam-dir" in err
        assert sorted(p.name for p in folder.rglob("*")) == ["b.png"]


# --------------------------------------------------------------------------- 5 symlink cycles
def test_d05_recursive_walk_survives_symlink_cycles(tmp_path):
    root = cycle_folder(tmp_path / "loopy", n_links=2)
    res = read_in_subprocess([root], recursive=True, timeout=HANG_S)
    assert res.returncode == 0, res.stderr
    assert "PATCHES 1" in res.stdout


# --------------------------------------------------------------------------- 6 special files
@pytest.mark.parametrize("kind", ["fifo.png", "zero.dcm", "zero.png", "zero.npy", "noext"])
def test_d06_special_files_are_refused_without_blocking(tmp_path, kind):
    good_png(tmp_path / "good.png")
    target = tmp_path / kind
    if kind.startswith("fifo"):
        fifo(target)
    elif kind == "noext":
        fifo(target)  # an extension-less FIFO in a folder: the DICOM sniffing must not block
    else:
        link(target, "/dev/zero")
    res = read_in_subprocess([tmp_path], timeout=HANG_S)
    assert res.returncode == 0, res.stderr
    assert "PATCHES 1" in res.stdout
    if kind != "noext":
        assert "not a regular file" in res.stdout and kind in res.stdout
    # named directly, too
    res = read_in_subprocess([target], timeout=HANG_S)
    assert res.returncode == 0 and "PATCHES 0" in res.stdout and "not a regular file" in res.stdout


def test_d06_bytes_read_are_capped(tmp_path):
    p = good_png(tmp_path / "a.png")
    res = read_in_subprocess([p], timeout=HANG_S, extra_env={"MAMMO_MAX_FILE_BYTES": "1000"})
    assert "PATCHES 0" in res.stdout and "larger than" in res.stdout


# --------------------------------------------------------------------------- 7 viewer screenshot
@pytest.mark.gui
def test_d07_screenshot_into_uncreatable_folder_fails_fast(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "app", "--screenshot", str(blocker / "sub" / "shot.png"),
                          "--screenshot-timeout", "30"], capture_output=True, text=True,
                         timeout=120, env=env(), check=False)
    assert res.returncode != 0
    assert "screenshot" in res.stderr and "Traceback" not in res.stderr
    assert time.monotonic() - t0 < 100


def test_d07_screenshot_timeout_is_a_watchdog():
    from app.main import start_watchdog

    fired = []
    stop = start_watchdog(0.2, lambda: fired.append(1))
    time.sleep(1.0)
    stop()
    assert fired == [1]
    fired.clear()
    stop = start_watchdog(5, lambda: fired.append(1))
    stop()
    time.sleep(0.2)
    assert fired == []


# --------------------------------------------------------------------------- 8 write errors
@pytest.mark.parametrize("case", ["parent_is_file", "is_dir", "empty", "gradcam_dir_is_file"])
def test_d08_bad_output_is_refused_before_models_load(tmp_path, models, capsys, case, monkeypatch):
    import mammo_core.session as session_mod

    def no_load(*a, **k):
        raise AssertionError("models loaded before the output was checked")
    monkeypatch.setattr(session_mod.Session, "load", no_load)
    a = good_png(tmp_path / "a.png")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = {"parent_is_file": ["-o", blocker / "r.json"], "is_dir": ["-o", tmp_path],
            "empty": ["-o", ""], "gradcam_dir_is_file": ["--gradcam-dir", blocker]}[case]
    rc, out, err = predict([a, *args], models, capsys)
    assert rc == 2 and out == ""
    assert_one_line_errors(err)


def test_d08_write_failure_after_the_work_still_prints_the_report(tmp_path, models, capsys):
    a = good_png(tmp_path / "a.png")
    full = link(tmp_path / "full.json", "/dev/full")  # ENOSPC on write
    rc, out, err = predict([a, "-o", full], models, capsys)
    assert rc == 1
    assert json.loads(out)["predictions"]  # the work is not lost
    assert "full.json" in err or "/dev/full" in err
    assert_one_line_errors(err)
    assert full.is_symlink()


# --------------------------------------------------------------------------- 9 non-UTF-8 names
@pytest.mark.parametrize("fmt", ["json", "csv", "pdf"])
def test_d09_non_utf8_file_names_in_every_report(tmp_path, models, capsysbinary, fmt):
    p = non_utf8_name(tmp_path / "in")
    (tmp_path / "in" / "bad\udcff.npy").write_bytes(b"junk")
    args = [tmp_path / "in", "--format", fmt] + (["-o", tmp_path / "r.pdf"] if fmt == "pdf" else [])
    rc = main(["predict", *map(str, args), "--models-dir", str(models), "--model", "tiny_mass_calc_0",
               "--no-progress"])
    cap = capsysbinary.readouterr()
    assert rc == 3, cap.err
    assert b"Traceback" not in cap.err
    if fmt == "pdf":
        assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
        return
    text = cap.out.decode("utf-8")  # strict: valid UTF-8
    if fmt == "csv":
        assert "bad\\xff\\xfename.png" in text
    else:
        d = json.loads(text)
        assert Path(d["predictions"][0]["source"]).name == "bad\\xff\\xfename.png"
        assert "\\x" in d["source_encoding"]
    assert p.exists()


# --------------------------------------------------------------------------- 10 malformed cards
@pytest.mark.parametrize("case", ["deep", "files_int", "classes_int", "manifest_list", "manifest_deep",
                                  "card_fifo"])
def test_d10_malformed_cards_and_manifests_are_one_line_errors(tmp_path, case, capsys):
    root = models_dir_with(tmp_path / "models", ["mass_calc"], ensemble=False)
    b = root / "tiny_mass_calc_0"
    if case == "deep":
        (b / "card.json").write_text(deep_json())
    elif case == "files_int":
        edit_card(b, files={"model.keras": 12345})
    elif case == "classes_int":
        edit_card(b, classes=5)
    elif case == "manifest_list":
        (root / "MANIFEST.json").write_text(json.dumps({"schema": "mammo.manifest/2", "bundles": []}))
    elif case == "manifest_deep":
        (root / "MANIFEST.json").write_text(deep_json())
    else:
        (b / "card.json").unlink()
        fifo(b / "card.json")
    if case == "card_fifo":  # would block on open: child process under a timeout
        res = mammo_in_subprocess(["models", "verify", "--models-dir", root], timeout=HANG_S)
        assert res.returncode == 1 and b"Traceback" not in res.stderr
        return
    for argv in (["models", "verify", "--models-dir", str(root)], ["models", "list", "--models-dir", str(root)]):
        main(argv)
        cap = capsys.readouterr()
        assert "Traceback" not in cap.err
    good_png(tmp_path / "a.png")
    rc, out, err = predict([tmp_path / "a.png"], root, capsys)
    assert rc == 1 and out == ""
    assert_one_line_errors(err)


# --------------------------------------------------------------------------- 11 pixel limit
def test_d11_pixel_limit_checked_from_the_header(tmp_path, monkeypatch):
    from mammo_core.io import read_patches

    p = png_header_only(tmp_path / "huge.png", 16384, 16384)
    q = big_valid_png(tmp_path / "big.png")  # 105 Mpx, valid
    r = good_png(tmp_path / "ok.png")
    coll = read_patches([p, q, r])
    assert len(coll.patches) == 1
    assert [Path(e.source).name for e in coll.errors] == ["huge.png", "big.png"]
    assert all("pixels" in e.error and "limit" in e.error for e in coll.errors)
    monkeypatch.setenv("MAMMO_MAX_PIXELS", "10000")
    coll = read_patches([r])
    assert not coll.patches and "MAMMO_MAX_PIXELS" in coll.errors[0].error


# --------------------------------------------------------------------------- 13 small ones
def test_d13_newline_in_a_name_cannot_forge_a_line(tmp_path, models, capsys):
    newline_name(tmp_path / "in")
    (tmp_path / "in" / "y\nmammo: wrote z.json.npy").write_bytes(b"junk")
    rc, _, err = predict([tmp_path / "in", "-o", tmp_path / "r.json"], models, capsys)
    assert rc == 3
    assert [line for line in err.splitlines() if line.startswith("mammo: wrote")] == [
        line for line in err.splitlines() if line.startswith(f"mammo: wrote {tmp_path / 'r.json'}")]
    assert_one_line_errors(err)


def test_d13_absurd_rescale_slope_refused(tmp_path):
    from mammo_core.io import read_patches

    coll = read_patches([dicom_slope(tmp_path / "s.dcm")])
    assert not coll.patches and "RescaleSlope" in coll.errors[0].error


def test_d13_messages_say_what_is_wrong(tmp_path, capsys):
    from mammo_core.errors import BundleError
    from mammo_core.inference import load_bundle
    from mammo_core.io import load_patch_arrays, read_patches

    link(tmp_path / "a.png", tmp_path / "b.png")
    link(tmp_path / "b.png", tmp_path / "a.png")
    coll = read_patches([tmp_path / "a.png"])
    assert "symlink" in coll.errors[0].error and "no such" not in coll.errors[0].error
    d = tmp_path / "arrays"
    (d / "train_tensor.npy").mkdir(parents=True)
    np.save(d / "train_labels.npy", np.zeros(2, np.int64))
    from mammo_core.errors import DatasetError

    with pytest.raises(DatasetError, match="not a regular file"):
        load_patch_arrays(d)
    b = copy_bundle(tiny_bundle("mass_calc"), tmp_path / "bundles")
    from mammo_core.bundle import sha256_file

    (b / "model.keras").write_text("hello\n")
    edit_card(b, files={"model.keras": sha256_file(b / "model.keras")}, sha256=sha256_file(b / "model.keras"))
    with pytest.raises(BundleError, match="not a Keras"):
        load_bundle(b)


def test_d13_model_all_with_a_broken_card_names_the_card(tmp_path, own_models, capsys):
    (own_models / "tiny_mass_calc_0" / "card.json").write_text("{broken")
    good_png(tmp_path / "a.png")
    rc = main(["predict", str(tmp_path / "a.png"), "--models-dir", str(own_models), "--model", "all",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "card.json" in err and "not found" not in err


def test_d13_models_list_of_a_missing_folder_fails(tmp_path, capsys):
    assert main(["models", "list", "--models-dir", str(tmp_path / "nonexistent")]) == 1
    assert "nonexistent" in capsys.readouterr().err


def test_d13_stale_temp_files_cleaned_at_the_next_write(tmp_path):
    from mammo_core.atomic import atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=False).stdout.strip()
    stale = tmp_path / f".report.json.tmp-{dead}-abc123.json"
    stale.write_text("half")
    alive = tmp_path / f".report.json.tmp-{os.getpid()}-zzz.json"
    alive.write_text("in use")
    atomic_write_text(tmp_path / "report.json", "{}")
    assert not stale.exists() and alive.exists()


def test_d13_sigterm_leaves_no_temp_file(tmp_path):
    code = (
        "import os, signal, time, sys\n"
        "from mammo_core.cli import install_signal_handlers\n"
        "from mammo_core.atomic import atomic_path\n"
        "install_signal_handlers()\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('partial')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.json")], capture_output=True,
                         text=True, timeout=HANG_S, env=env(), check=False)
    assert res.returncode == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == [] and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- the sweep
def test_sweep_predict_over_every_fixture_prints_no_traceback(tmp_path, models):
    """`mammo predict` over a folder of every hostile input at once: exit 3, good files
    predicted, every bad one listed, no traceback, no stray stderr line, valid UTF-8 JSON."""
    d = tmp_path / "zoo"
    d.mkdir()
    good_png(d / "good.png")
    bad_float_npy(d / "bad_float.npy")
    formula_names(d / "formula")
    fifo(d / "fifo.png")
    link(d / "zero.dcm", "/dev/zero")
    link(d / "zero.png", "/dev/zero")
    link(d / "dangling.png", d / "nowhere.png")
    cycle_folder(d / "cycle")
    png_header_only(d / "huge.png", 16384, 16384)
    non_utf8_name(d / "names")
    newline_name(d / "names")
    dicom_slope(d / "slope.dcm")
    (d / "empty.png").write_bytes(b"")
    (d / "text.dcm").write_text("hello")
    res = mammo_in_subprocess(["predict", d, "--recursive", "--models-dir", models, "--model", "tiny_mass_calc_0",
                               "--no-progress"], timeout=10 * HANG_S)
    assert b"Traceback" not in res.stderr, res.stderr.decode(errors="replace")[-3000:]
    assert res.returncode == 3
    rep = json.loads(res.stdout.decode("utf-8"))
    assert len(rep["predictions"]) == 8  # good, one in cycle, 4 formula, 2 names
    bad = {Path(e["source"]).name for e in rep["errors"]}
    assert {"bad_float.npy", "fifo.png", "zero.dcm", "zero.png", "dangling.png", "huge.png", "slope.dcm",
            "empty.png", "text.dcm", "=cmd_bad.png"} <= bad
    for line in res.stderr.decode("utf-8", "replace").splitlines():
        assert line.startswith("mammo"), f"stray stderr line {line!r}"


# --------------------------------------------------------------------------- 12 builders
def test_d12_build_mias_lists_every_dropped_line_and_refuses_duplicates_and_outside_centres(tmp_path):
    import cv2

    from mammo_core.datasets.mias import build_mias
    from mammo_core.errors import DatasetError

    d = tmp_path / "mias"
    d.mkdir()
    rng = np.random.default_rng(3)
    assert cv2.imwrite(str(d / "mdb002.png"), rng.integers(50, 201, size=(1024, 1024)).astype(np.uint8))
    rows = ["header text", "mdb002 F CIRC M 500 524 48", "mdb002 F CIRC M 500 524 48",
            "mdb002 F CALC B 2000 524 20", "mdb002 F CALC B 500 -5 20", "mdb002 F", "MDB002 F CIRC B 1 2 3"]
    (d / "Info.txt").write_text("\n".join(rows) + "\n")
    res = build_mias(d, d / "Info.txt", tmp_path / "out", progress=False)
    assert sum(res.pairs.values()) == 1
    with open(tmp_path / "out" / "skipped.csv", newline="") as fh:
        skipped = {int(r["line"]): r["reason"] for r in csv.DictReader(fh)}
    assert skipped[3].startswith("duplicate of line 2")
    assert "outside" in skipped[4] and "outside" in skipped[5]
    assert "unparseable" in skipped[6] and "unparseable" in skipped[7]
    assert 1 not in skipped  # free header text is not a row
    # nothing cut: the message gives the reasons (no skipped.csv is written then)
    (d / "Info.txt").write_text("mdb002 F CALC B 2000 524 20\n")
    with pytest.raises(DatasetError, match="outside") as exc:
        build_mias(d, d / "Info.txt", tmp_path / "out2", progress=False)
    assert "skipped list" not in str(exc.value) and not (tmp_path / "out2").exists()


def test_d12_build_cbis_lists_bad_csvs_and_duplicate_rows(tmp_path):
    from mammo_core.datasets.cbis import build_cbis

    root, _ = make_tree(tmp_path)
    mass_test = root / "mass_case_description_test_set.csv"
    lines = mass_test.read_text().splitlines()
    mass_test.write_text("\n".join([*lines, lines[1]]) + "\n")  # the same abnormality twice
    (root / "calc_case_description_test_set.csv").write_text("patient,foo\nP_1,2\n")  # columns missing
    res = build_cbis(root, tmp_path / "out", progress=False)
    with open(tmp_path / "out" / "skipped.csv", newline="") as fh:
        skipped = list(csv.DictReader(fh))
    reasons = {(r["source_csv"], r["csv_row"]): r["reason"] for r in skipped}
    assert reasons[("mass_case_description_test_set.csv", "2")].startswith("duplicate of")
    assert "missing column" in reasons[("calc_case_description_test_set.csv", "")]
    assert sum(res.pairs.values()) == 3  # the duplicate made no second pair


def test_d13_dataset_info_floats_separated_and_range_checked(tmp_path, capsys):
    d = tmp_path / "arrays"
    d.mkdir()
    imgs = np.full((2, 150, 150), 0.123456789, np.float32)
    imgs[1] = 0.987654321
    np.save(d / "train_tensor.npy", imgs)
    np.save(d / "train_labels.npy", np.array([0, 1]))
    assert main(["dataset", "info", str(d)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("train"))
    assert "0.1235 " in row and "0.9877" in row
    imgs[1, 0, 0] = 1000.0
    np.save(d / "train_tensor.npy", imgs)
    assert main(["dataset", "info", str(d)]) == 1
    assert "[0, 1]" in capsys.readouterr().err
