"""DICOM mammograms for tests: a study's identity (patient, Study / Series / SOP Instance UIDs,
laterality, view) and the transfer syntaxes a PACS hands out, written with pydicom."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

DX_MAMMO_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage


def write_mammo_dicom(path: Path, pixels: np.ndarray, *, patient: str = "P001", study_uid: str | None = None,
                      laterality: str | None = "L", view: str | None = "CC", syntax: str = "explicit",
                      drop: Sequence[str] = (), bits_stored: int | None = None,
                      spacing_mm: float | None = 0.1) -> Path:
    """Write ``pixels`` ((H, W) or (F, H, W) uint8 / uint16) as a digital mammogram.

    ``syntax``: ``explicit`` (little endian), ``implicit``, ``big`` (explicit big endian,
    retired), ``deflate`` or ``jpeg2000`` (the pixel data is a valid encapsulation of bytes
    that are not a JPEG 2000 code stream: a file only a decoder can tell apart). ``drop``
    removes elements (e.g. ``SOPInstanceUID``) after the file meta is built.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        generate_uid,
    )

    path = Path(path)
    syntaxes = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian,
                "big": ExplicitVRBigEndian, "deflate": DeflatedExplicitVRLittleEndian,
                "jpeg2000": JPEG2000Lossless}
    meta = FileMetaDataset()
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    # a multi-frame image needs a multi-frame IOD: multi-frame grayscale byte / word SC
    meta.MediaStorageSOPClassUID = DX_MAMMO_PRESENTATION if frames == 1 else (
        "1.2.840.10008.5.1.4.1.1.7.2" if pixels.dtype.itemsize == 1 else "1.2.840.10008.5.1.4.1.1.7.3")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntaxes[syntax]
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MG"
    ds.PatientID = patient
    ds.PatientName = f"Test^{patient}"
    ds.StudyDate, ds.StudyTime = "20260101", "120000"
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    if spacing_mm:
        ds.ImagerPixelSpacing = [spacing_mm, spacing_mm]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if syntax == "jpeg2000":
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51not a code stream" * 4] * frames)
        ds["PixelData"].VR = "OB"
    else:
        order = ">" if syntax == "big" else "<"
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder(order)).tobytes()
    for key in drop:
        if key in ds:
            delattr(ds, key)
    if syntax == "big":
        from pydicom import dcmwrite

        dcmwrite(str(path), ds, implicit_vr=False, little_endian=False, force_encoding=True)
    else:
        ds.save_as(str(path), enforce_file_format=False)
    return path
