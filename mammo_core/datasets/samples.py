"""Pick a few real patches from a built set's held-out split and write them as 16-bit PNGs.

Used to make ``assets/samples/`` (the viewer's embedded default): every abnormality patch of the
held-out split up to ``n`` in all, the rest baselines, so all five classes appear. Writes
``<index>_<class>_<image>.png`` (uint16, 150 x 150), ``labels.csv`` (file, label, class_name,
image, patient, split, source index) and a ``NOTICE`` with the MIAS licence and citation.
"""
from __future__ import annotations

import csv
import io as _io
from pathlib import Path

import numpy as np

from mammo_core.atomic import atomic_path, atomic_write_text
from mammo_core.errors import DatasetError
from mammo_core.io import load_patch_arrays
from mammo_core.labels import BASELINE, CLASS_NAMES

MIAS_NOTICE = """Sample patches: research use only - not a medical device.

These 150 x 150 patches were cut from mammograms of the mini-MIAS database by the reference patch
protocol v1 (mammo dataset build-mias; see README), from the women of this project's held-out test
split only (none of them was used to train or tune the bundled models).

Licence: the MIAS database is made available for research use only; modification is allowed;
it may not be sold or rented (see the MIAS Licence.txt distributed with the database).
Any publication or report that uses these data must cite:
J Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database",
Exerpta Medica, International Congress Series 1069, pp. 375-378, 1994.
"""


def _metadata_rows(folder: Path) -> dict[tuple[str, int], dict[str, str]]:
    path = folder / "metadata.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for r in rows:
        try:
            out[(r.get("split", ""), int(r["index"]))] = r
        except (KeyError, ValueError):
            raise DatasetError("metadata.csv rows need integer 'index' and 'split'", path) from None
    return out


def write_samples(data_dir: str | Path, out_dir: str | Path, n: int = 20, split: str = "public_test") -> list[Path]:
    """Write up to ``n`` patches of ``split`` of the set in ``data_dir`` into ``out_dir``."""
    import cv2

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    arrays = load_patch_arrays(data_dir)
    if split not in arrays.splits or arrays.splits[split].labels is None:
        raise DatasetError(f"no labelled {split} split to take samples from", data_dir)
    sp = arrays.splits[split]
    labels = np.asarray(sp.labels)
    meta = _metadata_rows(data_dir)
    abnormal = [int(i) for i in np.flatnonzero(labels != BASELINE)]
    baselines = [int(i) for i in np.flatnonzero(labels == BASELINE)]
    # Round-robin over the abnormal classes so every class is present even when n is small;
    # at least one slot (more when abnormal patches run out) goes to baselines.
    by_class = {c: [i for i in abnormal if labels[i] == c] for c in range(1, len(CLASS_NAMES))}
    chosen: list[int] = []
    n_abnormal = max(0, n - max(1, n // 4)) if baselines else n
    while len(chosen) < n_abnormal and any(by_class.values()):
        for c in sorted(by_class):
            if by_class[c] and len(chosen) < n_abnormal:
                chosen.append(by_class[c].pop(0))
    chosen += baselines[: max(0, n - len(chosen))]
    chosen.sort()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rows = []
    for idx in chosen:
        lab = int(labels[idx])
        m = meta.get((split, idx), {})
        image = m.get("image", "")
        name = f"{idx:03d}_{CLASS_NAMES[lab]}{'_' + image if image else ''}.png"
        img = np.asarray(sp.images[idx])
        if img.ndim == 3:
            img = img[..., 0]
        if img.dtype == np.uint8:
            img = img.astype(np.uint16) * 257
        with atomic_path(out_dir / name) as tmp:
            if not cv2.imwrite(str(tmp), img.astype(np.uint16)):
                raise DatasetError("OpenCV could not write the PNG", out_dir / name)
        written.append(out_dir / name)
        rows.append({"file": name, "label": lab, "class_name": CLASS_NAMES[lab], "image": image,
                     "patient": m.get("patient", ""), "split": split, "source_index": idx})
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["file"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out_dir / "labels.csv", buf.getvalue())
    atomic_write_text(out_dir / "NOTICE", MIAS_NOTICE)
    return written
