"""Issue 26 (hardening round 3), each case written as the attack that found it: the cost of a
scan bounded before the work (N5), no breast found (N10), ``scan --bits`` (N9), ensemble weights
whose sum overflows (N6), non-finite answers in a report, tracebacks on the terminal and a PDF
on a full disk (N12), the scan output folder as one unit (N7, N13), numeric options at parse
time, progress when the output is not a terminal. Anything that could hang runs in a
subprocess with a timeout."""
from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from attack_fixtures import REPO, breast, env, good_png
from bundle_factory import models_dir_with
from filemakers import write_cv2

from mammo_core.cli import main

MODEL = "tiny_baseline_mass_calc_0"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return models_dir_with(tmp_path_factory.mktemp("models"), ["baseline_mass_calc"], ensemble=False)


@pytest.fixture(autouse=True)
def _log_here(tmp_path, monkeypatch):
    """The command's log file (tracebacks) in the test's folder, not in ~/.cache."""
    monkeypatch.setenv("MAMMO_NATIVE_LOG", str(tmp_path / "mammo.log"))


def scan(models, *argv):
    return main(["scan", *map(str, argv), "--models-dir", str(models), "--model", MODEL, "--no-progress"])


def assert_one_line_no_traceback(text: str) -> None:
    assert "Traceback" not in text and "internal error" not in text, text
    assert 'File "' not in text, text


def mammo_sub(args, tmp_path: Path, timeout: float = 300.0, fsize: int | None = None,
              extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m mammo_core ARGS`` under a timeout (and a file-size limit: a full disk)."""
    e = env()
    e["MAMMO_NATIVE_LOG"] = str(tmp_path / "sub.log")
    e.update(extra_env or {})

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([sys.executable, "-m", "mammo_core", *map(str, args)], capture_output=True,
                          timeout=timeout, env=e, cwd=REPO, check=False, preexec_fn=limits)


# =========================================================================== N5: scan cost
def test_cost_guard_refuses_after_a_warm_batch_with_the_estimate_and_the_option():
    from mammo_core.errors import MammoError
    from mammo_core.scan import CostGuard

    g = CostGuard(171_396, 30.0, "all_tissue.png")
    g.after_batch(64, 64, 9.0)          # the first batch (warm-up included): never refused on it
    with pytest.raises(MammoError) as exc:
        g.after_batch(128, 64, 3.5)     # 55 ms a window: 2.6 h
    msg = str(exc.value)
    assert "all_tissue.png" in msg and "2.6 h" in msg and "171,396 windows" in msg
    assert "--max-minutes 188" in msg and "\n" not in msg
    ok = CostGuard(600, 30.0, "small.png")
    ok.after_batch(64, 64, 9.0)
    ok.after_batch(128, 64, 3.5)        # 600 windows x 55 ms = 33 s: goes on


def test_a_one_per_mille_stride_is_refused_fast_with_the_estimate(models, tmp_path):
    """N5: `--stride 0.001` on a 480 px image: 148,996 windows of one-pixel stride (about 2.3 h
    with the bundled models). Refused after two batches, naming the option that allows it."""
    img = write_cv2(tmp_path / "small.png", np.full((480, 480), 180, np.uint8))
    r = mammo_sub(["scan", img, "-o", tmp_path / "o", "--models-dir", models, "--model", MODEL,
                   "--no-progress", "--window-px", "96", "--stride", "0.001", "--max-minutes", "0.02"],
                  tmp_path, timeout=300)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert_one_line_no_traceback(err)
    line = [ln for ln in err.splitlines() if "small.png" in ln]
    assert len(line) == 1 and "--max-minutes" in line[0] and "scanning it would take about" in line[0], err
    n = int(re.search(r"\(([\d,]+) windows", line[0]).group(1).replace(",", ""))
    assert 140_000 < n <= 148_996, line  # a 386 x 386 grid, less the tissue mask's edge
    assert not (tmp_path / "o" / "small_map.npy").exists()


@pytest.mark.slow
@pytest.mark.parametrize("side, opts, most", [
    (9984, ["--pixel-spacing", "0.2"], 171_396),
    (480, ["--window-px", "96", "--stride", "0.001"], 148_996)])
def test_the_reported_scans_are_refused_by_the_default_limit_with_the_bundled_models(tmp_path, side,
                                                                                     opts, most):
    """N5 as reported: a 10,000 px all-tissue PNG (120 kB) is 171,396 windows at the default
    window and stride, `--stride 0.001` on a 480 px image 148,996; with the bundled ensemble
    that is hours: refused in one line by the default 30 min limit, after two batches."""
    img = write_cv2(tmp_path / "all_tissue.png", np.full((side, side), 180, np.uint8))
    assert img.stat().st_size < 200_000
    r = mammo_sub(["scan", img, "-o", tmp_path / "o", "--no-progress", *opts], tmp_path, timeout=600)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert_one_line_no_traceback(err)
    n = int(re.search(r"\(([\d,]+) windows", err).group(1).replace(",", ""))
    assert 0.93 * most < n <= most and "--max-minutes" in err, err


def test_max_minutes_rejects_inf_nan_and_zero(tmp_path, capsys):
    for v in ("inf", "nan", "0", "-1"):
        with pytest.raises(SystemExit) as exc:
            main(["scan", "x.png", "-o", str(tmp_path / "o"), "--max-minutes", v])
        assert exc.value.code == 2 and "--max-minutes" in capsys.readouterr().err


# =========================================================================== N10, N9
def test_an_image_without_breast_is_an_error_saying_so(models, tmp_path, capsys):
    """N10: a black image scored no window and exited 0 with 'best candidate none'."""
    black = write_cv2(tmp_path / "black.png", np.zeros((600, 500), np.uint8))
    good = write_cv2(tmp_path / "good.png", breast())
    rc = scan(models, black, good, "-o", tmp_path / "o", "--window-px", "150", "--min-tissue", "0.5")
    err = capsys.readouterr().err
    assert rc == 3, err
    assert_one_line_no_traceback(err)
    lines = [ln for ln in err.splitlines() if "black.png" in ln]
    assert len(lines) == 1 and "no breast found" in lines[0], err
    rc = scan(models, black, "-o", tmp_path / "o2", "--window-px", "150")
    assert rc == 1 and "no breast found" in capsys.readouterr().err


def test_scan_bits_reads_a_12_bit_mammogram_in_a_16_bit_png(models, tmp_path, capsys):
    """N9: a 12-bit mammogram in a 16-bit PNG was scaled by 65535 (all dark: an empty map,
    exit 0). Without --bits it now fails saying no breast was found (and naming --bits); with
    --bits 12 it is scanned as its 8-bit export is."""
    img12 = breast(top=4095)
    png = write_cv2(tmp_path / "m12.png", img12)
    rc = scan(models, png, "-o", tmp_path / "a", "--window-px", "150", "--min-tissue", "0.5")
    err = capsys.readouterr().err
    assert rc == 1 and "no breast found" in err and "--bits" in err, err
    rc = scan(models, png, "-o", tmp_path / "b", "--window-px", "150", "--min-tissue", "0.5", "--bits", "12")
    err = capsys.readouterr().err
    assert rc == 0, err
    doc = json.loads((tmp_path / "b" / "m12_candidates.json").read_text())
    assert doc["map"]["windows"] > 0 and doc["candidates"]
    rc = scan(models, png, "-o", tmp_path / "c", "--window-px", "150", "--bits", "8")
    assert rc == 1 and "does not fit 8 bits" in capsys.readouterr().err


# =========================================================================== N6
def _spec(weights, factor_weights=None):
    from mammo_core.ensemble import ENSEMBLE_SCHEMA

    members = [{"name": f"m{i}", "sha256": f"{i}" * 64, "task": "baseline_mass_calc",
                "classes": ["baseline", "mass", "calcification"], "temperature": 1.0, "weight": w,
                "subset": None} for i, w in enumerate(weights)]
    members.append({"name": "mc", "sha256": "f" * 64, "task": "mass_calc",
                    "classes": ["mass", "calcification"], "temperature": 1.0, "weight": 1.0, "subset": None})
    return {"schema": ENSEMBLE_SCHEMA, "threshold": 0.2, "members": members,
            "fitted": {} if factor_weights is None else {"factor_weights": factor_weights}}


@pytest.mark.parametrize("weights, fw", [
    ([1e308, 1e308], None),                       # each finite, the sum overflows: 0 / inf
    ([1.7e308, 1.7e308, 1.7e308], None),
    ([1.0, 1.0], {"mass_given_abnormal": {"baseline_mass_calc": 1e308, "mass_calc": 1e308}}),
    ([1.0, 1.0], {"mass_given_abnormal": {"baseline_mass_calc": 0.0, "mass_calc": 0.0}}),
])
def test_ensemble_weights_whose_sum_overflows_are_refused_at_load(tmp_path, weights, fw):
    """N6: a re-signed spec with weights 1e308 + 1e308 (sum inf) silently zeroed a factor."""
    from mammo_core.ensemble import EnsembleSpec
    from mammo_core.errors import BundleError

    with pytest.raises(BundleError) as exc:
        EnsembleSpec.from_dict(_spec(weights, fw), tmp_path / "ensemble.json")
    msg = str(exc.value)
    assert "ensemble.json" in msg and "sum" in msg and "\n" not in msg
    EnsembleSpec.from_dict(_spec([1.0, 2.0]), tmp_path / "ensemble.json")  # sane weights load


# =========================================================================== non-finite answers
def test_a_nan_answer_is_an_error_for_that_patch_never_a_number_in_a_report(models, tmp_path,
                                                                            capsys, monkeypatch):
    """A model that answers NaN for one patch (broken weights, an overflowing ensemble): that
    patch is an error in the report (exit 3), the others are reported, no NaN anywhere."""
    import mammo_core.session as session_mod

    real = session_mod.predict_arrays

    calls = []

    def poisoned(models_, x, **kw):
        out = real(models_, x, **kw)
        calls.append(1)
        if len(calls) % 2 == 1:  # the first patch of each run (batches of one)
            for v in out.values():
                v[0] = np.nan
        return out
    monkeypatch.setattr(session_mod, "predict_arrays", poisoned)
    a = good_png(tmp_path / "a.png", seed=1)
    b = good_png(tmp_path / "b.png", seed=2)
    for fmt in ("json", "csv"):
        rep = tmp_path / f"r.{fmt}"
        rc = main(["predict", str(a), str(b), "--models-dir", str(models), "--model", MODEL,
                   "--no-progress", "--batch-size", "1", "--format", fmt, "-o", str(rep)])
        err = capsys.readouterr().err
        assert rc == 3, err
        assert_one_line_no_traceback(err)
        assert sum("a.png" in ln and "non-finite" in ln for ln in err.splitlines()) == 1, err
        text = rep.read_text()
        assert not re.search(r"(?<![a-z_])(nan|inf|infinity)(?![a-z_])", text, re.IGNORECASE), text
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [Path(p["source"]).name for p in doc["predictions"]] == ["b.png"]
    assert len(doc["errors"]) == 1 and "non-finite" in doc["errors"][0]["error"]


def test_a_nan_map_window_fails_the_image_not_the_map(models, tmp_path, capsys, monkeypatch):
    import mammo_core.session as session_mod

    real = session_mod.Session.p_abnormal

    def poisoned(self, *a, **kw):
        p = real(self, *a, **kw)
        p[:1] = np.nan
        return p
    monkeypatch.setattr(session_mod.Session, "p_abnormal", poisoned)
    good = write_cv2(tmp_path / "good.png", breast())
    rc = scan(models, good, "-o", tmp_path / "o", "--window-px", "150", "--min-tissue", "0.5")
    err = capsys.readouterr().err
    assert rc == 1 and "non-finite" in err, err
    assert not (tmp_path / "o" / "good_map.npy").exists()


# =========================================================================== tracebacks, full disk
def test_a_logged_traceback_stays_off_the_terminal_and_goes_to_the_log(tmp_path):
    """A library that logs its exception with the traceback (as pydicom does for a corrupt
    JPEG 2000 frame; pydicom's own records are log-file only): the terminal gets one line, the
    log file the traceback."""
    from mammo_core import logsetup

    term = io.StringIO()
    logsetup.configure("mammo", log_file=tmp_path / "x.log", stream=term)
    try:
        try:
            raise ValueError("bad JPEG 2000 codestream\nsecond line")
        except ValueError:
            logging.getLogger("somelib.decoder").error("Unable to decode pixel data", exc_info=True)
    finally:
        logsetup.configure("mammo")
    assert term.getvalue() == ("mammo: Unable to decode pixel data (ValueError: bad JPEG 2000 "
                               "codestream)\n")
    assert "Traceback" in (tmp_path / "x.log").read_text()


def test_an_unexpected_library_exception_is_one_line_and_logged(tmp_path, capsys, monkeypatch):
    """zlib.error (not an OSError) escaped the CLI as a traceback."""
    import zlib

    import mammo_core.commands.predict as pred

    def boom(args):
        raise zlib.error("Error -3 while decompressing data")
    monkeypatch.setattr(pred, "run", boom)
    monkeypatch.setenv("MAMMO_NATIVE_LOG", str(tmp_path / "cli.log"))
    rc = main(["predict", "x.png"])
    err = capsys.readouterr().err
    assert rc == 1 and "error: Error -3" in err and "cli.log" in err
    assert_one_line_no_traceback(err.replace("internal error", "x"))
    assert "Traceback" in (tmp_path / "cli.log").read_text()


def test_pdf_on_a_full_disk_keeps_the_old_report_and_the_predictions(models, tmp_path):
    """N12 (second half): a PDF report on a full disk ended in a zlib.error traceback and lost
    the predictions. Now: one line, the previous report untouched, the JSON on stdout. The
    full disk is a file-size limit (RLIMIT_FSIZE) on the child."""
    a = good_png(tmp_path / "a.png")
    rep = tmp_path / "report.pdf"
    rep.write_bytes(b"%PDF previous report")
    r = mammo_sub(["predict", a, "--models-dir", models, "--model", MODEL, "--no-progress",
                   "--format", "pdf", "-o", rep], tmp_path, timeout=300, fsize=6000)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert_one_line_no_traceback(err)
    assert "zlib" not in err and "report.pdf" in err and "follows on stdout" in err, err
    assert rep.read_bytes() == b"%PDF previous report"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report.pdf.tmp")]
    doc = json.loads(r.stdout.decode())
    assert [Path(p["source"]).name for p in doc["predictions"]] == ["a.png"]


def test_pdf_writer_turns_a_late_zlib_error_into_an_oserror(tmp_path, monkeypatch):
    """The writer itself (any caller: the viewer's export too): a zlib.error while the PDF is
    closed after a failed write is an OSError naming the file; the old file stays."""
    import errno
    import zlib

    from matplotlib.backends import backend_pdf

    from mammo_core.report import PredictionRun, write_pdf

    def full(self, *a, **kw):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise zlib.error("Error -2 while flushing: inconsistent stream state") from None
    monkeypatch.setattr(backend_pdf.PdfPages, "savefig", full)
    target = tmp_path / "r.pdf"
    target.write_bytes(b"old")
    run = PredictionRun([], {"created": "now", "software": {"version": "x"}, "models": []})
    with pytest.raises(OSError) as exc:
        write_pdf(target, run)
    assert exc.value.filename == str(target) and target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_scan_on_a_full_disk_fails_in_one_line_and_keeps_the_folder_consistent(models, tmp_path):
    """A scan whose map picture cannot be written (a full disk: RLIMIT_FSIZE on the child): one
    line for that image, no traceback, no temporary left, the earlier image's rows kept in a
    candidates.csv rebuilt from the JSON files, the failed image's JSON never written."""
    out = tmp_path / "o"
    first = write_cv2(tmp_path / "first.png", breast())
    assert main(["scan", str(first), "-o", str(out), "--models-dir", str(models), "--model", MODEL,
                 "--no-progress", "--window-px", "150", "--min-tissue", "0.5", "--top-k", "1"]) == 0
    before = (out / "candidates.csv").read_text()
    big = write_cv2(tmp_path / "big.png", breast((1200, 1000), seed=4))
    r = mammo_sub(["scan", big, "-o", out, "--models-dir", models, "--model", MODEL, "--no-progress",
                   "--window-px", "150", "--min-tissue", "0.5", "--top-k", "1"], tmp_path,
                  timeout=300, fsize=4096)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert_one_line_no_traceback(err)
    assert sum("big.png" in ln for ln in err.splitlines()) == 1, err
    assert not (out / "big_candidates.json").exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    assert (out / "candidates.csv").read_text() == before


# =========================================================================== N7, N13: the folder
def test_a_symlink_planted_in_the_output_folder_is_never_written_through(models, tmp_path, capsys):
    """N13: a symlink named like an output (or candidates.csv) pointing outside the folder: the
    file outside is not touched; that image fails in one line; the rest is written."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "o"
    out.mkdir()
    os.symlink(victim, out / "bad_map.png")
    good = write_cv2(tmp_path / "good.png", breast())
    bad = write_cv2(tmp_path / "bad.png", breast(seed=1))
    rc = scan(models, bad, good, "-o", out, "--window-px", "150", "--min-tissue", "0.5")
    err = capsys.readouterr().err
    assert rc == 3, err
    assert_one_line_no_traceback(err)
    assert sum("bad.png" in ln and "symbolic link" in ln for ln in err.splitlines()) == 1, err
    assert victim.read_text() == "keep me" and os.path.islink(out / "bad_map.png")
    assert (out / "good_candidates.json").is_file()
    # candidates.csv planted as a link: not written through either
    victim2 = tmp_path / "victim2.txt"
    victim2.write_text("keep me too")
    (out / "candidates.csv").unlink()
    os.symlink(victim2, out / "candidates.csv")
    rc = scan(models, good, "-o", out, "--window-px", "150", "--min-tissue", "0.5")
    err = capsys.readouterr().err
    assert rc == 3 and "candidates.csv" in err, err
    assert victim2.read_text() == "keep me too"


@pytest.mark.parametrize("sub", ["", "mammo-harden26-never"])
def test_output_folder_through_a_symlink_to_dev_is_refused(tmp_path, capsys, sub):
    """N13: `-o link` with link -> /dev wrote regular files among the devices."""
    link = tmp_path / "devlink"
    os.symlink("/dev", link)
    target = link / sub if sub else link
    rc = main(["scan", "x.png", "-o", str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and "/dev" in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.lexists("/dev/mammo-harden26-never")
    for special in ("/dev/null", "/proc/self"):
        assert main(["scan", "x.png", "-o", special]) == 2
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["scan", "x.png", "-o", str(fifo)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_candidates_csv_is_rebuilt_from_the_folders_json_files(models, tmp_path, capsys):
    """N7: a failed run emptied candidates.csv, a killed one left it stale. Now it is rebuilt
    from the folder's JSON files: a later run that fails, or a deleted CSV, keeps every
    image's rows; a planted JSON that is not ours is left out with one line."""
    out = tmp_path / "o"
    a = write_cv2(tmp_path / "a.png", breast())
    b = write_cv2(tmp_path / "b.png", breast(seed=3))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert scan(models, a, "-o", out, "--window-px", "150", "--min-tissue", "0.5", "--top-k", "2") == 0

    def sources():
        text = (out / "candidates.csv").read_text()
        return sorted({Path(line.split(",")[0]).name for line in text.splitlines()[1:]
                       if line and not line.startswith("#")})
    assert sources() == ["a.png"]
    assert scan(models, broken, "-o", out, "--window-px", "150") == 1
    assert sources() == ["a.png"]                    # a failed run keeps the earlier rows
    (out / "candidates.csv").unlink()                # a run killed before it wrote the CSV
    (out / "evil_candidates.json").write_text('{"schema": "mammo.candidates/1", "source": "=1+1", '
                                              '"candidates": [{"x": NaN}]}')
    capsys.readouterr()
    assert scan(models, b, "-o", out, "--window-px", "150", "--min-tissue", "0.5", "--top-k", "2") == 0
    err = capsys.readouterr().err
    assert sources() == ["a.png", "b.png"]
    assert sum("evil_candidates.json" in ln for ln in err.splitlines()) == 1, err
    assert_one_line_no_traceback(err)


def test_a_second_scan_into_a_locked_folder_exits_1_at_once(models, tmp_path, capsys):
    """N7: two concurrent scans into one folder replaced each other's results. The second one
    now exits 1 in one line (it does not wait), before loading any model."""
    out = tmp_path / "o"
    out.mkdir()
    fd = os.open(out / ".mammo-scan.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a scan in progress
    try:
        good = write_cv2(tmp_path / "good.png", breast())
        rc = scan(models, good, "-o", out, "--window-px", "150")
        err = capsys.readouterr().err
    finally:
        os.close(fd)
    assert rc == 1 and "another mammo scan" in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "good_map.npy").exists()
    assert scan(models, good, "-o", out, "--window-px", "150", "--min-tissue", "0.5") == 0  # lock gone


def test_a_killed_runs_temporaries_are_cleaned_and_never_followed(models, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    stale = out / ".good_map.png.tmp-999999999-abc"
    stale.write_bytes(b"half")
    good = write_cv2(tmp_path / "good.png", breast())
    assert scan(models, good, "-o", out, "--window-px", "150", "--min-tissue", "0.5") == 0
    assert not stale.exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


# =========================================================================== numeric options
@pytest.mark.parametrize("argv", [
    ["scan", "x.png", "-o", "o", "--stride", "inf"], ["scan", "x.png", "-o", "o", "--stride", "nan"],
    ["scan", "x.png", "-o", "o", "--stride", "-0.5"], ["scan", "x.png", "-o", "o", "--stride", "1.5"],
    ["scan", "x.png", "-o", "o", "--window-mm", "inf"], ["scan", "x.png", "-o", "o", "--window-mm", "1e999"],
    ["scan", "x.png", "-o", "o", "--window-px", "0"], ["scan", "x.png", "-o", "o", "--window-px", "1e3"],
    ["scan", "x.png", "-o", "o", "--pixel-spacing", "nan"], ["scan", "x.png", "-o", "o", "--min-tissue", "nan"],
    ["scan", "x.png", "-o", "o", "--min-tissue", "1.1"], ["scan", "x.png", "-o", "o", "--top-k", "-1"],
    ["scan", "x.png", "-o", "o", "--batch-size", "0"], ["scan", "x.png", "-o", "o", "--batch-size", "9" * 5000],
    ["scan", "x.png", "-o", "o", "--bits", "17"], ["predict", "x.png", "--batch-size", "nan"],
    ["predict", "x.png", "--batch-size", "-3"], ["predict", "x.png", "--bits", "inf"],
    ["dataset", "build-mias", "--images", "i", "--info", "f", "--out", "o", "--test-fraction", "nan"],
    ["dataset", "build-mias", "--images", "i", "--info", "f", "--out", "o", "--jitter", "-1"],
    ["dataset", "build-mias", "--images", "i", "--info", "f", "--out", "o", "--seed", "-1"],
])
def test_numeric_options_reject_inf_nan_and_out_of_range_at_parse_time(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert_one_line_no_traceback(err)
    assert err.strip().splitlines()[-1].startswith("mammo ") and "error: argument" in err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["mammo.log"])  # nothing made


# =========================================================================== progress
def test_heartbeat_off_a_terminal_gives_counts_and_an_estimate():
    from mammo_core.progress import Progress

    buf = io.StringIO()
    with Progress(2000, "predicting", "patch", stream=buf, tty=False, every=0.05) as p:
        p.update_to(500)
        for _ in range(400):  # wait for a beat (no timing asserted)
            if buf.getvalue():
                break
            time.sleep(0.05)
    lines = buf.getvalue().splitlines()
    assert lines and lines[0].startswith("mammo: predicting: 500 of 2,000 patches (25 %)")
    assert "elapsed" in lines[0] and "left" in lines[0]
    assert lines[-1].endswith(", done")
    failed = io.StringIO()
    with pytest.raises(RuntimeError), Progress(10, "x.png", "window", stream=failed, tty=False, every=0):
        raise RuntimeError("refused")
    assert "done" not in failed.getvalue()  # a failed run never ends with "done"
    quiet = io.StringIO()
    with Progress(10, "predicting", "patch", stream=quiet, tty=False, disable=True) as p:
        p.update_to(5)
    assert quiet.getvalue() == ""


def test_predict_off_a_terminal_ends_with_a_heartbeat_line(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAMMO_HEARTBEAT_S", "0")
    a = good_png(tmp_path / "a.png")
    rc = main(["predict", str(a), "--models-dir", str(models), "--model", MODEL, "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "mammo: predicting: 1 of 1 patch (100 %)" in err and "\r" not in err, err
