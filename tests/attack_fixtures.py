"""Hostile inputs for the hardening tests (issue 11), built at run time in a test's folder.

Every builder writes real files (or special files: FIFOs, symlinks to /dev/zero, symlink
cycles) and returns their paths. Nothing here is committed data; nothing here may hang by
itself: the *readers* of these files are what the tests run under a timeout.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from filemakers import write_cv2, write_dicom

REPO = Path(__file__).resolve().parent.parent
FORMULA_PREFIXES = ("=", "+", "-", "@")


def patch16(seed: int = 0) -> np.ndarray:
    """One real-looking 16-bit 150 x 150 patch (the test bundles' synthetic data)."""
    from bundle_factory import synthetic_patches

    return synthetic_patches(1, seed=seed, labels=np.array([1]))[0][0]


def good_png(path: Path, seed: int = 0) -> Path:
    return write_cv2(Path(path), patch16(seed))


def bad_float_npy(path: Path) -> Path:
    """A float32 patch with values up to 2.0: outside the [0, 1] the contract allows."""
    a = np.linspace(0, 2, 150 * 150, dtype=np.float32).reshape(150, 150)
    np.save(path, a)
    return Path(path)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return Path(path)


def link(path: Path, target: str | Path) -> Path:
    os.symlink(target, path)
    return Path(path)


def cycle_folder(root: Path, n_links: int = 2) -> Path:
    """A folder with one good PNG and ``n_links`` symlinks back to itself (``loop -> .``)."""
    root.mkdir(parents=True, exist_ok=True)
    good_png(root / "one.png")
    for i in range(n_links):
        os.symlink(".", root / f"loop{i}")
    return root


def png_header_only(path: Path, width: int, height: int, bit_depth: int = 16, colour: int = 6) -> Path:
    """A PNG whose IHDR declares ``width`` x ``height`` followed by a tiny IDAT and IEND (the
    decoder would have to allocate the whole image before finding the data short)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    raw = zlib.compress(b"\0" * 4096)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return Path(path)


def big_valid_png(path: Path, side: int = 10240) -> Path:
    """A valid 8-bit grey PNG of ``side`` x ``side`` pixels (10240^2 = 105 Mpx, ~100 kB on disk)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(6)
    row = b"\0" + bytes(side)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                           + chunk(b"IEND", b""))
    return Path(path)


def formula_names(folder: Path) -> list[Path]:
    """Good patches whose names start with a spreadsheet formula character, and one unreadable."""
    folder.mkdir(parents=True, exist_ok=True)
    out = [good_png(folder / '=HYPERLINK("http:__evil","click").png', 1),
           good_png(folder / "+1+1.png", 2), good_png(folder / "-2+3.png", 3), good_png(folder / "@SUM(1).png", 4)]
    bad = folder / "=cmd_bad.png"
    bad.write_text("not an image\n")
    out.append(bad)
    return out


def non_utf8_name(folder: Path) -> Path:
    """A good PNG whose file name is not valid UTF-8 (bytes 0xff 0xfe)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = os.fsencode(str(folder)) + b"/bad\xff\xfename.png"
    _ok, buf = __import__("cv2").imencode(".png", patch16(5))
    with open(raw, "wb") as fh:
        fh.write(buf.tobytes())
    return Path(os.fsdecode(raw))


def newline_name(folder: Path) -> Path:
    """A good PNG whose name forges a 'mammo: wrote' line on stderr."""
    folder.mkdir(parents=True, exist_ok=True)
    return good_png(folder / "x\nmammo: wrote forged.json (99 patches, 0 unreadable).png", 6)


def dicom_slope(path: Path, slope: float = 1e308) -> Path:
    return write_dicom(Path(path), (patch16(7) >> 4).astype(np.uint16), bits_stored=12, slope=slope,
                       intercept=0.0)


def dicom_rescaled(path: Path, slope: float = 1.0, intercept: float = 1.0, seed: int = 7) -> Path:
    """A 12-bit patch (BitsStored 12) with a modality rescale (issue 26 N2 / N8): intercept +1
    once moved the scale to 13 bits (/ 8191) and flipped a call; slope 1e-300 with intercept
    1e8 once made the image all zeros."""
    return write_dicom(Path(path), (patch16(seed) >> 4).astype(np.uint16), bits_stored=12,
                       slope=slope, intercept=intercept)


def dicom_corrupt_j2k(path: Path) -> Path:
    """A DICOM whose transfer syntax is JPEG 2000 and whose one fragment is a broken codestream
    (issue 26 N12: pydicom logs the decoder's traceback before raising)."""
    import pydicom
    from pydicom.encaps import encapsulate

    path = write_dicom(Path(path), (patch16(8) >> 4).astype(np.uint16), bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 100])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- bundles
def edit_card(bundle: Path, **changes) -> dict:
    card_path = Path(bundle) / "card.json"
    card = json.loads(card_path.read_text())
    for k, v in changes.items():
        if v is _DELETE:
            card.pop(k, None)
        else:
            card[k] = v
    card_path.write_text(json.dumps(card, indent=2))
    return card


_DELETE = object()


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


# --------------------------------------------------------------------------- subprocesses
def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    e["QT_QPA_PLATFORM"] = "offscreen"
    return e


READ_SNIPPET = (
    "import sys, os\n"
    "from mammo_core.io import read_patches\n"
    "c = read_patches([os.fsdecode(os.fsencode(a)) for a in sys.argv[2:]], recursive=sys.argv[1] == 'r')\n"
    "print('PATCHES', len(c.patches))\n"
    "for e in c.errors:\n"
    "    print('ERROR', ascii(str(e)))\n"
)


def _limit_memory(gib: int):
    """preexec_fn: cap the child's address space, so an unbounded read fails instead of eating
    the machine's memory (the attack a /dev/zero symlink is)."""
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))
    return apply


def read_in_subprocess(paths, recursive: bool = False, timeout: float = 60.0,
                       extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``read_patches`` in a child process (no TensorFlow) under ``timeout``; raises
    ``subprocess.TimeoutExpired`` when it hangs (the child is killed)."""
    e = env()
    e.update(extra_env or {})
    return subprocess.run([sys.executable, "-c", READ_SNIPPET, "r" if recursive else "-", *map(str, paths)],
                          capture_output=True, text=True, timeout=timeout, env=e, cwd=REPO, check=False,
                          preexec_fn=_limit_memory(3))


def mammo_in_subprocess(args, timeout: float = 300.0, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mammo_core", *map(str, args)], capture_output=True,
                          timeout=timeout, env=env(), cwd=REPO, check=False,
                          preexec_fn=_limit_memory(8), **kw)


# --------------------------------------------------------------------------- whole mammograms
def breast(shape=(600, 500), top: int = 65535, dtype=np.uint16, seed: int = 0) -> np.ndarray:
    """A synthetic whole mammogram: a noisy half disc of 'tissue' on the left edge, black
    background, values up to about 0.35 of ``top``."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w))
    inside = (yy - h / 2) ** 2 + xx ** 2 < (0.9 * min(h, w)) ** 2
    img[inside] = 0.25 + 0.05 * rng.standard_normal(int(inside.sum()))
    img[(yy - h // 2) ** 2 + (xx - w // 3) ** 2 < 20 ** 2] += 0.4
    return np.rint(np.clip(img, 0, 1) * top).astype(dtype)


def dicom_pixel_spacing(path: Path, value: bytes, pixels: np.ndarray | None = None) -> Path:
    """A DICOM mammogram whose PixelSpacing element holds ``value`` verbatim (any bytes: garbage,
    zero, negative, NaN, huge), written by patching the bytes of a valid file."""
    import pydicom

    path = Path(path)
    write_dicom(path, breast() if pixels is None else pixels)
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = "1.23456789\\1.2345678"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"1.23456789\\1.2345678", value.ljust(20)[:20]))
    return path
