"""mammo_core.io: every reader on real files written by the tests, bad input, folders,
patch arrays and the study's preprocessing."""
from __future__ import annotations

import hashlib
from dataclasses import FrozenInstanceError
from pathlib import Path

import cv2
import numpy as np
import pytest
from filemakers import (
    BAD_CASES,
    make_bad_cbis,
    pair_labels,
    write_cbis_folder,
    write_cv2,
    write_dicom,
)

from mammo_core import io
from mammo_core.errors import DatasetError, MammoError, PatchReadError
from mammo_core.labels import TASKS, get_task


def is_mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is (a view of) a memory-mapped file."""
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = a.base if isinstance(a, np.ndarray) else None
    return False


def nearest(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (150, 150), interpolation=cv2.INTER_NEAREST)


# ----------------------------------------------------------------------------- image files
@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff", ".pgm"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lossless_formats_round_trip_native_dtype(tmp_path, rng, ext, dtype):
    img = rng.integers(0, np.iinfo(dtype).max + 1, size=(150, 150), dtype=dtype)
    path = write_cv2(tmp_path / f"patch{ext}", img)
    out = io.read_image(path)
    assert out.dtype == dtype and out.shape == (150, 150)
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("ext", [".png", ".pnm", ".tif"])
def test_colour_images_are_converted_to_grey_like_opencv(tmp_path, rng, ext):
    bgr = rng.integers(0, 256, size=(150, 150, 3), dtype=np.uint8)
    path = write_cv2(tmp_path / f"rgb{ext}", bgr)
    out = io.read_image(path)
    assert out.shape == (150, 150) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_rgba_16bit_png_drops_alpha(tmp_path, rng):
    bgra = rng.integers(0, 65536, size=(150, 150, 4), dtype=np.uint16)
    path = write_cv2(tmp_path / "rgba16.png", bgra)
    out = io.read_image(path)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, cv2.cvtColor(bgra[..., :3], cv2.COLOR_BGR2GRAY))


def test_jpeg_8bit_reads_grey_close_to_source(tmp_path, rng):
    # smooth image so JPEG at quality 100 is near-lossless
    y, x = np.mgrid[0:150, 0:150]
    img = ((x + y) * 255 // 298).astype(np.uint8)
    path = write_cv2(tmp_path / "patch.jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    out = io.read_image(path)
    assert out.dtype == np.uint8 and out.shape == (150, 150)
    assert np.abs(out.astype(int) - img).mean() < 1.0
    same = io.read_image(write_cv2(tmp_path / "copy.jpeg", img, [cv2.IMWRITE_JPEG_QUALITY, 100]))
    np.testing.assert_array_equal(same, out)


def test_non_ascii_path(tmp_path, rng):
    img = rng.integers(0, 65536, size=(150, 150), dtype=np.uint16)
    folder = tmp_path / "données_乳房"
    folder.mkdir()
    path = write_cv2(folder / "patch_é.png", img)
    np.testing.assert_array_equal(io.read_image(path), img)
    assert len(io.read_patches(folder).patches) == 1


# ----------------------------------------------------------------------------- .npy
def test_npy_2d_and_trailing_channel(tmp_path, rng):
    img = rng.integers(0, 65536, size=(150, 150), dtype=np.uint16)
    np.save(tmp_path / "a.npy", img)
    np.save(tmp_path / "b.npy", img[..., None])
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.npy"), img)
    np.testing.assert_array_equal(io.read_image(tmp_path / "b.npy"), img)


def test_npy_big_endian_and_float(tmp_path, rng):
    img = rng.integers(0, 65536, size=(150, 150), dtype=np.uint16)
    np.save(tmp_path / "be.npy", img.astype(">u2"))
    out = io.read_image(tmp_path / "be.npy")
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, img)
    f = rng.random((150, 150)).astype(np.float32)
    np.save(tmp_path / "f.npy", f)
    np.testing.assert_array_equal(io.read_image(tmp_path / "f.npy"), f)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npy_float_must_be_finite(tmp_path, rng, bad):
    f = rng.random((150, 150))
    f[3, 7] = bad
    np.save(tmp_path / "f.npy", f)
    with pytest.raises(PatchReadError, match="NaN or infinity") as info:
        io.read_image(tmp_path / "f.npy")
    assert info.value.path == str(tmp_path / "f.npy")


def test_npy_pickled_object_array_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(PatchReadError) as info:
        io.read_image(tmp_path / "obj.npy")
    assert str(info.value) == f"{tmp_path / 'obj.npy'}: object/pickled array refused (allow_pickle=False)"


def test_npy_truncated(tmp_path, rng):
    np.save(tmp_path / "t.npy", rng.integers(0, 255, size=(150, 150), dtype=np.uint8))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(PatchReadError, match="truncated"):
        io.read_image(tmp_path / "t.npy")


@pytest.mark.parametrize(
    "array, problem",
    [
        (np.zeros((150, 150), dtype=np.int32), "int32 pixels are not supported"),
        (np.zeros((150, 150), dtype=np.complex64), "not supported"),
        (np.zeros((150, 150), dtype=bool), "not supported"),
        (np.zeros((10, 20, 3), dtype=np.uint8), "is not an image"),
        (np.zeros((5,), dtype=np.uint8), "is not an image"),
        (np.zeros((0, 150), dtype=np.uint8), "empty"),
        (np.zeros((2, 150, 150), dtype=[("a", "u1")]), "structured"),
    ],
)
def test_npy_bad_arrays(tmp_path, array, problem):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(PatchReadError, match=problem):
        io.read_image(tmp_path / "x.npy")


def test_read_image_refuses_stacks_read_patches_splits_them(tmp_path, rng):
    stack = rng.integers(0, 65536, size=(4, 150, 150), dtype=np.uint16)
    np.save(tmp_path / "s.npy", stack)
    np.save(tmp_path / "c.npy", stack[..., None])
    with pytest.raises(PatchReadError, match="stacked array of 4 patches"):
        io.read_image(tmp_path / "s.npy")
    for name in ("s.npy", "c.npy"):
        coll = io.read_patches(tmp_path / name)
        assert coll.errors == []
        assert [p.index for p in coll.patches] == [0, 1, 2, 3]
        for i, p in enumerate(coll.patches):
            np.testing.assert_array_equal(p.pixels, stack[i])
            assert p.source == str(tmp_path / name) and p.label is None
            assert p.name == f"{name}[{i}]"


# ----------------------------------------------------------------------------- DICOM
def test_dicom_monochrome2_bits_stored_12_masks_high_bits(tmp_path, rng):
    values = rng.integers(0, 4096, size=(150, 150), dtype=np.uint16)
    garbage = values | (rng.integers(0, 16, size=values.shape, dtype=np.uint16) << 12)
    path = write_dicom(tmp_path / "m2.dcm", garbage, bits_stored=12)
    out = io.read_image(path)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, values)


def test_dicom_monochrome1_is_inverted_within_bits_stored(tmp_path, rng):
    values = rng.integers(0, 4096, size=(150, 150), dtype=np.uint16)
    path = write_dicom(tmp_path / "m1.dcm", values, photometric="MONOCHROME1", bits_stored=12)
    np.testing.assert_array_equal(io.read_image(path), 4095 - values)


def test_dicom_8bit_gives_uint8(tmp_path, rng):
    values = rng.integers(0, 256, size=(150, 150), dtype=np.uint8)
    out = io.read_image(write_dicom(tmp_path / "8.dcm", values))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, values)


def test_dicom_rescale_never_changes_the_intensity_scale(tmp_path, rng):
    # a linear rescale adds no levels: the stored 12-bit range stays the full scale (issue 26 N2)
    values = rng.integers(0, 4096, size=(150, 150), dtype=np.uint16)
    path = write_dicom(tmp_path / "r.dcm", values, bits_stored=12, slope=2, intercept=100)
    out, bits = io.read_image_bits(path)
    assert out.dtype == np.uint16 and bits == 12
    np.testing.assert_array_equal(out, values)


def test_dicom_signed_rescale_is_placed_on_the_stored_range(tmp_path):
    # signed 12-bit stored values with a negative intercept (CT-like): -2048..2047 -> 0..4095
    values = np.tile(np.array([-2048, -1, 0, 2047], dtype=np.int16), (150, 38))[:, :150]
    path = write_dicom(tmp_path / "s.dcm", values, bits_stored=12, signed=True, slope=1, intercept=-1024)
    out, bits = io.read_image_bits(path)
    assert out.dtype == np.uint16 and bits == 12
    assert list(out[0, :4]) == [0, 2047, 2048, 4095]        # stored extremes -> ends, order kept


def test_dicom_negative_slope_inverts(tmp_path, rng):
    values = rng.integers(0, 4096, size=(40, 50), dtype=np.uint16)
    out, bits = io.read_image_bits(write_dicom(tmp_path / "n.dcm", values, bits_stored=12,
                                               slope=-1, intercept=4095))
    assert bits == 12
    np.testing.assert_array_equal(out, 4095 - values)


def test_dicom_without_preamble_and_extensionless(tmp_path, rng):
    values = rng.integers(0, 65536, size=(150, 150), dtype=np.uint16)
    np.testing.assert_array_equal(io.read_image(write_dicom(tmp_path / "raw.dcm", values, preamble=False)), values)
    noext = write_dicom(tmp_path / "IMG0001", values)
    np.testing.assert_array_equal(io.read_image(noext), values)
    (tmp_path / "NOTES").write_text("not dicom")
    coll = io.read_patches(tmp_path)
    assert sorted(Path(p.source).name for p in coll.patches) == ["IMG0001", "raw.dcm"]
    assert coll.errors == []   # the extension-less text file is ignored in a folder
    with pytest.raises(PatchReadError, match="unknown file type"):
        io.read_image(tmp_path / "NOTES")


def test_dicom_multiframe_frames_are_patches(tmp_path, rng):
    frames = rng.integers(0, 4096, size=(3, 150, 150), dtype=np.uint16)
    path = write_dicom(tmp_path / "mf.dcm", frames, bits_stored=12)
    with pytest.raises(PatchReadError, match="multi-frame DICOM of 3 patches"):
        io.read_image(path)
    coll = io.read_patches(path)
    assert [p.index for p in coll.patches] == [0, 1, 2]
    for i, p in enumerate(coll.patches):
        np.testing.assert_array_equal(p.pixels, frames[i])


def test_dicom_rgb_to_grey(tmp_path, rng):
    rgb = rng.integers(0, 256, size=(150, 150, 3), dtype=np.uint8)
    out = io.read_image(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    np.testing.assert_array_equal(out, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_dicom_without_pixels(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "np.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientID = "X"
    ds.save_as(str(tmp_path / "np.dcm"), enforce_file_format=False)
    with pytest.raises(PatchReadError, match="no pixel data"):
        io.read_image(tmp_path / "np.dcm")


# ----------------------------------------------------------------------------- resizing
@pytest.mark.parametrize("shape", [(200, 180), (97, 151), (300, 300), (40, 600)])
def test_non_150_images_resized_with_inter_nearest(tmp_path, rng, shape):
    img = rng.integers(0, 65536, size=shape, dtype=np.uint16)
    png = write_cv2(tmp_path / "p.png", img)
    np.save(tmp_path / "p.npy", img[..., None])
    coll = io.read_patches([png, tmp_path / "p.npy"])
    assert coll.errors == [] and len(coll.patches) == 2
    expected = nearest(img)
    for p in coll.patches:
        assert p.pixels.shape == (150, 150) and p.pixels.dtype == np.uint16
        np.testing.assert_array_equal(p.pixels, expected)
        assert p.original_shape == shape
    np.testing.assert_array_equal(io.resize_patch(img), expected)


@pytest.mark.parametrize("shape, whole", [((601, 150), True), ((1024, 1024), True), ((150, 37), False),
                                          ((5, 5), False)])
def test_sizes_far_from_a_patch_are_refused_with_the_reason(tmp_path, rng, shape, whole):
    """Attack from issue 15: a whole mammogram opened as a patch was silently shrunk to 150 x 150
    and classified. Now it is refused, naming the size; the other files still load."""
    big = write_cv2(tmp_path / "big.png", rng.integers(0, 256, size=shape, dtype=np.uint8))
    ok = write_cv2(tmp_path / "ok.png", rng.integers(0, 256, size=(150, 150), dtype=np.uint8))
    coll = io.read_patches([big, ok])
    assert [p.source for p in coll.patches] == [str(ok)]
    (err,) = coll.errors
    assert err.source == str(big) and err.whole_image is whole
    assert f"{shape[1]} x {shape[0]} pixels is far from a 150 x 150 patch" in err.error
    assert ("mammogram" in err.error) is whole and "\n" not in err.error
    assert io.read_image(big).shape == shape  # the whole-image reader still reads it


def test_resize_patch_is_a_no_op_at_150(rng):
    img = rng.integers(0, 255, size=(150, 150), dtype=np.uint8)
    assert io.resize_patch(img) is img
    with pytest.raises(MammoError):
        io.resize_patch(np.zeros((3, 150, 150)))


# ----------------------------------------------------------------------------- Patch
def test_patch_is_frozen_read_only_and_hashed(tmp_path, rng):
    img = rng.integers(0, 65536, size=(150, 150), dtype=np.uint16)
    p = io.read_patches(write_cv2(tmp_path / "a.png", img)).patches[0]
    assert p.sha256 == hashlib.sha256(img.tobytes()).hexdigest()
    with pytest.raises(FrozenInstanceError):
        p.label = 3
    with pytest.raises(ValueError):
        p.pixels[0, 0] = 1
    q = io.read_patches(write_cv2(tmp_path / "b.png", img)).patches[0]
    assert q.sha256 == p.sha256 and q is not p


# ----------------------------------------------------------------------------- folders
def test_folder_with_broken_files_loads_the_good_ones(tmp_path, rng):
    imgs = {}
    for name in ("c.png", "a.tif", "b.pgm"):
        imgs[name] = rng.integers(0, 256, size=(150, 150), dtype=np.uint8)
        write_cv2(tmp_path / name, imgs[name])
    np.save(tmp_path / "d.npy", rng.integers(0, 255, size=(150, 150), dtype=np.uint8))
    data = (tmp_path / "d.npy").read_bytes()
    (tmp_path / "d.npy").write_bytes(data[:200])                 # truncated .npy
    (tmp_path / "e.png").write_text("this is not a PNG\n")       # text named .png
    (tmp_path / "f.jpg").write_bytes(b"")                        # empty
    (tmp_path / "README").write_text("ignored")
    (tmp_path / "meta.csv").write_text("index,label\n")
    (tmp_path / ".hidden.png").write_text("ignored")
    sub = tmp_path / "sub"
    sub.mkdir()
    write_cv2(sub / "z.png", imgs["a.tif"])

    coll = io.read_patches(tmp_path)
    assert [Path(p.source).name for p in coll.patches] == ["a.tif", "b.pgm", "c.png"]
    for p in coll.patches:
        np.testing.assert_array_equal(p.pixels, imgs[Path(p.source).name])
    errors = {Path(e.source).name: e.error for e in coll.errors}
    assert set(errors) == {"d.npy", "e.png", "f.jpg"}
    assert "truncated" in errors["d.npy"]
    assert "not a readable PNG image" in errors["e.png"]
    assert errors["f.jpg"] == "empty file"
    assert all("\n" not in e for e in errors.values())

    rec = io.read_patches(tmp_path, recursive=True)
    assert [Path(p.source).name for p in rec.patches] == ["a.tif", "b.pgm", "c.png", "z.png"]


def test_explicit_paths_unknown_type_and_missing(tmp_path, rng):
    (tmp_path / "notes.txt").write_text("hi")
    good = write_cv2(tmp_path / "g.png", rng.integers(0, 256, size=(150, 150), dtype=np.uint8))
    coll = io.read_patches([tmp_path / "notes.txt", tmp_path / "missing.png", good, str(tmp_path / "nope")])
    assert len(coll.patches) == 1
    assert [(Path(e.source).name, e.error.split(":")[0]) for e in coll.errors] == [
        ("notes.txt", "unknown file type"), ("missing.png", "no such file or folder"),
        ("nope", "no such file or folder")]
    with pytest.raises(PatchReadError, match="no such file"):
        io.read_image(tmp_path / "missing.png")
    with pytest.raises(PatchReadError, match="is a folder"):
        io.read_image(tmp_path)


def test_cbis_folder_reads_tensors_with_labels(tmp_path, rng):
    data = write_cbis_folder(tmp_path, rng, n_train_pairs=3, n_test_pairs=2, n_private=3, channel=True)
    coll = io.read_patches(tmp_path)
    assert coll.errors == []
    names = [Path(p.source).name for p in coll.patches]
    assert names == ["private_test_tensor.npy"] * 3 + ["public_test_tensor.npy"] * 4 + ["train_tensor.npy"] * 6
    for p in coll.patches:
        split = Path(p.source).name[: -len("_tensor.npy")]
        images, labels = data[split]
        np.testing.assert_array_equal(p.pixels, images[p.index])
        assert p.label == (None if labels is None else int(labels[p.index]))
    assert all(not Path(p.source).name.endswith("_labels.npy") for p in coll.patches)


def test_cbis_tensor_with_bad_labels_still_loads_images(tmp_path, rng):
    write_cbis_folder(tmp_path, rng, n_train_pairs=2, n_test_pairs=1)
    np.save(tmp_path / "train_labels.npy", np.array([0, 1, 0]))  # 3 labels for 4 images
    coll = io.read_patches(tmp_path / "train_tensor.npy")
    assert len(coll.patches) == 4 and all(p.label is None for p in coll.patches)
    assert len(coll.errors) == 1
    assert coll.errors[0].source == str(tmp_path / "train_labels.npy")
    assert "3 labels for 4 images" in coll.errors[0].error


# ----------------------------------------------------------------------------- model input
def test_to_model_input_scales_by_bit_depth(rng):
    u16 = rng.integers(0, 65536, size=(150, 150), dtype=np.uint16)
    u8 = rng.integers(0, 256, size=(150, 150), dtype=np.uint8)
    x = io.to_model_input(u16)
    assert x.shape == (1, 150, 150, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, ..., 0], u16 / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(io.to_model_input(np.stack([u8, u8]))[1, ..., 0], u8 / 255.0, rtol=1e-6)
    assert io.to_model_input(np.stack([u8])[..., None]).shape == (1, 150, 150, 1)
    patches = [io.Patch(u16, "a", None), io.Patch(u8, "b", None)]
    mixed = io.to_model_input(patches)
    assert mixed.shape == (2, 150, 150, 1)
    assert mixed.min() >= 0.0 and mixed.max() <= 1.0
    np.testing.assert_allclose(mixed[1, ..., 0], u8 / 255.0, rtol=1e-6)
    assert io.to_model_input([]).shape == (0, 150, 150, 1)
    f = rng.random((150, 150)).astype(np.float64)
    np.testing.assert_allclose(io.to_model_input(f)[0, ..., 0], f, rtol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [np.full((150, 150), 1.5), np.full((150, 150), -0.1), np.full((150, 150), np.nan),
     np.zeros((150, 150), dtype=np.int32), np.zeros((100, 150), dtype=np.uint8),
     np.zeros((2, 150, 150, 3), dtype=np.uint8)],
)
def test_to_model_input_refuses(bad):
    with pytest.raises(MammoError):
        io.to_model_input(bad)


# ----------------------------------------------------------------------------- patch arrays
def test_load_patch_arrays_valid_folder(tmp_path, rng):
    data = write_cbis_folder(tmp_path, rng, n_train_pairs=5, n_test_pairs=2, n_private=3, channel=True)
    arrays = io.load_patch_arrays(tmp_path)
    assert list(arrays.splits) == ["train", "public_test", "private_test"]
    for name, split in arrays.splits.items():
        images, labels = data[name]
        assert split.images.shape == images.shape and split.images.dtype == np.uint16
        np.testing.assert_array_equal(split.images, images)
        assert not split.images.flags.writeable          # read-only memory map
        assert is_mapped(split.images)
        if labels is None:
            assert split.labels is None and split.label_file is None
        else:
            assert split.labels.dtype == np.int64
            np.testing.assert_array_equal(split.labels, labels)
            assert io.pairs_ok(split.labels)
    assert arrays["train"].image_file == tmp_path / "train_tensor.npy"


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_load_patch_arrays_other_dtypes(tmp_path, rng, dtype):
    write_cbis_folder(tmp_path, rng, dtype=dtype)
    arrays = io.load_patch_arrays(tmp_path)
    assert arrays["train"].images.dtype == dtype


@pytest.mark.parametrize("case", BAD_CASES)
def test_load_patch_arrays_bad_input(tmp_path, rng, case):
    folder = tmp_path / "arrays"
    file_name, problem = make_bad_cbis(folder, rng, case)
    with pytest.raises(DatasetError) as info:
        io.load_patch_arrays(folder)
    msg = str(info.value)
    assert "\n" not in msg
    assert Path(info.value.path).name == file_name
    assert problem in msg


def test_load_patch_arrays_not_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        io.load_patch_arrays(tmp_path / "nope")
    (tmp_path / "f.npy").write_bytes(b"")
    with pytest.raises(DatasetError, match="not a folder"):
        io.load_patch_arrays(tmp_path / "f.npy")


def test_broken_pair_layout_is_reported_not_refused(tmp_path, rng):
    write_cbis_folder(tmp_path, rng, n_train_pairs=3)
    np.save(tmp_path / "train_labels.npy", np.array([1, 0, 0, 2, 0, 3]))
    arrays = io.load_patch_arrays(tmp_path)
    assert not io.pairs_ok(arrays["train"].labels)
    assert io.pairs_ok(arrays["public_test"].labels)


@pytest.mark.parametrize(
    "labels, ok",
    [([0, 1, 0, 4], True), ([0, 2], True), ([0, 1, 0], False), ([1, 0], False), ([0, 0], False),
     ([0, 1, 3, 2], False), ([], False), (None, False)],
)
def test_pairs_ok(labels, ok):
    assert io.pairs_ok(None if labels is None else np.array(labels)) is ok


def test_validate_split_squeezes_channel_and_casts_labels(tmp_path, rng):
    images = rng.integers(0, 255, size=(2, 150, 150, 1), dtype=np.uint8)
    split = io.validate_split(io.Split("train", images, np.array([0, 3], dtype=np.uint8),
                                       tmp_path / "train_tensor.npy", tmp_path / "train_labels.npy"))
    assert split.images.shape == (2, 150, 150) and split.labels.dtype == np.int64
    with pytest.raises(DatasetError, match="1 labels for 2 images"):
        io.validate_split(io.Split("train", images, np.array([0]), tmp_path / "t.npy", tmp_path / "l.npy"))


# ----------------------------------------------------------------------------- preprocessing
def test_drop_baselines_select_task_scale(rng):
    labels = pair_labels(rng, 20)
    images = rng.integers(0, 65536, size=(40, 150, 150), dtype=np.uint16)
    imgs, labs = io.drop_baselines(images, labels)
    assert (labs != 0).all() and len(imgs) == 20
    np.testing.assert_array_equal(imgs, images[1::2])
    for name, task in TASKS.items():
        t_imgs, t_labels, keep = io.select_task(images, labels, name)
        k2, l2 = get_task(name).map_labels(labels)
        np.testing.assert_array_equal(keep, k2)
        np.testing.assert_array_equal(t_labels, l2)
        np.testing.assert_array_equal(t_imgs, images[keep])
        assert t_labels.max() < task.n_classes
    _, mc, _ = io.select_task(images, labels, TASKS["mass_calc"])
    np.testing.assert_array_equal(mc, (labels[labels > 0] >= 3).astype(int))
    with pytest.raises(MammoError, match="unknown task"):
        io.select_task(images, labels, "nope")
    s = io.scale_to_unit(images)
    assert s.dtype == np.float32 and s.min() >= 0 and s.max() <= 1
    np.testing.assert_allclose(s, images / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(io.scale_to_unit(np.array([0, 255], np.uint8)), [0.0, 1.0])


def test_to_model_input_names_the_patch_that_is_out_of_range(rng):
    good = io.Patch(np.zeros((150, 150), np.uint8), "a.png")
    bad = io.Patch(np.full((150, 150), 3.0, np.float32), "b.npy", 4)
    with pytest.raises(MammoError) as info:
        io.to_model_input([good, bad])
    assert str(info.value) == "b.npy[4]: float pixels must be finite and in [0, 1]"


def test_big_stacks_are_memory_mapped_small_files_are_not(tmp_path, rng, monkeypatch):
    stack = rng.integers(0, 65536, size=(3, 150, 150), dtype=np.uint16)
    np.save(tmp_path / "s.npy", stack)
    small = io.read_patches(tmp_path / "s.npy").patches[0].pixels
    assert not is_mapped(small)
    monkeypatch.setattr(io.image, "MMAP_MIN_BYTES", 0)
    mapped = io.read_patches(tmp_path / "s.npy").patches
    assert is_mapped(mapped[1].pixels)
    np.testing.assert_array_equal(mapped[2].pixels, stack[2])


@pytest.mark.parametrize("bits_stored, photometric", [(16, "MONOCHROME1"), (16, "MONOCHROME2"),
                                                      (14, "MONOCHROME1"), (8, "MONOCHROME2")])
def test_dicom_16bit_allocated_bit_depths(tmp_path, rng, bits_stored, photometric):
    top = (1 << bits_stored) - 1
    values = rng.integers(0, top + 1, size=(64, 80), dtype=np.uint16)
    out = io.read_image(write_dicom(tmp_path / "d.dcm", values, photometric=photometric,
                                    bits_stored=bits_stored))
    assert out.dtype == (np.uint8 if bits_stored <= 8 else np.uint16)
    expected = top - values if photometric == "MONOCHROME1" else values
    np.testing.assert_array_equal(out, expected)
    assert io.read_patches(tmp_path / "d.dcm").patches[0].original_shape == (64, 80)


def test_npy_header_declaring_a_huge_array_is_truncated_not_allocated(tmp_path):
    header = "{'descr': '<u2', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"
    header = header.ljust(118) + "\n"
    (tmp_path / "h.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                                     + header.encode() + b"\0" * 64)
    with pytest.raises(PatchReadError, match="truncated .npy file"):
        io.read_image(tmp_path / "h.npy")


def test_dicom_monochrome1_with_rescale_mirrors_the_stored_range(tmp_path, rng):
    values = rng.integers(0, 4096, size=(20, 30), dtype=np.uint16)
    path = write_dicom(tmp_path / "m1r.dcm", values, photometric="MONOCHROME1", bits_stored=12,
                       slope=1, intercept=100)
    # the intercept moves values, not the scale: MONOCHROME1 mirrors 0..4095
    np.testing.assert_array_equal(io.read_image(path), 4095 - values)


@pytest.mark.shared
def test_real_mini_mias_folder(mias_dir, tmp_path):
    """The real mini-MIAS PNGs (1024 x 1024, 8-bit) are whole mammograms: read_patches refuses
    each one (never shrinks the breast to 150 x 150 silently), flagged ``whole_image``;
    Info.txt / README.md / Licence.txt in the folder are ignored; read_image reads them at full
    size and PGM (the original distribution format) reads to the same pixels."""
    coll = io.read_patches(mias_dir)
    assert coll.patches == []
    pngs = sorted(p.name for p in mias_dir.glob("*.png"))
    assert [Path(e.source).name for e in coll.errors] == pngs
    assert all(e.whole_image and "1024 x 1024 pixels is far from a 150 x 150 patch" in e.error
               for e in coll.errors)
    first = io.read_image(mias_dir / pngs[0])
    assert first.shape == (1024, 1024) and first.dtype == np.uint8
    pgm = write_cv2(tmp_path / "mdb.pgm", first)
    np.testing.assert_array_equal(io.read_image(pgm), first)
