"""`mammo dataset build-cbis` on a small CBIS-DDSM-like DICOM tree written with pydicom.

The tree copies the release's traps: CSV paths with other UIDs than the folders on disk and a
trailing newline, the cropped image and the ROI mask in one series (both described as "ROI mask
images"), swapped crop/mask columns, the two spellings of the breast-density column, a mask of
the wrong size, a missing mammogram, an unreadable DICOM.
"""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from mammo_core.cli import main
from mammo_core.datasets.cbis import build_cbis, norm_column

H, W = 300, 240
MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "calc type", "calc distribution", "assessment", "pathology",
               "subtlety", "image file path", "cropped image file path", "ROI mask file path"]


def write_dcm(path, arr, desc):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.SeriesDescription = desc
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = 8 * arr.dtype.itemsize
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def mammogram(rng, tissue_cols=(0, 180)):
    img = rng.integers(0, 2000, size=(H, W)).astype(np.uint16)
    a, b = tissue_cols
    img[:, a:b] = rng.integers(20000, 60000, size=(H, b - a)).astype(np.uint16)
    return img


def mask_of(box, shape=(H, W)):
    m = np.zeros(shape, np.uint8)
    t, l, h, w = box
    m[t:t + h, l:l + w] = 255
    return m


def tcia(root, case, kind):
    """A TCIA-style series folder (dates / descriptions instead of the CSV's UIDs)."""
    desc = "full mammogram images" if kind == "full" else "ROI mask images"
    return root / "CBIS-DDSM" / case / "07-20-2016-DDSM-74994" / f"1.000000-{desc}-24515"


def csv_path(case, n=0):
    return f"{case}/1.3.6.1.4.1.9590.100.1.2.4221127/1.3.6.1.4.1.9590.100.1.2.3423861/00000{n}.dcm"


def patch(img, box):
    t, l, h, w = box
    return cv2.resize(np.ascontiguousarray(img[t:t + h, l:l + w]), (150, 150),
                      interpolation=cv2.INTER_NEAREST)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


def make_tree(tmp_path):
    """The synthetic release (also used by tests/test_hardening.py): (root, expected pairs)."""
    rng = np.random.default_rng(11)
    root = tmp_path / "cbis"
    expect = {"train": [], "public_test": []}
    mass_train, calc_train, mass_test, calc_test = [], [], [], []

    # P_00001 LEFT CC: mass, two abnormalities; #1 cut (left/right tie -> left), #2 too big
    img1 = mammogram(rng)
    case = "Mass-Training_P_00001_LEFT_CC"
    write_dcm(tcia(root, case, "full") / "1-1.dcm", img1, "full mammogram images")
    box = (100, 60, 40, 50)
    roi = tcia(root, case + "_1", "roi")
    write_dcm(roi / "1-1.dcm", img1[100:140, 60:110], "ROI mask images")   # the crop
    write_dcm(roi / "1-2.dcm", mask_of(box), "ROI mask images")            # the mask
    mass_train.append(["P_00001", "3", "LEFT", "CC", "1", "mass", "OVAL", "CIRCUMSCRIBED", "4",
                       "MALIGNANT", "4", csv_path(case), csv_path(case + "_1", 1),
                       csv_path(case + "_1") + "\n"])
    expect["train"].append((patch(img1, (100, 10, 40, 50)), patch(img1, box), 2, "left"))
    roi2 = tcia(root, case + "_2", "roi")
    write_dcm(roi2 / "1-1.dcm", mask_of((0, 0, 200, 240)), "ROI mask images")
    write_dcm(roi2 / "1-2.dcm", img1[:200], "ROI mask images")
    mass_train.append(["P_00001", "3", "LEFT", "CC", "2", "mass", "OVAL", "CIRCUMSCRIBED", "4",
                       "BENIGN", "2", csv_path(case), csv_path(case + "_2", 1), csv_path(case + "_2")])

    # P_00002 RIGHT MLO: calcification, benign without callback; the tree matches the CSV
    # paths exactly but the CSV swaps the crop and mask columns; below wins
    img2 = rng.integers(20000, 60000, size=(H, W)).astype(np.uint16)
    box2 = (120, 90, 30, 60)                       # rows 120..149, cols 90..149
    img2[120:150, 30:40] = 100                     # left candidate (cols 30..89): 10/60 dark
    img2[120:150, 150:155] = 100                   # right (cols 150..209): 5/60 dark
    img2[90:120, 90:93] = 100                      # above (rows 90..119): 3/60 dark
    img2[150:180, 90:92] = 100                     # below (rows 150..179): 2/60 dark
    case = "Calc-Training_P_00002_RIGHT_MLO"
    write_dcm(root / csv_path(case), img2, "full mammogram images")
    write_dcm(root / csv_path(case + "_1"), mask_of(box2), "cropped images")   # mislabelled
    write_dcm(root / csv_path(case + "_1", 1), img2[120:150, 90:150], "ROI mask images")
    calc_train.append(["P_00002", "2", "RIGHT", "MLO", "1", "calcification", "PLEOMORPHIC",
                       "CLUSTERED", "3", "BENIGN_WITHOUT_CALLBACK", "3", csv_path(case),
                       csv_path(case + "_1"), csv_path(case + "_1", 1)])
    expect["train"].append((patch(img2, (150, 90, 30, 60)), patch(img2, box2), 3, "below"))

    # P_00003: mask of the wrong size (a failure, reported)
    img3 = mammogram(rng)
    case = "Mass-Training_P_00003_LEFT_MLO"
    write_dcm(tcia(root, case, "full") / "1-1.dcm", img3, "full mammogram images")
    write_dcm(tcia(root, case + "_1", "roi") / "1-1.dcm", mask_of((10, 10, 20, 20), (200, 160)),
              "ROI mask images")
    mass_train.append(["P_00003", "1", "LEFT", "MLO", "1", "mass", "ROUND", "OBSCURED", "3",
                       "BENIGN", "3", csv_path(case), csv_path(case + "_1", 1), csv_path(case + "_1")])

    # P_00004: the mammogram folder is missing
    calc_train.append(["P_00004", "2", "LEFT", "CC", "1", "calcification", "AMORPHOUS", "CLUSTERED",
                       "4", "MALIGNANT", "2", csv_path("Calc-Training_P_00004_LEFT_CC"),
                       csv_path("Calc-Training_P_00004_LEFT_CC_1", 1),
                       csv_path("Calc-Training_P_00004_LEFT_CC_1")])

    # P_00005: test mass, malignant, 8-bit mammogram (scaled x257); right wins over left
    img5 = np.zeros((H, W), np.uint8)
    img5[:, 45:] = rng.integers(60, 250, size=(H, W - 45)).astype(np.uint8)  # left: 35/40 tissue
    box5 = (200, 80, 48, 40)
    case = "Mass-Test_P_00005_RIGHT_CC"
    write_dcm(tcia(root, case, "full") / "1-1.dcm", img5, "full mammogram images")
    write_dcm(tcia(root, case + "_1", "roi") / "1-1.dcm", mask_of(box5), "ROI mask images")
    write_dcm(tcia(root, case + "_1", "roi") / "1-2.dcm", img5[200:248, 80:120], "cropped images")
    mass_test.append(["P_00005", "4", "RIGHT", "CC", "1", "mass", "IRREGULAR", "SPICULATED", "5",
                      "MALIGNANT", "5", csv_path(case), csv_path(case + "_1", 1), csv_path(case + "_1")])
    expect["public_test"].append((patch(img5, (200, 120, 48, 40)).astype(np.uint16) * 257,
                                  patch(img5, box5).astype(np.uint16) * 257, 2, "right"))

    # P_00006: test calcification with an unreadable mammogram
    case = "Calc-Test_P_00006_LEFT_CC"
    bad = tcia(root, case, "full") / "1-1.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    calc_test.append(["P_00006", "1", "LEFT", "CC", "1", "calcification", "PUNCTATE", "SEGMENTAL",
                      "2", "BENIGN", "1", csv_path(case), csv_path(case + "_1", 1), csv_path(case + "_1")])

    for name, header, rows in (("mass_case_description_train_set.csv", MASS_HEADER, mass_train),
                               ("calc_case_description_train_set.csv", CALC_HEADER, calc_train),
                               ("mass_case_description_test_set.csv", MASS_HEADER, mass_test),
                               ("calc_case_description_test_set.csv", CALC_HEADER, calc_test)):
        with open(root / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
    return root, expect


def test_build_cbis_cuts_the_release_layout(tree, tmp_path, capsys):
    root, expect = tree
    out = tmp_path / "out"
    rc = main(["dataset", "build-cbis", "--root", str(root), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3                                # partial: some files were bad
    for split in ("train", "public_test"):
        t = np.load(out / f"{split}_tensor.npy", allow_pickle=False)
        lab = np.load(out / f"{split}_labels.npy", allow_pickle=False)
        assert t.dtype == np.uint16 and t.shape == (2 * len(expect[split]), 150, 150)
        for i, (base, les, label, _) in enumerate(expect[split]):
            assert np.array_equal(t[2 * i], base), (split, i, "baseline")
            assert np.array_equal(t[2 * i + 1], les), (split, i, "abnormality")
            assert lab[2 * i] == 0 and lab[2 * i + 1] == label
    with open(out / "metadata.csv", newline="") as fh:
        meta = list(csv.DictReader(fh))
    abn = [m for m in meta if m["role"] == "abnormality"]
    assert [m["baseline_side"] for m in abn] == [e[3] for s in ("train", "public_test") for e in expect[s]]
    first = abn[0]
    assert (first["patient"], first["side"], first["view"], first["abnormality_id"], first["pathology"],
            first["assessment"], first["subtlety"]) == ("P_00001", "LEFT", "CC", "1", "MALIGNANT", "4", "4")
    assert first["mask"].endswith("1-2.dcm")      # the binary one, not the crop beside it
    assert abn[1]["breast_density"] == "2" and abn[1]["pathology"] == "BENIGN_WITHOUT_CALLBACK"
    assert (int(first["top"]), int(first["left"]), int(first["height"]), int(first["width"])) == (100, 60, 40, 50)
    with open(out / "skipped.csv", newline="") as fh:
        skipped = {r["patient"] + "#" + r["abnormality_id"]: r for r in csv.DictReader(fh)}
    assert set(skipped) == {"P_00001#2", "P_00003#1", "P_00004#1", "P_00006#1"}
    assert skipped["P_00001#2"]["reason"].startswith("no baseline") and skipped["P_00001#2"]["failure"] == "0"
    assert "differs from its mammogram" in skipped["P_00003#1"]["reason"]
    assert "not found" in skipped["P_00004#1"]["reason"]
    assert "unreadable" in skipped["P_00006#1"]["reason"]
    assert "differs" in err and "not found" in err and "unreadable" in err
    assert sorted(p.name for p in out.glob("contact_sheet_*.png")) == [
        "contact_sheet_calcification_benign.png", "contact_sheet_mass_malignant.png"]


def test_build_cbis_errors(tmp_path):
    with pytest.raises(Exception, match="not found"):
        build_cbis(tmp_path / "absent", tmp_path / "o", progress=False)
    (tmp_path / "empty").mkdir()
    rc = main(["dataset", "build-cbis", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
               "--no-progress"])
    assert rc == 1 and not (tmp_path / "o").exists()


def test_column_names_normalised():
    assert norm_column("breast density") == norm_column("breast_density") == "breast_density"
    assert norm_column(" ROI mask file path") == "roi_mask_file_path"
    assert norm_column("left or right breast") == "left_or_right_breast"
