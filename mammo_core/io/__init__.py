"""Reading mammogram patches and CBIS-DDSM patch arrays. Research use only — not a medical device.

The package, by concern (each module says its own rules):

``source``       :class:`SourceRef`, the identifiers a patch keeps of its source image
                 (path, DICOM Study / Series / SOP Instance / SOP Class UIDs, frame, window).
``patch``        :class:`Patch`, :class:`ReadFailure`, :class:`PatchCollection`; the names of
                 patch-array files (``SPLIT_NAMES``, ``<split>_tensor.npy``, ``_labels.npy``).
``npy``          ``.npy`` read safely (never unpickled, header checked against the file size,
                 big arrays memory-mapped), pixel dtype / range checks.
``raster``       PNG / TIFF / JPEG / PGM / PNM through OpenCV (8- and 16-bit, colour to grey).
``dicom``        DICOM through pydicom: BitsStored, PixelRepresentation, MONOCHROME1, the
                 modality rescale (never the intensity scale), the source's UIDs.
``image``        one file at full size (``read_image``, ``read_image_bits``,
                 ``read_image_ref``), ``resize_patch`` and ``check_patch_size``.
``labelfiles``   ``X_labels.npy`` beside ``X_tensor.npy`` and ``labels.csv`` beside images.
``folders``      ``read_patches``: any mix of files, stacks, multi-frame DICOM and folders into
                 a ``PatchCollection`` (never raises for one bad file).
``model_input``  ``scale_to_unit`` and ``to_model_input``: float32 (N, 150, 150, 1) in [0, 1],
                 each patch by its true bit depth.
``arrays``       ``load_patch_arrays`` (CBIS-DDSM layout), ``drop_baselines``, ``select_task``.

Input size is never silent
    A single image is a patch only when each side is within a factor ``PATCH_SIZE_FACTOR`` (4)
    of 150 px (38..600 px); it is then resized to 150 x 150 with ``cv2.INTER_NEAREST``. Larger
    images (whole mammograms) are refused by ``read_patches`` with ``NotAPatchError`` (the
    ``ReadFailure`` has ``whole_image=True``): open them as mammograms
    (``mammo_core.mammogram.read_mammogram``, ``mammo scan``, the viewer's mammogram view), which
    cut windows the way the training data was cut (:mod:`mammo_core.protocol`).

Every problem the user can act on is a ``PatchReadError`` / ``DatasetError`` whose message
names the file and the problem in one line.

Decisions worth knowing
    * Pixel values are kept as stored: a 12-bit DICOM stays 0..4095 in uint16 (MONOCHROME1 is
      mirrored within that range) and its ``Patch.bits`` is 12, so ``to_model_input`` scales it
      by 4095, the way an 8-bit PNG of the same image is scaled by 255 (true bit depth). The
      scale of a DICOM comes from BitsStored / PixelRepresentation only (a rescale never
      changes it). Other files use their container depth (uint8 / 255, uint16 / 65535, as the
      study did for its 16-bit patches) unless ``bits=`` says a 16-bit container holds fewer.
    * Hostile files: only regular files are opened (``O_NONBLOCK`` + ``fstat``: a FIFO or a
      symlink to ``/dev/zero`` is refused at once), at most ``MAMMO_MAX_FILE_BYTES`` bytes are
      read, an image over ``MAMMO_MAX_PIXELS`` pixels is refused from its header before
      decoding, float pixels outside [0, 1] make their file fail (not the batch), and a
      recursive walk enters each folder once by ``(st_dev, st_ino)`` (symlink cycles end).
    * Multi-frame DICOM: ``read_image`` refuses it; ``read_patches`` yields one patch per frame.
      Multi-page TIFF: the first page is read.
    * ``Patch.source`` is the file path as given (a CBIS tensor's patches carry the path of
      ``<split>_tensor.npy`` and ``index`` = row); stacks and big files are memory-mapped
      read-only, so ``Patch.pixels`` may be a view of the file. ``Patch.source_ref`` carries a
      DICOM source's UIDs (and the frame), or the window a patch was cut from.
    * Decoders' own log lines are kept off the terminal (the reader reports the problem once).
"""
from __future__ import annotations

from mammo_core.contract import PATCH_SHAPE, PATCH_SIZE
from mammo_core.io.arrays import (
    PatchArrays,
    Split,
    drop_baselines,
    load_patch_arrays,
    pairs_ok,
    pixel_range,
    select_task,
    validate_split,
)
from mammo_core.io.dicom import DICOM_EXTENSIONS
from mammo_core.io.folders import read_patches
from mammo_core.io.image import (
    PATCH_SIZE_FACTOR,
    READ_EXTENSIONS,
    check_patch_size,
    file_kind,
    read_image,
    read_image_bits,
    read_image_ref,
    resize_patch,
)
from mammo_core.io.labelfiles import LABELS_CSV
from mammo_core.io.model_input import scale_to_unit, to_model_input
from mammo_core.io.npy import NPY_EXTENSIONS
from mammo_core.io.patch import (
    LABELLED_SPLITS,
    LABELS_SUFFIX,
    SPLIT_NAMES,
    TENSOR_SUFFIX,
    Patch,
    PatchCollection,
    ReadFailure,
    split_of,
)
from mammo_core.io.raster import CV2_EXTENSIONS
from mammo_core.io.source import SourceRef

__all__ = [
    "CV2_EXTENSIONS",
    "DICOM_EXTENSIONS",
    "LABELLED_SPLITS",
    "LABELS_CSV",
    "LABELS_SUFFIX",
    "NPY_EXTENSIONS",
    "PATCH_SHAPE",
    "PATCH_SIZE",
    "PATCH_SIZE_FACTOR",
    "READ_EXTENSIONS",
    "SPLIT_NAMES",
    "TENSOR_SUFFIX",
    "Patch",
    "PatchArrays",
    "PatchCollection",
    "ReadFailure",
    "SourceRef",
    "Split",
    "check_patch_size",
    "drop_baselines",
    "file_kind",
    "load_patch_arrays",
    "pairs_ok",
    "pixel_range",
    "read_image",
    "read_image_bits",
    "read_image_ref",
    "read_patches",
    "resize_patch",
    "scale_to_unit",
    "select_task",
    "split_of",
    "to_model_input",
    "validate_split",
]
