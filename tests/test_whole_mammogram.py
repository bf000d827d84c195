"""Whole mammograms: reading (DICOM 16-bit, PNG, PGM, TIFF) with pixel spacing, laterality and
view; the one cutting code path (point / box -> protocol v1 window -> 150 x 150) gives the
pixels `mammo dataset build-mias` cuts, pixel for pixel."""
from __future__ import annotations

import csv
import shutil

import cv2
import numpy as np
import pytest
from filemakers import write_dicom

from mammo_core.cli import main
from mammo_core.datasets.mias import lesion_centre, parse_info
from mammo_core.errors import PatchReadError
from mammo_core.mammogram import orientation_from_name, read_mammogram
from mammo_core.protocol import Box, box_window, cut_window, point_window


def test_point_window_is_protocol_v1_clipped_and_shifted_inside():
    shape = (1024, 1024)
    assert point_window(500, 500, 30, shape) == Box(452, 452, 96, 96)        # max(2r, 96) = 96
    assert point_window(500, 500, 70, shape) == Box(430, 430, 140, 140)      # 2r = 140
    assert point_window(10, 1020, 30, shape) == Box(0, 928, 96, 96)          # shifted inside
    assert point_window(500, 1100, 900, (700, 1200)) == Box(0, 500, 700, 700)  # capped, shifted
    # a box drawn around a lesion is the same window as its centre and radius
    assert box_window(Box(470, 440, 60, 60), shape) == point_window(500, 470, 30, shape)
    assert box_window(Box(400, 400, 40, 160), shape) == point_window(420, 480, 80, shape)


def test_cut_window_scales_like_the_builder():
    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, size=(300, 400), dtype=np.uint8)
    b = Box(10, 20, 96, 96)
    exp = cv2.resize(u8[10:106, 20:116], (150, 150), interpolation=cv2.INTER_NEAREST).astype(np.uint16) * 257
    np.testing.assert_array_equal(cut_window(u8, b), exp)
    u12 = rng.integers(0, 4096, size=(300, 400), dtype=np.uint16)
    got = cut_window(u12, b)
    assert got.dtype == np.uint16 and int(got.max()) <= 65535
    near = cv2.resize(u12[10:106, 20:116], (150, 150), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(got, np.round(near * (65535 / 4095)).astype(np.uint16))


@pytest.mark.shared
def test_point_and_box_give_the_builders_pixels_on_real_mini_mias(mias_dir, tmp_path):
    """A point (with radius) or a box on a real mini-MIAS mammogram yields exactly the 150 x 150
    patch that `mammo dataset build-mias` cut for that lesion."""
    info = parse_info(mias_dir / "Info.txt")
    names = ["mdb005", "mdb010", "mdb013", "mdb015", "mdb017", "mdb021"]
    src = tmp_path / "src"
    src.mkdir()
    lines = []
    for les in info.lesions:
        if les.image in names:
            lines.append(f"{les.image} {les.tissue} {les.cls} {les.severity} {les.x} {les.y} {les.radius}")
    for n in names:
        shutil.copy(mias_dir / f"{n}.png", src / f"{n}.png")
    (src / "Info.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "built"
    assert main(["dataset", "build-mias", "--images", str(src), "--info", str(src / "Info.txt"),
                 "--out", str(out), "--test-fraction", "0.3", "--no-progress"]) == 0
    with open(out / "metadata.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["role"] == "abnormality"]
    assert len(rows) >= 4
    lesions = {le.lesion_id: le for le in info.lesions}
    for r in rows:
        tensor = np.load(out / f"{r['split']}_tensor.npy", allow_pickle=False)
        built = tensor[int(r["index"])]
        m = read_mammogram(src / f"{r['image']}.png")
        assert m.spacing_mm == (0.2, 0.2) and "mini-MIAS" in m.spacing_source
        les = lesions[r["lesion"]]
        row, col = lesion_centre(les, m.shape)
        pt = point_window(row, col, les.radius, m.shape)
        assert (pt.top, pt.left, pt.height) == (int(r["top"]), int(r["left"]), int(r["side"]))
        np.testing.assert_array_equal(cut_window(m.pixels, pt), built)
        drawn = Box(row - les.radius, col - les.radius, 2 * les.radius, 2 * les.radius)
        np.testing.assert_array_equal(cut_window(m.pixels, box_window(drawn, m.shape)), built)


def test_16bit_dicom_whole_image_with_spacing_laterality_view(tmp_path):
    rng = np.random.default_rng(5)
    px = rng.integers(0, 65536, size=(700, 500), dtype=np.uint16)
    folder = tmp_path / "Mass-Training_P_00001_LEFT_CC"
    folder.mkdir()
    path = write_dicom(folder / "1-1.dcm", px, bits_stored=16)
    m = read_mammogram(path)
    np.testing.assert_array_equal(m.pixels, px)
    assert m.kind == "dicom" and m.laterality == "L" and m.view == "CC"
    assert m.spacing_mm is None and m.spacing_source == "unknown"
    assert dict(m.header)["Modality"] == "MG" and dict(m.header)["BitsStored"] == "16"
    import pydicom

    ds = pydicom.dcmread(str(path))
    ds.ImagerPixelSpacing = [0.05, 0.05]
    ds.ImageLaterality = "R"
    ds.ViewPosition = "MLO"
    ds.save_as(str(path))
    m = read_mammogram(path)
    assert m.spacing_mm == (0.05, 0.05) and m.spacing_source == "DICOM ImagerPixelSpacing"
    assert (m.laterality, m.view) == ("R", "MLO") and m.orientation_source == "DICOM"
    ds.PixelSpacing = [0.07, 0.07]
    ds.save_as(str(path))
    assert read_mammogram(path).spacing_mm == (0.07, 0.07)
    assert read_mammogram(path, spacing_mm=0.1).spacing_source == "given"


@pytest.mark.parametrize("ext", [".png", ".pgm", ".tif"])
def test_png_pgm_tiff_read_at_full_size(tmp_path, ext):
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, size=(1200, 800), dtype=np.uint8)
    path = tmp_path / f"case_R_MLO{ext}"
    assert cv2.imwrite(str(path), img)
    m = read_mammogram(path)
    np.testing.assert_array_equal(m.pixels, img)
    assert (m.laterality, m.view, m.spacing_mm) == ("R", "MLO", None)
    assert not m.pixels.flags.writeable


def test_orientation_from_names():
    assert orientation_from_name("x/Calc-Test_P_00038_RIGHT_MLO/1-1.dcm") == ("R", "MLO")
    assert orientation_from_name("a/LCC.png") == ("L", "CC")
    assert orientation_from_name("mdb005.png") == (None, None)


def test_unreadable_and_float_images_are_refused_naming_the_file(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(PatchReadError, match="bad.dcm"):
        read_mammogram(bad)
    np.save(tmp_path / "f.npy", np.zeros((400, 300), np.float32))
    with pytest.raises(PatchReadError, match="8- or 16-bit integers"):
        read_mammogram(tmp_path / "f.npy")


def test_predict_refuses_a_mammogram_per_file_and_predicts_the_rest(tmp_path, capsys):
    """`mammo predict` with a whole mammogram among patches: exit 3, the mammogram named with
    the reason, the patch predicted."""
    from bundle_factory import synthetic_patches, tiny_bundle

    imgs, _ = synthetic_patches(2, seed=3)
    assert cv2.imwrite(str(tmp_path / "patch.png"), imgs[1])
    assert cv2.imwrite(str(tmp_path / "mammo.png"), np.zeros((1024, 800), np.uint8))
    rc = main(["predict", str(tmp_path / "patch.png"), str(tmp_path / "mammo.png"),
               "--model", str(tiny_bundle("five_class")), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 3
    assert "mammo.png" in cap.err and "800 x 1024 pixels is far from a 150 x 150 patch" in cap.err
    assert "mammo scan" in cap.err
