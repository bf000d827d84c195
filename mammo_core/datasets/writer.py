"""Writing a built patch set (CBIS-DDSM layout) so that a failed run leaves no half set.

Everything is written into a fresh temporary folder beside ``out_dir`` (each file through
``mammo_core.atomic``); only when all files are there does the folder become ``out_dir``
(one rename when ``out_dir`` is absent or empty, else file-by-file ``os.replace``).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mammo_core.atomic import atomic_path, atomic_write_text
from mammo_core.datasets.contact_sheet import SheetEntry, write_sheet
from mammo_core.errors import DatasetError

ARRAY_SPLITS = ("train", "public_test")


def csv_text(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return buf.getvalue()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, arr, allow_pickle=False)


def write_patch_set(out_dir: str | Path, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    metadata_rows: Sequence[Mapping], metadata_columns: Sequence[str],
                    skipped_rows: Sequence[Mapping], skipped_columns: Sequence[str],
                    sheets: Mapping[str, tuple[str, list[SheetEntry]]],
                    info: Mapping) -> list[Path]:
    """Write ``<split>_tensor.npy`` / ``<split>_labels.npy`` for train and public_test (uint16
    (N,150,150) / int64 (N,)), ``metadata.csv``, ``skipped.csv``, ``build.json`` and the contact
    sheets (``sheets``: file name -> (title, entries)). Returns the final paths."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError("exists and is not a folder", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the set is an ordinary folder
    try:
        for split in ARRAY_SPLITS:
            images, labels = arrays[split]
            images = np.asarray(images, dtype=np.uint16).reshape(-1, 150, 150)
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            if images.shape[0] != labels.shape[0]:
                raise DatasetError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
            _save_npy(tmp / f"{split}_tensor.npy", images)
            _save_npy(tmp / f"{split}_labels.npy", labels)
        atomic_write_text(tmp / "metadata.csv", csv_text(metadata_rows, metadata_columns))
        atomic_write_text(tmp / "skipped.csv", csv_text(skipped_rows, skipped_columns))
        atomic_write_text(tmp / "build.json", json.dumps(dict(info), indent=2, default=str) + "\n")
        for name, (title, entries) in sheets.items():
            write_sheet(tmp / name, entries, title)
        names = sorted(p.name for p in tmp.iterdir())
        if not out.exists() or not any(out.iterdir()):
            if out.exists():
                out.rmdir()
            os.rename(tmp, out)
        else:
            for old in out.glob("contact_sheet_*.png"):
                if old.name not in names:
                    old.unlink()
            for name in names:
                os.replace(tmp / name, out / name)
            tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / n for n in names]
