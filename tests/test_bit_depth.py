"""Intensity by true bit depth (issue 12, item 2): one patch saved as an 8-bit PNG, a 16-bit
PNG, 12-, 14- and 16-bit DICOM (MONOCHROME1 and a signed rescaled one too) and a 12-bit image
in a 16-bit PNG read with ``bits=12`` gives the same model input within rounding, the same
prediction, and the bit depth used is in the report."""
from __future__ import annotations

import json

import numpy as np
import pytest
from bundle_factory import models_dir_with, synthetic_patches
from filemakers import write_cv2, write_dicom

from mammo_core.cli import main
from mammo_core.errors import MammoError
from mammo_core.io import read_image_bits, read_patches, scale_to_unit, to_model_input


def _levels(v8: np.ndarray, bits: int) -> np.ndarray:
    return np.rint(v8.astype(np.float64) / 255.0 * ((1 << bits) - 1)).astype(np.uint16)


@pytest.fixture(scope="module")
def v8() -> np.ndarray:
    imgs, _ = synthetic_patches(2, seed=42, labels=np.array([0, 2]))
    return (imgs[1] >> 8).astype(np.uint8)


@pytest.fixture()
def files(tmp_path, v8):
    d = tmp_path / "same"
    d.mkdir()
    v12, v14 = _levels(v8, 12), _levels(v8, 14)
    write_cv2(d / "a_8bit.png", v8)
    write_cv2(d / "b_16bit.png", v8.astype(np.uint16) * 257)
    write_dicom(d / "c_12bit.dcm", v12, bits_stored=12)
    write_dicom(d / "d_14bit.dcm", v14, bits_stored=14)
    write_dicom(d / "e_16bit.dcm", v8.astype(np.uint16) * 257, bits_stored=16)
    write_dicom(d / "f_12bit_mono1.dcm", (4095 - v12).astype(np.uint16), bits_stored=12, photometric="MONOCHROME1")
    write_dicom(d / "g_12bit_signed.dcm", (v12.astype(np.int32) - 2048).astype(np.int16), bits_stored=12,
                signed=True, slope=1.0, intercept=2048.0)
    twelve_in_16 = tmp_path / "twelve" / "h_12bit_in_16bit.png"
    twelve_in_16.parent.mkdir()
    write_cv2(twelve_in_16, v12)
    return d, twelve_in_16


EXPECTED_BITS = {"a_8bit.png": 8, "b_16bit.png": 16, "c_12bit.dcm": 12, "d_14bit.dcm": 14, "e_16bit.dcm": 16,
                 "f_12bit_mono1.dcm": 12, "g_12bit_signed.dcm": 12}


def test_same_patch_same_model_input_at_every_bit_depth(files, v8):
    d, twelve = files
    coll = read_patches(d)
    assert not coll.errors
    extra = read_patches(twelve, bits=12)
    patches = coll.patches + extra.patches
    assert {p.name: p.bits for p in coll.patches} == EXPECTED_BITS and extra.patches[0].bits == 12
    ref = v8.astype(np.float32)[None, ..., None] / 255.0
    for p in patches:
        x = to_model_input(p)
        # 12 bits quantise to 1/4095: that is the rounding allowed
        np.testing.assert_allclose(x, ref, atol=0.5 / 4095 + 1e-6, err_msg=p.name)
    # without --bits the 16-bit container scales by 65535: the dark image the issue described
    plain = read_patches(twelve).patches[0]
    assert plain.bits == 16 and to_model_input(plain).max() < 0.07


def test_same_prediction_and_bits_in_the_report(tmp_path, files, capsys):
    d, twelve = files
    root = models_dir_with(tmp_path / "models", ["five_class"], ensemble=False)
    assert main(["predict", str(d), "--models-dir", str(root), "--model", "tiny_five_class_0", "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert main(["predict", str(twelve), "--bits", "12", "--models-dir", str(root), "--model", "tiny_five_class_0",
                 "--no-progress", "--format", "csv"]) == 0
    csv_text = capsys.readouterr().out
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in rep["predictions"]}
    assert {k: r["bits"] for k, r in rows.items()} == EXPECTED_BITS
    first = next(iter(rows.values()))
    for name, r in rows.items():
        assert r["predicted"] == first["predicted"], name
        for c, p in r["probabilities"].items():
            assert abs(p - first["probabilities"][c]) < 5e-3, (name, c)
    header, row = csv_text.splitlines()[1:3]
    assert header.split(",")[2] == "bits" and row.split(",")[2] == "12"
    assert first["predicted"] in row


def test_bits_is_checked(tmp_path, files, capsys):
    d, _ = files
    with pytest.raises(MammoError):
        read_patches(d, bits=0)
    coll = read_patches(d / "b_16bit.png", bits=12)  # values up to 65535 do not fit 12 bits
    assert not coll.patches and "--bits 12" in coll.errors[0].error
    assert read_image_bits(d / "c_12bit.dcm", bits=8)[1] == 12  # DICOM keeps its BitsStored
    assert read_image_bits(d / "a_8bit.png", bits=12)[1] == 8  # an 8-bit container stays 8-bit
    with pytest.raises(SystemExit) as e:  # refused at parse time (issue 26)
        main(["predict", str(d), "--bits", "17"])
    assert e.value.code == 2
    assert "--bits" in capsys.readouterr().err
    np.testing.assert_allclose(scale_to_unit(np.array([[4095]], np.uint16), bits=12), 1.0)
