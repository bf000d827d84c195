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
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

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
