"""Helpers that write real test files (PNG/TIFF/JPEG/PGM via OpenCV, DICOM via pydicom, .npy,
CBIS-DDSM-layout folders). Shared by the test modules: ``from filemakers import ...``
(pytest puts tests/ on sys.path). Everything is seeded by the caller's generator."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_cv2(path: Path, img: np.ndarray, params: list[int] | None = None) -> Path:
    """Encode ``img`` with OpenCV by the path's extension and write the bytes (any path)."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, img, params or [])
    assert ok, f"cv2.imencode failed for {path.suffix}"
    path.write_bytes(buf.tobytes())
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    slope: float | None = None,
    intercept: float | None = None,
    preamble: bool = True,
) -> Path:
    """Write an uncompressed (explicit VR little endian) DICOM with pydicom.

    ``pixels`` (H, W) or (F, H, W) for multi-frame, uint8/uint16 (int16 when ``signed``), or
    (H, W, 3) uint8 for RGB. Values are written as given, high bits included, so a test can
    check that BitsStored masks them.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    path = Path(path)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = "TEST"
    rgb = pixels.ndim == 3 and pixels.shape[-1] == 3 and photometric == "RGB"
    frames = pixels.shape[0] if (pixels.ndim == 3 and not rgb) else 1
    ds.Rows, ds.Columns = (pixels.shape[-3:-1] if rgb else pixels.shape[-2:])
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits_alloc = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored or bits_alloc
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    if preamble:
        ds.save_as(str(path), enforce_file_format=True)
    else:
        ds.preamble = None
        ds.save_as(str(path), enforce_file_format=False)
    return path


def pair_labels(rng: np.random.Generator, n_pairs: int) -> np.ndarray:
    """Labels in the study's pair layout: 0 at even indexes, an abnormality 1-4 after each."""
    labels = np.zeros(2 * n_pairs, dtype=np.int64)
    labels[1::2] = rng.integers(1, 5, size=n_pairs)
    return labels


def write_cbis_folder(
    folder: Path,
    rng: np.random.Generator,
    *,
    n_train_pairs: int = 6,
    n_test_pairs: int = 3,
    n_private: int | None = None,
    private_labels: bool = False,
    dtype=np.uint16,
    channel: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Write a synthetic CBIS-DDSM-layout folder; returns ``{split: (images, labels)}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    top = np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1
    out = {}
    sizes = {"train": n_train_pairs, "public_test": n_test_pairs}
    for name, n_pairs in sizes.items():
        labels = pair_labels(rng, n_pairs)
        images = _images(rng, 2 * n_pairs, dtype, top)
        np.save(folder / f"{name}_tensor.npy", images[..., None] if channel else images)
        np.save(folder / f"{name}_labels.npy", labels)
        out[name] = (images, labels)
    if n_private:
        images = _images(rng, n_private, dtype, top)
        np.save(folder / "private_test_tensor.npy", images[..., None] if channel else images)
        labels = None
        if private_labels:
            labels = rng.integers(0, 5, size=n_private).astype(np.int64)
            np.save(folder / "private_test_labels.npy", labels)
        out["private_test"] = (images, labels)
    return out


def _images(rng: np.random.Generator, n: int, dtype, top) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return rng.random((n, 150, 150)).astype(dtype)
    return rng.integers(0, int(top) + 1, size=(n, 150, 150), dtype=dtype)


def make_bad_cbis(folder: Path, rng, case: str) -> tuple[str, str]:
    """Write a valid CBIS-layout folder and break it in one way (one of ``BAD_CASES``); returns
    (the file name the error message must name, a phrase of the problem)."""
    write_cbis_folder(folder, rng, n_train_pairs=2, n_test_pairs=1)
    if case == "pickled":
        np.save(folder / "train_tensor.npy", np.array([None] * 4, dtype=object), allow_pickle=True)
        return "train_tensor.npy", "object/pickled array refused (allow_pickle=False)"
    if case == "pickled_labels":
        np.save(folder / "public_test_labels.npy", np.array([0, "x"], dtype=object), allow_pickle=True)
        return "public_test_labels.npy", "object/pickled array refused"
    if case == "shape":
        np.save(folder / "train_tensor.npy", np.zeros((4, 128, 128), dtype=np.uint16))
        return "train_tensor.npy", "images must be (N, 150, 150) or (N, 150, 150, 1)"
    if case == "channels3":
        np.save(folder / "train_tensor.npy", np.zeros((4, 150, 150, 3), dtype=np.uint16))
        return "train_tensor.npy", "images must be"
    if case == "label_range":
        np.save(folder / "train_labels.npy", np.array([0, 1, 0, 7]))
        return "train_labels.npy", "labels out of range 0-4"
    if case == "negative_label":
        np.save(folder / "train_labels.npy", np.array([0, -1, 0, 2]))
        return "train_labels.npy", "labels out of range 0-4"
    if case == "float_labels":
        np.save(folder / "train_labels.npy", np.array([0.0, 1.0, 0.0, 2.0]))
        return "train_labels.npy", "labels must be integers"
    if case == "length":
        np.save(folder / "public_test_labels.npy", np.array([0, 1, 0]))
        return "public_test_labels.npy", "3 labels for 2 images"
    if case == "truncated":
        data = (folder / "train_tensor.npy").read_bytes()
        (folder / "train_tensor.npy").write_bytes(data[: len(data) - 1000])
        return "train_tensor.npy", "truncated .npy file"
    if case == "not_npy":
        (folder / "train_tensor.npy").write_text("hello, I am text")
        return "train_tensor.npy", "not a .npy file"
    if case == "png_named_npy":
        write_cv2(folder / "train_tensor.npy.png", np.zeros((150, 150), np.uint8))
        (folder / "train_tensor.npy").write_bytes((folder / "train_tensor.npy.png").read_bytes())
        return "train_tensor.npy", "not a .npy file"
    if case == "nan":
        imgs = rng.random((4, 150, 150)).astype(np.float32)
        imgs[2, 5, 5] = np.nan
        np.save(folder / "train_tensor.npy", imgs)
        return "train_tensor.npy", "NaN or infinity (first in patch 2)"
    if case == "inf":
        imgs = rng.random((2, 150, 150))
        imgs[0, 0, 0] = np.inf
        np.save(folder / "public_test_tensor.npy", imgs)
        return "public_test_tensor.npy", "NaN or infinity"
    if case == "int_images":
        np.save(folder / "train_tensor.npy", np.zeros((4, 150, 150), dtype=np.int32))
        return "train_tensor.npy", "int32 pixels are not supported"
    if case == "missing_labels":
        (folder / "train_labels.npy").unlink()
        return "train_tensor.npy", "labels file train_labels.npy is missing"
    if case == "labels_without_images":
        (folder / "public_test_tensor.npy").unlink()
        return "public_test_labels.npy", "labels without images"
    if case == "empty_split":
        np.save(folder / "train_tensor.npy", np.zeros((0, 150, 150), dtype=np.uint16))
        np.save(folder / "train_labels.npy", np.zeros((0,), dtype=np.int64))
        return "train_tensor.npy", "no patches"
    if case == "no_arrays":
        for f in folder.glob("*.npy"):
            f.unlink()
        (folder / "README.txt").write_text("nothing here")
        return folder.name, "no patch arrays found"
    raise AssertionError(case)


BAD_CASES = [
    "pickled", "pickled_labels", "shape", "channels3", "label_range", "negative_label",
    "float_labels", "length", "truncated", "not_npy", "png_named_npy", "nan", "inf", "int_images",
    "missing_labels", "labels_without_images", "empty_split", "no_arrays",
]
