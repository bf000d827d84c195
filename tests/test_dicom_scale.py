"""Issue 26 N2 / N8 / N12, written as the attacks: a DICOM's intensity scale comes from
BitsStored / PixelRepresentation only (a rescale never moves the divisor), a rescale that
collapses or explodes the pixels is refused in one line naming the tags (no NumPy warnings),
and a corrupt JPEG 2000 DICOM prints no decoder traceback before its one-line refusal."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from attack_fixtures import dicom_corrupt_j2k, dicom_rescaled, patch16
from bundle_factory import models_dir_with
from filemakers import write_dicom

from mammo_core.cli import main
from mammo_core.io import read_image_bits, read_patches, to_model_input


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return models_dir_with(tmp_path_factory.mktemp("models"), ["five_class"], ensemble=False)


def _predict(paths, models, capsys) -> tuple[int, dict, str]:
    rc = main(["predict", *map(str, paths), "--models-dir", str(models), "--model", "tiny_five_class_0",
               "--no-progress"])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out) if cap.out.strip() else {}, cap.err


def _one_line_errors(err: str) -> None:
    assert "Traceback" not in err
    for line in err.splitlines():
        assert line.startswith("mammo"), f"stray stderr line: {line!r}"


@pytest.mark.parametrize("intercept", [1.0, 1000.0])
def test_n2_rescale_intercept_never_changes_the_scale_or_the_call(tmp_path, models, capsys, intercept):
    plain = write_dicom(tmp_path / "plain.dcm", (patch16(7) >> 4).astype(np.uint16), bits_stored=12)
    moved = dicom_rescaled(tmp_path / "moved.dcm", intercept=intercept)
    (a, bits_a), (b, bits_b) = read_image_bits(plain), read_image_bits(moved)
    assert bits_a == bits_b == 12                       # / 4095, never / 8191
    np.testing.assert_array_equal(a, b)                 # the stored levels, as without the rescale
    np.testing.assert_array_equal(to_model_input(read_patches(moved).patches),
                                  to_model_input(read_patches(plain).patches))
    rc, rep, err = _predict([plain, moved], models, capsys)
    assert rc == 0, err
    rows = {Path(r["source"]).name: r for r in rep["predictions"]}
    assert rows["moved.dcm"]["bits"] == 12
    assert rows["moved.dcm"]["predicted"] == rows["plain.dcm"]["predicted"]
    assert rows["moved.dcm"]["probabilities"] == rows["plain.dcm"]["probabilities"]


def test_n2_signed_and_inverted_rescales_keep_the_stored_scale(tmp_path):
    v = (patch16(3) >> 4).astype(np.int32)
    signed = write_dicom(tmp_path / "s.dcm", (v - 2048).astype(np.int16), bits_stored=12, signed=True,
                         slope=1.0, intercept=3000.0)
    inv = dicom_rescaled(tmp_path / "i.dcm", slope=-2.0, intercept=50.0, seed=3)
    out, bits = read_image_bits(signed)
    assert bits == 12
    np.testing.assert_array_equal(out, v)
    out, bits = read_image_bits(inv)
    assert bits == 12
    np.testing.assert_array_equal(out, 4095 - v)


@pytest.mark.parametrize("slope, intercept", [(1e-300, 1e8), (0.0, 5.0), (1e-300, 0.0), (1e300, 0.0),
                                              (1.0, 1e12), (1e-9, 1e8)])
def test_n8_rescale_that_collapses_or_explodes_is_refused_naming_the_tags(tmp_path, slope, intercept):
    bad = dicom_rescaled(tmp_path / "bad.dcm", slope=slope, intercept=intercept)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")                  # no NumPy (or any) warning on the way
        coll = read_patches([bad])
    assert not coll.patches and len(coll.errors) == 1
    why = coll.errors[0].error
    assert "RescaleSlope" in why and "RescaleIntercept" in why and "\n" not in why


def test_n8_predict_refuses_the_collapsing_file_and_reads_the_rest(tmp_path, models, capsys):
    good = write_dicom(tmp_path / "good.dcm", (patch16(7) >> 4).astype(np.uint16), bits_stored=12)
    bad = dicom_rescaled(tmp_path / "bad.dcm", slope=1e-300, intercept=1e8)
    rc, rep, err = _predict([good, bad], models, capsys)
    assert rc == 3
    assert [Path(r["source"]).name for r in rep["predictions"]] == ["good.dcm"]
    assert [Path(e["source"]).name for e in rep["errors"]] == ["bad.dcm"]
    assert "RescaleSlope 1e-300 / RescaleIntercept 1e+08" in rep["errors"][0]["error"]
    _one_line_errors(err)
    assert "RuntimeWarning" not in err


def test_n12_corrupt_jpeg2000_dicom_prints_no_decoder_traceback(tmp_path, models, capsys):
    bad = dicom_corrupt_j2k(tmp_path / "j2k.dcm")
    good = write_dicom(tmp_path / "good.dcm", (patch16(7) >> 4).astype(np.uint16), bits_stored=12)
    rc, rep, err = _predict([good, bad], models, capsys)
    assert rc == 3
    assert [Path(e["source"]).name for e in rep["errors"]] == ["j2k.dcm"]
    assert "compressed DICOM" in rep["errors"][0]["error"]
    _one_line_errors(err)
    assert "SIZ marker" not in err and "pydicom" not in err.replace("pydicom decode", "")
    assert sum("j2k.dcm" in line for line in err.splitlines()) <= 1


def test_n12_the_decoder_traceback_goes_to_the_log_file(tmp_path, capsys):
    import logging

    from mammo_core import logsetup
    from mammo_core.io import read_image

    log = tmp_path / "mammo.log"
    logsetup.configure("mammo", log_file=log)
    try:
        with pytest.raises(Exception, match="compressed DICOM"):
            read_image(dicom_corrupt_j2k(tmp_path / "j2k.dcm"))
    finally:
        for h in list(logging.getLogger().handlers):
            h.flush()
        logsetup.configure("mammo")
    assert "Traceback" not in capsys.readouterr().err
    assert "Traceback" in log.read_text()
