r"""Prediction reports: CSV, JSON (schema ``mammo.predictions/1``) and PDF, written atomically.

Every report carries provenance (model names, versions, sha256, software version, time) and
the disclaimer "research use only — not a medical device".

JSON::

    {"schema": "mammo.predictions/1", "created": ISO-8601, "software": {"version": ...},
     "disclaimer": "research use only — not a medical device",
     "models": [{"name", "version", "sha256", "task", "classes", "kind"}],
     "ensemble": {threshold, members, temperatures, weights, ...} | null,
     "source_encoding": how file names are written (below),
     "predictions": [{"source", "index", "bits", "sha256", "model", "task",
                      "probabilities": {class: p}, "predicted", "uncertainty", "entropy",
                      "flagged", "heatmap"}],
     "errors": [{"source", "error"}]}

One prediction row per patch and model (members first, then the ensemble). ``uncertainty`` is
the ensemble's member disagreement on the ensemble row and null on single-model rows. ``bits``
is the bit depth the patch was scaled by (``pixels / (2**bits - 1)``; null for float pixels).

File names: every report is valid UTF-8 whatever the names are. Bytes of a name that are not
valid UTF-8 are written as ``\xNN`` and control characters as ``\n``, ``\t``, ``\xNN``
(``SOURCE_ENCODING``). In CSV, a text cell that starts with ``=``, ``+``, ``-``, ``@``, tab or
carriage return gets a leading ``'`` so that no spreadsheet runs it as a formula (CWE-1236).
"""
from __future__ import annotations

import csv
import io as _io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core import DISCLAIMER
from mammo_core.atomic import atomic_path, atomic_write_text
from mammo_core.errors import MammoError
from mammo_core.safeio import shown
from mammo_core.session import ModelOutput, PatchPrediction, patch_key

SCHEMA = "mammo.predictions/1"
FORMATS = ("json", "csv", "pdf")
SOURCE_ENCODING = ("file names as given; bytes that are not valid UTF-8 are written as \\xNN and "
                   "control characters as \\n, \\r, \\t or \\xNN")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A text cell that no spreadsheet evaluates: a leading ``=``, ``+``, ``-``, ``@``, tab or
    carriage return gets a ``'`` in front (OWASP's advice against CSV injection, CWE-1236)."""
    s = "" if value is None else str(value)
    return "'" + s if s.startswith(_FORMULA_START) else s


@dataclass
class PredictionRun:
    """Everything a report needs."""

    predictions: Sequence[PatchPrediction]
    provenance: Mapping[str, Any]  # Session.provenance()
    errors: Sequence[Any] = ()  # ReadFailure-like (source, error)
    patches: Sequence[Any] = ()  # Patch objects (the PDF draws them)
    heatmaps: Mapping[tuple[str, str], np.ndarray] = field(default_factory=dict)
    heatmap_paths: Mapping[tuple[str, str], str] = field(default_factory=dict)


def _lookup(mapping: Mapping[tuple[str, str], Any], pred: PatchPrediction, model: str):
    for k in (pred.key, pred.sha256, pred.source):
        v = mapping.get((k, model))
        if v is not None:
            return v
    return None


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def rows(run: PredictionRun) -> Iterator[dict[str, Any]]:
    """One dict per patch and model, in the JSON ``predictions`` form."""
    for pred in run.predictions:
        outputs: list[tuple[ModelOutput, bool]] = [(o, False) for o in pred.per_model.values()]
        if pred.ensemble is not None:
            outputs.append((pred.ensemble, True))
        for out, is_ens in outputs:
            hm = _lookup(run.heatmap_paths, pred, out.model)
            if hm is None and is_ens:
                hm = _lookup(run.heatmap_paths, pred, "ensemble")
            yield {
                "source": shown(pred.source),
                "index": pred.index,
                "bits": pred.bits,
                "sha256": pred.sha256,
                "model": out.model,
                "task": out.task,
                "probabilities": {k: float(v) for k, v in out.probabilities.items()},
                "predicted": out.predicted,
                "uncertainty": _finite(pred.uncertainty) if is_ens else None,
                "entropy": _finite(pred.entropy) if is_ens else None,
                "flagged": bool(pred.flagged) if is_ens else None,
                "heatmap": None if hm is None else shown(hm),
            }


def to_json(run: PredictionRun) -> dict[str, Any]:
    prov = run.provenance
    return {
        "schema": SCHEMA,
        "created": prov.get("created"),
        "software": prov.get("software", {}),
        "disclaimer": DISCLAIMER,
        "models": [dict(m) for m in prov.get("models", [])],
        "ensemble": prov.get("ensemble"),
        "source_encoding": SOURCE_ENCODING,
        "predictions": list(rows(run)),
        "errors": [{"source": shown(e.source), "error": shown(e.error)} for e in run.errors],
    }


def json_text(run: PredictionRun) -> str:
    return json.dumps(to_json(run), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def csv_text(run: PredictionRun) -> str:
    rs = list(rows(run))
    classes: list[str] = []
    for r in rs:
        for c in r["probabilities"]:
            if c not in classes:
                classes.append(c)
    buf = _io.StringIO()
    prov = run.provenance
    buf.write(f"# {DISCLAIMER}; mammo {prov.get('software', {}).get('version')}; "
              f"created {prov.get('created')}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["source", "index", "bits", "sha256", "model", "task", "predicted", "uncertainty", "entropy",
                "flagged", *[f"p_{c}" for c in classes], "heatmap"])
    for r in rs:
        w.writerow([
            csv_cell(r["source"]), "" if r["index"] is None else r["index"],
            "" if r["bits"] is None else r["bits"], r["sha256"], csv_cell(r["model"]), csv_cell(r["task"]),
            csv_cell(r["predicted"]), "" if r["uncertainty"] is None else f"{r['uncertainty']:.6f}",
            "" if r["entropy"] is None else f"{r['entropy']:.6f}",
            "" if r["flagged"] is None else int(r["flagged"]),
            *["" if c not in r["probabilities"] else f"{r['probabilities'][c]:.6f}" for c in classes],
            csv_cell(r["heatmap"] or ""),
        ])
    for e in run.errors:
        w.writerow([csv_cell(shown(e.source)), "", "", "", "", "", "ERROR", "", "", "", *[""] * len(classes), ""])
    return buf.getvalue()


def write_json(path: str | Path, run: PredictionRun) -> Path:
    atomic_write_text(path, json_text(run))
    return Path(path)


def write_csv(path: str | Path, run: PredictionRun) -> Path:
    atomic_write_text(path, csv_text(run))
    return Path(path)


def _short(h: str | None, n: int = 16) -> str:
    return (h or "")[:n]


def _page(fig, pred: PatchPrediction, patch, run: PredictionRun) -> None:
    from mammo_core.explain import overlay, to_uint8

    prov = run.provenance
    primary = pred.ensemble or next(iter(pred.per_model.values()))
    fig.suptitle(shown(Path(pred.source).name) + ("" if pred.index is None else f" [{pred.index}]"),
                 fontsize=14, y=0.97)
    fig.text(0.5, 0.935, DISCLAIMER.upper(), ha="center", fontsize=10, color="firebrick",
             weight="bold")
    ax1 = fig.add_axes([0.06, 0.62, 0.4, 0.28])
    ax2 = fig.add_axes([0.54, 0.62, 0.4, 0.28])
    for ax in (ax1, ax2):
        ax.set_xticks([])
        ax.set_yticks([])
    hm_model = primary.model
    hm = _lookup(run.heatmaps, pred, hm_model)
    if hm is None and pred.ensemble is not None:
        hm = _lookup(run.heatmaps, pred, "ensemble")
    if hm is None:
        for m in pred.per_model:
            hm = _lookup(run.heatmaps, pred, m)
            if hm is not None:
                hm_model = m
                break
    if patch is not None:
        ax1.imshow(to_uint8(patch.pixels), cmap="gray", vmin=0, vmax=255)
        ax1.set_title("patch (windowed min..max)", fontsize=9)
        if hm is not None:
            ax2.imshow(overlay(patch.pixels, np.asarray(hm)))
            ax2.set_title(f"Grad-CAM: {hm_model} ({primary.predicted if hm_model == primary.model else ''})",
                          fontsize=9)
        else:
            ax2.text(0.5, 0.5, "no heatmap computed", ha="center", va="center")
    else:
        ax1.text(0.5, 0.5, "pixels not available", ha="center", va="center")
        ax2.text(0.5, 0.5, "no heatmap", ha="center", va="center")

    axb = fig.add_axes([0.3, 0.36, 0.62, 0.2])
    names = list(primary.probabilities)
    vals = [primary.probabilities[c] for c in names]
    colors = ["tab:red" if c == primary.predicted else "tab:blue" for c in names]
    axb.barh(range(len(names)), vals, color=colors)
    axb.set_yticks(range(len(names)), names, fontsize=8)
    axb.invert_yaxis()
    axb.set_xlim(0, 1)
    axb.set_xlabel("probability", fontsize=8)
    for i, v in enumerate(vals):
        axb.text(min(v + 0.01, 0.9), i, f"{v:.3f}", va="center", fontsize=7)
    axb.set_title(f"{primary.model} ({primary.task}): predicted {primary.predicted}", fontsize=9)

    lines = []
    if pred.ensemble is not None:
        unc = "n/a (fewer than 2 members per factor)" if pred.uncertainty is None else f"{pred.uncertainty:.4f}"
        thr = (prov.get("ensemble") or {}).get("threshold")
        lines.append(f"Ensemble disagreement: {unc}" + ("" if thr is None else f" (threshold {thr:.4f})")
                     + ("  FLAGGED: members disagree" if pred.flagged else ""))
        if pred.entropy is not None:
            lines.append(f"Normalised entropy of the five-class distribution: {pred.entropy:.4f}")
    for name, out in pred.per_model.items():
        top = out.probabilities[out.predicted]
        lines.append(f"{name} ({out.task}): {out.predicted} {top:.3f}")
    lines.append("")
    lines.append("Models:")
    for m in prov.get("models", []):
        lines.append(f"  {m['name']} v{m['version']} [{m.get('kind', 'model')}, {m['task']}] "
                     f"sha256 {_short(m['sha256'])}")
    lines.append(f"Input sha256 (pixels): {pred.sha256}")
    lines.append("Intensity: " + ("float pixels in [0, 1]" if pred.bits is None
                                  else f"scaled by its {pred.bits}-bit depth (pixels / {(1 << pred.bits) - 1})"))
    lines.append(f"Created {prov.get('created')}  mammo {prov.get('software', {}).get('version')}")
    lines.append("Research use only \u2014 not a medical device.")
    fig.text(0.06, 0.32, "\n".join(lines[:40]), va="top", fontsize=7.5, family="monospace")


def write_pdf(path: str | Path, run: PredictionRun) -> Path:
    """A page per patch (patch, heatmap overlay, probability bars, uncertainty, provenance);
    a last page lists unreadable inputs. matplotlib Agg + PdfPages."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    by_key = {}
    for p in run.patches:
        by_key.setdefault(patch_key(p.source, p.index), p)
        by_key.setdefault(p.sha256, p)
    path = Path(path)
    meta = {"Title": "mammo predictions", "Subject": DISCLAIMER, "Creator": "mammo-patches"}
    with atomic_path(path) as tmp, PdfPages(tmp, metadata=meta) as pdf:
        if not run.predictions and not run.errors:
            fig = plt.figure(figsize=(8.27, 11.69))
            fig.text(0.5, 0.5, f"No predictions.\n{DISCLAIMER}", ha="center")
            pdf.savefig(fig)
            plt.close(fig)
        for pred in run.predictions:
            fig = plt.figure(figsize=(8.27, 11.69))
            _page(fig, pred, by_key.get(pred.key) or by_key.get(pred.sha256), run)
            pdf.savefig(fig)
            plt.close(fig)
        if run.errors:
            fig = plt.figure(figsize=(8.27, 11.69))
            text = "Inputs that could not be read:\n\n" + "\n".join(
                shown(f"{e.source}: {e.error}")[:110] for e in run.errors[:80])
            fig.text(0.06, 0.95, text, va="top", fontsize=8, family="monospace")
            fig.text(0.5, 0.03, DISCLAIMER, ha="center", fontsize=9, color="firebrick")
            pdf.savefig(fig)
            plt.close(fig)
    return path


def write_report(path: str | Path, fmt: str, run: PredictionRun) -> Path:
    fmt = fmt.lower()
    if fmt == "json":
        return write_json(path, run)
    if fmt == "csv":
        return write_csv(path, run)
    if fmt == "pdf":
        return write_pdf(path, run)
    raise MammoError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
