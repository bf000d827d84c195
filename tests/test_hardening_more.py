"""Attacks on what issue 11 left open, each written as the attack and asserting the contract
(one line naming the file, the rest of the work goes on, no traceback, nothing hangs, inputs
never overwritten). Whole mammograms and ``mammo scan`` first."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from attack_fixtures import breast, dicom_pixel_spacing, mammo_in_subprocess, newline_name, non_utf8_name
from bundle_factory import models_dir_with
from filemakers import write_cv2, write_dicom

from mammo_core.cli import main
from mammo_core.mammogram import read_mammogram
from mammo_core.scan import ScanSettings, scan_mammogram
from mammo_core.session import Session

MODEL = "tiny_baseline_mass_calc_0"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return models_dir_with(tmp_path_factory.mktemp("models"), ["baseline_mass_calc"], ensemble=False)


@pytest.fixture(scope="module")
def session(models):
    s = Session(models)
    assert s.load([MODEL]) == []
    return s


def scan(models, *argv):
    return main(["scan", *map(str, argv), "--models-dir", str(models), "--model", MODEL, "--no-progress"])


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and "internal error" not in text, text


# --------------------------------------------------------------------------- bit depth
def test_a_12_bit_dicom_and_its_8_bit_png_give_the_same_scan_map(session, tmp_path):
    """A dark 12-bit mammogram (brightest pixel under 1024) is scaled by 4095 like predict does,
    not by a full scale guessed from its brightest pixel (which said 1023 and made it 4x brighter)."""
    img12 = np.minimum(breast(top=2400), 1000).astype(np.uint16)   # 12-bit values, max 1000
    assert 700 < img12.max() < 1024
    dcm = write_dicom(tmp_path / "m.dcm", img12, bits_stored=12)
    png = write_cv2(tmp_path / "m.png", np.rint(img12 * (255 / 4095)).astype(np.uint8))
    settings = ScanSettings(window_px=150, min_tissue=0.5)
    a = read_mammogram(dcm)
    b = read_mammogram(png)
    assert a.bits == 12 and a.full_scale == 4095 and b.full_scale == 255
    ra, rb = scan_mammogram(a, session, settings), scan_mammogram(b, session, settings)
    assert len(ra.p_abnormal) > 5
    np.testing.assert_array_equal(np.isnan(ra.map), np.isnan(rb.map))
    ok = ~np.isnan(ra.map)
    assert np.max(np.abs(ra.map[ok] - rb.map[ok])) < 0.05


# --------------------------------------------------------------------------- odd images
def test_scan_refuses_images_smaller_than_the_window_and_goes_on(models, tmp_path):
    """1 x 100000 px (scored as 100,000 one-pixel windows blown up to 150 x 150 before), 5 x 5
    and 1 x 1 px images: each refused in one line naming it; the good image is scanned."""
    thin = write_cv2(tmp_path / "thin.png", np.full((1, 100_000), 200, np.uint8))
    tiny = write_cv2(tmp_path / "tiny.png", breast((5, 5), 255, np.uint8))
    one = write_cv2(tmp_path / "one.png", np.full((1, 1), 200, np.uint8))
    good = write_cv2(tmp_path / "good.png", breast())
    out = tmp_path / "out"
    r = mammo_in_subprocess(["scan", thin, tiny, one, good, "-o", out, "--models-dir", models,
                             "--model", MODEL, "--no-progress", "--window-px", "150"], timeout=300)
    err = r.stderr.decode()
    assert r.returncode == 3, err
    assert_no_traceback(err)
    for name in ("thin.png", "tiny.png", "one.png"):
        assert sum(name in line and "smaller than" in line for line in err.splitlines()) == 1, err
    assert (out / "good_map.npy").is_file() and not (out / "thin_map.npy").exists()


def test_scan_refuses_a_stride_that_would_score_millions_of_windows(models, tmp_path):
    """A 1-px stride over a 2000 x 2000 image is ~4 million windows (hours on a CPU): refused at
    once with the fix in the message, not run."""
    big = write_cv2(tmp_path / "big.png", breast((2000, 2000), 255, np.uint8))
    r = mammo_in_subprocess(["scan", big, "-o", tmp_path / "o", "--models-dir", models,
                             "--model", MODEL, "--no-progress", "--window-px", "8", "--stride", "0.01"],
                            timeout=300)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert_no_traceback(err)
    assert "big.png" in err and "larger stride" in err


def test_scan_option_values_that_break_the_arithmetic_are_usage_errors(models, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = write_cv2(tmp_path / "good.png", breast())
    for opts in (["--window-mm", "inf", "--pixel-spacing", "0.1"], ["--window-mm", "nan"],
                 ["--pixel-spacing", "inf"], ["--pixel-spacing", "1e300"], ["--pixel-spacing", "0"],
                 ["--map-members", ","], ["--map-members", " , "]):
        try:  # argparse's own usage error (SystemExit 2, since issue 26) or the command's
            rc = scan(models, good, "-o", tmp_path / "o", *opts)
        except SystemExit as exc:
            rc = exc.code
        err = capsys.readouterr().err
        assert rc == 2, (opts, err)
        assert_no_traceback(err)
    rc = scan(models, good, "-o", "", "--window-px", "150")
    err = capsys.readouterr().err
    assert rc == 2 and "-o" in err
    assert not (tmp_path / "good_map.npy").exists()


def test_a_window_that_rounds_under_8_px_is_refused_not_silently_enlarged(models, tmp_path, capsys):
    good = write_cv2(tmp_path / "good.png", breast())
    rc = scan(models, good, "-o", tmp_path / "o", "--window-mm", "1e-6", "--pixel-spacing", "0.1")
    err = capsys.readouterr().err
    assert rc == 1 and "good.png" in err and "under 8 px" in err


@pytest.mark.parametrize("value", [b"abc", b"0\\0", b"-0.1\\-0.1", b"nan\\nan", b"1e308\\1e308",
                                   b"inf\\inf", b"0.1\\4"])
def test_dicom_pixel_spacing_garbage_is_named_not_used(tmp_path, value):
    """Garbage, zero, negative, NaN, huge and non-square PixelSpacing: the pixel size is unknown
    and the message quotes the header value (it said 'no DICOM PixelSpacing' before)."""
    m = read_mammogram(dicom_pixel_spacing(tmp_path / "sp.dcm", value))
    assert m.spacing_mm is None
    assert "PixelSpacing" in m.spacing_source and m.spacing_source.startswith("unknown (")
    with pytest.raises(Exception) as exc:
        scan_mammogram(m, None, ScanSettings())  # refused before any model is needed
    assert "PixelSpacing" in str(exc.value) and "sp.dcm" in str(exc.value)


# --------------------------------------------------------------------------- outputs
def test_scan_into_the_input_folder_never_overwrites_an_input(models, tmp_path, capsys):
    """`mammo scan a.png a_map.png -o <their folder>`: a.png's map would be written over the
    input a_map.png (it was, before): refused for that image, the other is scanned."""
    a = write_cv2(tmp_path / "a.png", breast())
    am = write_cv2(tmp_path / "a_map.png", breast(seed=1))
    before = am.read_bytes()
    rc = scan(models, a, am, "-o", tmp_path, "--window-px", "150")
    err = capsys.readouterr().err
    assert am.read_bytes() == before
    assert rc == 3 and "overwrite an input" in err
    assert (tmp_path / "a_map_map.npy").is_file()
    assert scan(models, a, tmp_path / "candidates.csv", "-o", tmp_path, "--window-px", "150") == 2


def test_scan_keeps_every_output_when_stems_collide(models, tmp_path, capsys):
    """good.png twice and good_2.png: three sets of outputs (the second good.png's outputs were
    overwritten by good_2.png's before)."""
    g = write_cv2(tmp_path / "good.png", breast())
    g2 = write_cv2(tmp_path / "good_2.png", breast(seed=2))
    out = tmp_path / "o"
    assert scan(models, g, g, g2, "-o", out, "--window-px", "150") == 0
    capsys.readouterr()
    assert len(list(out.glob("*_map.npy"))) == 3
    srcs = [json.loads(p.read_text())["source"] for p in out.glob("*_candidates.json")]
    assert sorted(srcs) == sorted([str(g), str(g), str(g2)])


def test_scan_survives_hostile_file_names(models, tmp_path, capsys, monkeypatch):
    """Non-UTF-8, newline and formula file names: every image scanned, the CSV and JSON are
    valid UTF-8 (the CSV was lost to a UnicodeEncodeError before), no forged stderr line, no
    formula cell."""
    monkeypatch.chdir(tmp_path)
    bad = non_utf8_name(tmp_path / "in")
    nl = newline_name(tmp_path / "in")
    for p in (bad, nl):  # full-size mammograms under the attack names
        cv2.imencode(".png", breast())[1].tofile(os.fsencode(str(p)))
    formula = write_cv2(tmp_path / "=HYPERLINK(1).png", breast())
    rc = scan(models, bad, nl, formula.name, "-o", tmp_path / "o", "--window-px", "150")
    err = capsys.readouterr().err
    assert rc == 0, err
    assert not any(line.startswith("mammo: wrote forged") for line in err.splitlines())
    raw = (tmp_path / "o" / "candidates.csv").read_bytes()
    text = raw.decode("utf-8")
    assert "\\xff\\xfe" in text and "'=HYPERLINK(1).png" in text
    assert not any(line.startswith("=") for line in text.splitlines())
    for p in (tmp_path / "o").glob("*_candidates.json"):
        json.loads(p.read_bytes().decode("utf-8"))


# --------------------------------------------------------------------------- ensembles
def _spec_dict():
    from mammo_core.ensemble import ENSEMBLE_SCHEMA

    return {"schema": ENSEMBLE_SCHEMA, "threshold": 0.2, "fitted": {}, "members": [
        {"name": "a", "sha256": "0" * 64, "task": "mass_calc", "classes": ["mass", "calcification"],
         "temperature": 1.0, "weight": 1.0, "subset": None},
        {"name": "b", "sha256": "1" * 64, "task": "baseline_mass_calc",
         "classes": ["baseline", "mass", "calcification"], "temperature": 1.0, "weight": 1.0, "subset": None}]}


@pytest.mark.parametrize("field, value", [
    ("weight", float("nan")), ("weight", float("inf")), ("weight", -5.0), ("weight", 0.0),
    ("temperature", 1e-300), ("temperature", float("nan")), ("temperature", float("inf")),
    ("temperature", 1e300), ("threshold", float("nan")), ("threshold", -1.0), ("threshold", float("inf")),
    ("factor_weights", {"baseline": {"x": -1.0}}), ("factor_weights", {"baseline": {"x": float("nan")}}),
    ("factor_weights", [1]), ("fitted", [1, 2])])
def test_ensemble_spec_numbers_that_break_the_arithmetic_are_refused(tmp_path, field, value):
    """NaN / inf / negative weights, absurd temperatures (1e-300 gave NaN probabilities, a
    negative weight probabilities outside [0, 1]) and thresholds: a BundleError naming the spec."""
    from mammo_core.ensemble import EnsembleSpec
    from mammo_core.errors import BundleError

    d = _spec_dict()
    if field in ("weight", "temperature"):
        d["members"][0][field] = value
    elif field == "factor_weights":
        d["fitted"] = {"factor_weights": value}
    else:
        d[field] = value
    with pytest.raises(BundleError) as exc:
        EnsembleSpec.from_dict(d, tmp_path / "ensemble.json")
    assert "ensemble.json" in str(exc.value) and "\n" not in str(exc.value)
    EnsembleSpec.from_dict(_spec_dict(), tmp_path / "ensemble.json")  # the untouched spec loads


def test_resigned_ensemble_with_a_negative_weight_is_refused_by_predict(tmp_path, capsys):
    """The owner of a models folder edits ensemble.json (weight -5), fixes the card's hash and
    regenerates the MANIFEST: predict refuses the spec in one line (it printed probabilities
    outside [0, 1] before; NaN weights ended in an internal error)."""
    from attack_fixtures import good_png

    from mammo_core.bundle import sha256_file

    root = models_dir_with(tmp_path / "m", ["mass_calc", "baseline_mass_calc"], ensemble=True)
    spec = root / "ensemble" / "ensemble.json"
    d = json.loads(spec.read_text())
    d["members"][0]["weight"] = -5.0
    spec.write_text(json.dumps(d))
    card = json.loads((root / "ensemble" / "card.json").read_text())
    card["files"] = {k: sha256_file(root / "ensemble" / k) for k in card["files"]}
    if "sha256" in card:
        card["sha256"] = card["files"].get("ensemble.json", card["sha256"])
    (root / "ensemble" / "card.json").write_text(json.dumps(card))
    assert main(["models", "manifest", "--models-dir", str(root)]) == 0
    capsys.readouterr()
    rc = main(["predict", str(good_png(tmp_path / "a.png")), "--models-dir", str(root), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1 and cap.out == "" and "weight -5.0" in cap.err and "ensemble.json" in cap.err
    assert_no_traceback(cap.err)


# --------------------------------------------------------------------------- empty paths
@pytest.mark.parametrize("argv", [
    ["predict", "A", "--gradcam-dir", ""], ["predict", "A", "-o", ""], ["predict", "A", "--models-dir", ""],
    ["models", "list", "--models-dir", ""], ["dataset", "info", ""]])
def test_an_empty_path_argument_is_a_usage_error_not_the_current_folder(tmp_path, monkeypatch, capsys, argv):
    """`--gradcam-dir ""` (an unset shell variable) wrote the heatmaps into the current folder."""
    from attack_fixtures import good_png

    monkeypatch.chdir(tmp_path)
    a = good_png(tmp_path / "a.png")
    try:  # argparse's own usage error (SystemExit 2) or the command's (return 2)
        rc = main([str(a) if x == "A" else x for x in argv])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2 and "empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_report_file_equal_to_the_gradcam_folder_is_refused_before_work(tmp_path, capsys):
    from attack_fixtures import good_png

    a = good_png(tmp_path / "a.png")
    g = tmp_path / "g"
    rc = main(["predict", str(a), "--gradcam-dir", str(g), "-o", str(g), "--models-dir", str(tmp_path)])
    assert rc == 2 and "--gradcam-dir" in capsys.readouterr().err


# --------------------------------------------------------------------------- builders
def test_build_mias_reads_a_bom_first_row_and_refuses_non_positive_radii(tmp_path):
    """An Info.txt saved with a UTF-8 BOM lost its first row silently (read as header text); a
    negative or zero radius was cut as a labelled pair."""
    import csv

    from mammo_core.datasets.mias import build_mias

    d = tmp_path / "mias"
    d.mkdir()
    rng = np.random.default_rng(3)
    for i in (1, 2, 3):
        img = np.zeros((1024, 1024), np.uint8)
        img[:, :700] = rng.integers(60, 200, size=(1024, 700))
        assert cv2.imwrite(str(d / f"mdb{i:03d}.png"), img)
    rows = ["mdb001 G CIRC B 300 500 40", "mdb002 G CIRC M 300 500 -40", "mdb003 G CALC B 300 500 0"]
    (d / "Info.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    res = build_mias(d, d / "Info.txt", tmp_path / "out", progress=False)
    assert sum(res.pairs.values()) == 1
    with open(tmp_path / "out" / "skipped.csv", newline="") as fh:
        skipped = {int(r["line"]): r["reason"] for r in csv.DictReader(fh)}
    assert set(skipped) == {2, 3} and all("radius" in why for why in skipped.values())


# --------------------------------------------------------------------------- model cards
@pytest.mark.parametrize("metrics", [{"auc": 10 ** 400}, {"auc": 7.5}, {"auc": -1},
                                     {"auc": 0.8, "auc_ci95": [10 ** 400, 0.9]}, {"auc": 0.8, "n": -5},
                                     {"auc": 0.8, "n": 10 ** 400}])
def test_card_metrics_beyond_float_range_or_outside_0_1_are_unknown_not_a_crash(tmp_path, capsys, metrics):
    """`mammo models list` ended in an OverflowError traceback on a card AUC of 10**400; an AUC
    of 7.5 was shown as a held-out AUC."""
    from attack_fixtures import edit_card
    from bundle_factory import copy_bundle, tiny_bundle

    from mammo_core.bundle import read_card
    from mammo_core.confidence import quality_from_card
    from mammo_core.errors import BundleError

    b = copy_bundle(tiny_bundle("mass_calc"), tmp_path / "m")
    edit_card(b, metrics=metrics)
    try:  # a number beyond float range is the card's error, said in one line when it is read
        card = read_card(b).card
    except BundleError as err:
        assert "card metrics" in str(err) and "\n" not in str(err)
    else:  # an AUC outside [0, 1] or a negative n: read, but never shown as a held-out AUC
        q = quality_from_card(card)
        assert q.auc in (None, 0.8) and (q.n is None or q.n >= 0) and q.ci95 is None
    rc = main(["models", "list", "--models-dir", str(tmp_path / "m"), "--format", "json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert_no_traceback(cap.err)


# --------------------------------------------------------------------------- the viewer
VIEWER_READ = r"""
import json, os, sys
from PyQt6.QtCore import QCoreApplication, QTimer
from app.controllers.patches import PatchController
app = QCoreApplication([])
c = PatchController(None)
got = {}
def done(coll):
    got["patches"] = [os.fsencode(p.source).hex() for p in coll.patches]
    got["errors"] = [[os.fsencode(e.source).hex(), str(e.error)] for e in coll.errors]
    app.quit()
def error(msg, title, tb):
    got["error"] = msg
    app.quit()
c.patchesRead.connect(done)
c.errorOccurred.connect(error)
c.read([os.fsdecode(bytes.fromhex(a)) for a in sys.argv[1:]])
QTimer.singleShot(90_000, app.quit)
app.exec()
c.shutdown(5)
print("RESULT", json.dumps(got))
"""


def test_viewer_open_of_every_attack_fixture_lists_each_bad_file_and_reads_the_good(tmp_path):
    """The viewer's Open (controller.read in a worker) on the attack fixtures at once: the good
    patch is read, each bad file is one error line, nothing blocks (a FIFO, /dev/zero)."""
    import subprocess
    import sys

    import attack_fixtures as af

    good = af.good_png(tmp_path / "good.png")
    bad = [af.bad_float_npy(tmp_path / "float.npy"), af.fifo(tmp_path / "fifo.png"),
           af.link(tmp_path / "zero.dcm", "/dev/zero"), af.link(tmp_path / "self.png", "self.png"),
           af.png_header_only(tmp_path / "huge.png", 60000, 60000), af.non_utf8_name(tmp_path / "n"),
           af.dicom_slope(tmp_path / "slope.dcm")]
    (tmp_path / "empty.png").write_bytes(b"")
    bad.append(tmp_path / "empty.png")
    args = [os.fsencode(str(p)).hex() for p in [good, *bad]]
    r = subprocess.run([sys.executable, "-c", VIEWER_READ, *args], capture_output=True, timeout=150,
                       env=af.env(), cwd=af.REPO, check=False, preexec_fn=af._limit_memory(4))
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0 and "Traceback" not in r.stderr.decode("utf-8", "replace"), r.stderr[-2000:]
    got = json.loads(out.split("RESULT", 1)[1])
    assert "error" not in got, got
    bad_hex = {os.fsencode(str(p)).hex() for p in bad}
    good_hex = os.fsencode(str(good)).hex()
    assert got["patches"].count(good_hex) == 1
    err_sources = [s for s, _ in got["errors"]]
    # the non-UTF-8 name is a good patch: read, not an error
    nonutf8 = os.fsencode(str(bad[5])).hex()
    assert set(err_sources) == bad_hex - {nonutf8} and len(err_sources) == len(set(err_sources))
    assert all("\n" not in why for _, why in got["errors"])


def test_scan_multiframe_and_undecodable_compressed_dicom_say_what_they_are(tmp_path):
    """A multi-frame DICOM told a CLI user to 'read it with read_patches'; a JPEG 2000 DICOM
    without a decoder gave pydicom's 'exceptions were raised by all available plugins:'."""
    import pydicom
    from pydicom.encaps import encapsulate

    from mammo_core.errors import PatchReadError

    mf = write_dicom(tmp_path / "mf.dcm", np.stack([breast()] * 3))
    with pytest.raises(PatchReadError) as exc:
        read_mammogram(mf)
    assert "3 frames" in str(exc.value) and "read_patches" not in str(exc.value)
    j2k = write_dicom(tmp_path / "j2k.dcm", breast())
    ds = pydicom.dcmread(j2k)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 100])
    ds.save_as(j2k, enforce_file_format=True)
    with pytest.raises(PatchReadError) as exc:
        read_mammogram(j2k)
    assert "compressed DICOM" in str(exc.value) and "j2k.dcm" in str(exc.value)


# --------------------------------------------------------------------------- model archives
def _resigned_bundle(root, name, mutate):
    """A copy of a tiny bundle whose model.keras members are changed by ``mutate(dict)``, then
    re-hashed in its card (the owner's own, consistent, bundle)."""
    import shutil
    import zipfile

    from bundle_factory import tiny_bundle

    from mammo_core.bundle import sha256_file

    b = root / name
    shutil.copytree(tiny_bundle("mass_calc"), b)
    with zipfile.ZipFile(b / "model.keras") as zf:
        items = {n: zf.read(n) for n in zf.namelist()}
    mutate(items)
    (b / "model.keras").unlink()
    with zipfile.ZipFile(b / "model.keras", "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in items.items():
            zf.writestr(n, data)
    card = json.loads((b / "card.json").read_text())
    card["name"] = name
    card["files"] = {k: sha256_file(b / k) for k in card["files"]}
    card["sha256"] = card["files"]["model.keras"]
    (b / "card.json").write_text(json.dumps(card))
    return b


def _lambda(items):
    c = json.loads(items["config.json"])
    layer = c["config"]["layers"][1]
    layer.update({"class_name": "Lambda", "module": "keras.layers", "config": {
        "name": layer.get("name", "lam"), "function": {"class_name": "__lambda__", "config": {
            "code": "eval", "defaults": None, "closure": None}}}})
    items["config.json"] = json.dumps(c).encode()


@pytest.mark.parametrize("attack, words", [
    (_lambda, "Lambda"),
    (lambda items: items.__setitem__("bomb.bin", b"\0" * (64 << 20)), "zip bomb"),
    (lambda items: items.__setitem__("../../../../tmp/mammo_pwned", b"x"), "outside the archive"),
    (lambda items: items.__setitem__("config.json", ("[" * 100_000 + "]" * 100_000).encode()), "config.json"),
    (lambda items: items.pop("config.json"), "config.json")])
def test_models_verify_refuses_hostile_model_archives_without_tensorflow(tmp_path, capsys, attack, words):
    """A re-signed model.keras with a Lambda layer, a zip bomb member, a ../ member, a
    100,000-deep config.json or none: `mammo models verify` said "ok" (only hashes were checked)
    and `models manifest` signed it; now both refuse it naming model.keras."""
    root = tmp_path / "m"
    root.mkdir()
    _resigned_bundle(root, "evil", attack)
    rc = main(["models", "manifest", "--models-dir", str(root)])
    err = capsys.readouterr().err
    assert rc == 1 and "model.keras" in err and words in err, err
    assert_no_traceback(err)
