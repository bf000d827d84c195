"""Property tests: whatever bytes a file holds, under any extension the readers accept, reading
it gives either a valid patch or the documented PatchReadError — never another exception."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mammo_core import io
from mammo_core.errors import PatchReadError

EXTENSIONS = [".npy", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".pgm", ".pnm", ".dcm", ".dicom", ""]

# Real headers as prefixes so the bytes get past the magic checks into the decoders.
PREFIXES = [
    b"",
    b"\x93NUMPY\x01\x00",
    b"\x93NUMPY\x01\x00v\x00{'descr': '<u2', 'fortran_order': False, 'shape': (150, 150), }",
    b"\x93NUMPY\x02\x00",
    b"\x89PNG\r\n\x1a\n",
    b"II*\x00",
    b"MM\x00*",
    b"\xff\xd8\xff\xe0",
    b"P5\n150 150\n65535\n",
    b"P2\n2 2\n255\n",
    b"\0" * 128 + b"DICM",
    b"\0" * 128 + b"DICM\x02\x00\x10\x00UI",
]

PROPS = settings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _valid_image(img: np.ndarray) -> None:
    assert isinstance(img, np.ndarray) and img.ndim == 2 and img.size > 0
    assert img.dtype in (np.uint8, np.uint16) or img.dtype.kind == "f"
    if img.dtype.kind == "f":
        assert np.isfinite(img).all()


@pytest.mark.parametrize("ext", EXTENSIONS)
@PROPS
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=4096))
def test_arbitrary_bytes_read_image(tmp_path, ext, prefix, body):
    path = tmp_path / f"fuzz{ext}"
    path.write_bytes(prefix + body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = io.read_image(path)
        except PatchReadError as err:
            assert err.path == str(path)
            assert "\n" not in str(err) and err.problem
            return
    _valid_image(img)


@pytest.mark.parametrize("ext", [".npy", ".png", ".dcm", ""])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=2048))
def test_arbitrary_bytes_read_patches_never_raises(tmp_path, ext, prefix, body):
    path = tmp_path / f"fuzz{ext}"
    path.write_bytes(prefix + body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coll = io.read_patches([path, tmp_path])
    for p in coll.patches:
        assert p.pixels.shape == (150, 150)
    for e in coll.errors:
        assert e.source == str(path) and e.error and "\n" not in e.error


@PROPS
@given(
    dtype=st.sampled_from(["u1", "<u2", ">u2", "i2", "i8", "f2", "f4", "f8", "c8", "?", "U3", "V4"]),
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple),
    fill=st.sampled_from([0.0, 0.5, 1.0, np.nan, np.inf]),
)
def test_arbitrary_npy_arrays(tmp_path, dtype, shape, fill):
    """Well-formed .npy files of any dtype and small shape: a valid image or PatchReadError."""
    path = tmp_path / "a.npy"
    arr = np.zeros(shape, dtype=dtype)
    if arr.dtype.kind in "fc":
        arr[...] = fill
    np.save(path, arr)
    try:
        img = io.read_image(path)
    except PatchReadError as err:
        assert err.path == str(path)
        return
    _valid_image(img)
    assert img.shape == shape[:2]
