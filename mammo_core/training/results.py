"""What a training run returns and the tables it writes (shared by the Keras runner and the
pooled member). Research use only - not a medical device."""
from __future__ import annotations

import csv
import io as _io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core.atomic import atomic_write_text

# auc: of the probabilities; auc_hard_labels: of the argmax labels, as the study's tables
FOLD_COLUMNS = ("accuracy", "loss", "auc", "auc_hard_labels", "f1_macro")


@dataclass
class TrainResult:
    out_dir: Path
    bundle: Any  # mammo_core.bundle.BundleInfo
    metrics: dict
    history: list[dict]
    folds: list[dict] | None = None
    grid: list[dict] | None = None
    files: list[Path] = field(default_factory=list)


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def summarize_folds(rows: list[dict]) -> list[dict]:
    """Per-fold rows plus ``mean`` and ``std`` rows (the study's table layout)."""
    out = [dict(r) for r in rows]
    for stat, fn in (("mean", np.nanmean), ("std", np.nanstd)):
        row: dict[str, object] = {"fold": stat}
        for c in FOLD_COLUMNS:
            vals = np.array([r[c] if r[c] is not None else np.nan for r in rows], dtype=float)
            row[c] = float(fn(vals)) if np.isfinite(vals).any() else math.nan
        out.append(row)
    return out
