r"""Prediction reports: CSV, JSON (schema ``mammo.predictions/1``) and PDF, written atomically.

Every report carries provenance (model names, versions, sha256, software version, time) and
the disclaimer "research use only — not a medical device".

JSON::

    {"schema": "mammo.predictions/1", "created": ISO-8601, "software": {"version": ...},
     "disclaimer": "research use only — not a medical device",
     "models": [{"name", "version", "sha256", "task", "classes", "kind"}],
     "ensemble": {threshold, members, temperatures, weights, ...} | null,
     "source_encoding": how file names are written (below),
     "predictions": [{"source", "index", "bits", "source_ref", "sha256", "model", "task",
                      "probabilities": {class: p}, "predicted", "uncertainty", "entropy",
                      "flagged", "heatmap"}],
     "errors": [{"source", "error"}]}

One prediction row per patch and model (members first, then the ensemble). ``uncertainty`` is
the ensemble's member disagreement on the ensemble row and null on single-model rows. Each row
also gives ``true_label`` (when the data gives one), the model's measured held-out quality
(``heldout_auc``, ``heldout_auc_ci95``, ``quality``: above chance / at chance / below chance /
not measured, see :mod:`mammo_core.confidence`) and, on the ensemble row, ``agreement``
(agree / low / disagree). The JSON's ``rules`` and the CSV's first line state the call rule, the
agreement rule and the quality rule in words.

The PDF has a summary page (one row per patch) when it holds more than one patch, then one
page per patch (patch, heatmap overlay with colour bar and its target class, probability bars
with the call in red, agreement, each member's answer with its held-out AUC, provenance), and
every page carries the disclaimer and "page i of n".

Each row also gives ``bits``, the bit depth the patch was scaled by (``pixels / (2**bits -
1)``; null for float pixels), and ``source_ref``, the source image's identifiers
(:class:`mammo_core.io.SourceRef`: ``path`` and, where known, the DICOM ``study_uid``,
``series_uid``, ``sop_instance_uid``, ``sop_class_uid``, the ``frame`` and the ``window``
``[top, left, side]`` a patch was cut from; null for a plain image file).

File names: every report is valid UTF-8 whatever the names are. Bytes of a name that are not
valid UTF-8 are written as ``\xNN`` and control characters as ``\n``, ``\t``, ``\xNN``
(``SOURCE_ENCODING``). In CSV, a text cell that starts with ``=``, ``+``, ``-``, ``@``, tab or
carriage return gets a leading ``'`` so that no spreadsheet runs it as a formula (CWE-1236).
"""
from __future__ import annotations

import csv
import errno
import io as _io
import json
import math
import textwrap
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core import DISCLAIMER
from mammo_core.atomic import atomic_path, atomic_write_text
from mammo_core.confidence import (
    AGREEMENT_RULE,
    CALL_RULE,
    QUALITY_RULE,
    ModelQuality,
    agreement,
)
from mammo_core.ensemble import set_words
from mammo_core.errors import MammoError
from mammo_core.explain import finish_map, overlay, tissue_mask, to_uint8
from mammo_core.io import Patch, ReadFailure, to_model_input
from mammo_core.labels import LABEL_TO_NAME
from mammo_core.ood import BACKGROUND_RULE, FEATURE_RULE
from mammo_core.predictions import (
    ENSEMBLE,
    NORMAL_MAP_NOTE,
    HeldOut,
    ModelOutput,
    PatchPrediction,
    Provenance,
    asks_if_lesion,
    default_target,
    member_words,
)
from mammo_core.safeio import shown

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
    provenance: Provenance  # Session.provenance_record() (a JSON object is read with Provenance.from_json)
    errors: Sequence[Any] = ()  # ReadFailure-like (source, error)
    patches: Sequence[Any] = ()  # Patch objects (the PDF draws them)
    heatmaps: Mapping[tuple[str, str], np.ndarray] = field(default_factory=dict)
    heatmap_paths: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # (patch key, model) -> {"target": class name, "method": "gradcam" ...}; without an entry
    # a map explains the default target (predictions.default_target)
    heatmap_meta: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.provenance, Provenance):
            self.provenance = Provenance.from_json(self.provenance)
        # a non-finite answer (NaN from a broken model, an overflowing ensemble) is an error for
        # that patch, never a number in a report
        bad = {id(p): why for p in self.predictions if (why := p.non_finite())}
        if bad:
            self.errors = [*self.errors, *(ReadFailure(p.key, bad[id(p)]) for p in self.predictions
                                          if id(p) in bad)]
            self.predictions = [p for p in self.predictions if id(p) not in bad]
        self.heatmaps = canonical_keys(self.heatmaps, self.predictions)
        self.heatmap_paths = canonical_keys(self.heatmap_paths, self.predictions)
        self.heatmap_meta = canonical_keys(self.heatmap_meta, self.predictions)


def canonical_keys(mapping: Mapping[tuple[str, str], Any],
                   predictions: Sequence[PatchPrediction]) -> dict[tuple[str, str], Any]:
    """A heatmap mapping keyed the one way reports read it: ``(patch key, model name)``.
    Callers may name the patch by its key, its pixels' sha256 or its source file (every row of
    that file), and the ensemble by its bundle name or ``"ensemble"``; the more specific name
    wins."""
    if not mapping:
        return {}
    models = sorted({m for _k, m in mapping}, key=lambda m: m == ENSEMBLE)  # the alias last
    out: dict[tuple[str, str], Any] = {}
    for pred in predictions:
        for model in models:
            name = pred.ensemble.model if model == ENSEMBLE and pred.ensemble is not None else model
            for k in (pred.key, pred.sha256, pred.source):
                v = mapping.get((k, model))
                if v is not None:
                    out.setdefault((pred.key, name), v)
                    break
    return out


def rules() -> dict[str, str]:
    """The rules every report states in words."""
    return {"call": CALL_RULE, "agreement": AGREEMENT_RULE, "quality": QUALITY_RULE,
            "conformal": CONFORMAL_RULE, "ood": OOD_RULE}


CONFORMAL_RULE = ("the call's conformal set: the classes that conform at the stated level (class-conditional, "
                  "calibrated on out-of-fold predictions of the training women); a set of more than one "
                  "class (or none) is uncertain")
OOD_RULE = f"warned when the {BACKGROUND_RULE}; and when the {FEATURE_RULE}"


def _qualities(run: PredictionRun) -> dict[str, ModelQuality]:
    """Held-out quality per model name, from the provenance's ``models[].heldout``."""
    return {m.name: _quality(m.name, m.heldout) for m in run.provenance.models}


def _quality(name: str, h: HeldOut | None, question: str | None = None) -> ModelQuality:
    if h is None:
        return ModelQuality(name, question=question)
    return ModelQuality(model=name, auc=h.auc, ci95=h.auc_ci95, n=h.n, split=h.split, question=question,
                        blind=h.blind)


def _questions(run: PredictionRun) -> dict[str, list[ModelQuality]]:
    """Per-question held-out quality of ensembles, from ``models[].heldout_questions``."""
    return {m.name: [_quality(m.name, h, q) for q, h in m.heldout_questions.items()]
            for m in run.provenance.models}


def _true_labels(run: PredictionRun) -> dict[str, str]:
    """patch key (and sha256) -> true class name, for patches whose data gives a label."""
    out: dict[str, str] = {}
    for p in run.patches:
        lab = getattr(p, "label", None)
        if lab is None or int(lab) not in LABEL_TO_NAME:
            continue
        out.setdefault(p.key, LABEL_TO_NAME[int(lab)])
        out.setdefault(p.sha256, LABEL_TO_NAME[int(lab)])
    return out


def _agreement(pred: PatchPrediction):
    e = pred.ensemble
    if e is None:
        return None
    return agreement(e.probabilities.get(e.predicted, 0.0), pred.flagged)


def _lookup(mapping: Mapping[tuple[str, str], Any], pred: PatchPrediction, model: str):
    return mapping.get((pred.key, model))  # keys made canonical by PredictionRun


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def rows(run: PredictionRun) -> Iterator[dict[str, Any]]:
    """One dict per patch and model, in the JSON ``predictions`` form."""
    quality = _qualities(run)
    truth = _true_labels(run)
    for pred in run.predictions:
        agree = _agreement(pred)
        true_label = truth.get(pred.key) or truth.get(pred.sha256)
        outputs: list[tuple[ModelOutput, bool]] = [(o, False) for o in pred.per_model.values()]
        if pred.ensemble is not None:
            outputs.append((pred.ensemble, True))
        for out, is_ens in outputs:
            hm = _lookup(run.heatmap_paths, pred, out.model)
            yield {
                "source": shown(pred.source),
                "index": pred.index,
                "bits": pred.bits,
                "source_ref": None if pred.source_ref is None else dict(pred.source_ref),
                "sha256": pred.sha256,
                "model": out.model,
                "task": out.task,
                "probabilities": {k: float(v) for k, v in out.probabilities.items()},
                "predicted": out.predicted,
                "uncertainty": _finite(pred.uncertainty) if is_ens else None,
                "entropy": _finite(pred.entropy) if is_ens else None,
                "flagged": bool(pred.flagged) if is_ens else None,
                "heatmap": None if hm is None else shown(hm),
                "true_label": true_label,
                "heldout_auc": q.auc if (q := quality.get(out.model)) is not None else None,
                "heldout_auc_ci95": None if q is None or q.ci95 is None else list(q.ci95),
                "quality": ModelQuality(out.model).status if q is None else q.status,
                "agreement": agree.state if is_ens and agree is not None else None,
                "conformal_set": list(pred.conformal) if is_ens and pred.conformal is not None else None,
                "conformal_level": pred.level if is_ens else None,
                "uncertain": pred.uncertain if is_ens and pred.conformal is not None else None,
                "background_share": None if pred.ood is None else round(pred.ood.background, 4),
                "feature_distance": None if pred.ood is None or pred.ood.distance is None
                else round(pred.ood.distance, 4),
                "warnings": list(pred.warnings),
            }


def to_json(run: PredictionRun) -> dict[str, Any]:
    prov = run.provenance
    return {
        "schema": SCHEMA,
        "created": prov.created,
        "software": {"name": prov.software_name, "version": prov.software_version},
        "disclaimer": DISCLAIMER,
        "rules": rules(),
        "models": [m.to_json() for m in prov.models],
        "ensemble": None if prov.ensemble is None else prov.ensemble.to_json(),
        "engine": None if prov.engine is None else dict(prov.engine),
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
    rl = rules()
    buf.write(f"# {DISCLAIMER}; mammo {prov.software_version}; "
              f"created {prov.created}; {engine_text(prov)}; {rl['call']}; "
              f"agreement: {rl['agreement']}; quality: {rl['quality']}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["source", "index", "bits", "sha256", "model", "task", "predicted", "uncertainty", "entropy",
                "flagged", *[f"p_{c}" for c in classes], "heatmap", "true_label", "heldout_auc",
                "heldout_auc_ci_low", "heldout_auc_ci_high", "quality", "agreement", "conformal_set",
                "conformal_level", "uncertain", "background_share", "feature_distance", "warnings"])
    for r in rs:
        w.writerow([
            csv_cell(r["source"]), "" if r["index"] is None else r["index"],
            "" if r["bits"] is None else r["bits"], r["sha256"], csv_cell(r["model"]), csv_cell(r["task"]),
            csv_cell(r["predicted"]), "" if r["uncertainty"] is None else f"{r['uncertainty']:.6f}",
            "" if r["entropy"] is None else f"{r['entropy']:.6f}",
            "" if r["flagged"] is None else int(r["flagged"]),
            *["" if c not in r["probabilities"] else f"{r['probabilities'][c]:.6f}" for c in classes],
            csv_cell(r["heatmap"] or ""), csv_cell(r["true_label"] or ""),
            "" if r["heldout_auc"] is None else f"{r['heldout_auc']:.4f}",
            *(["", ""] if r["heldout_auc_ci95"] is None else [f"{v:.4f}" for v in r["heldout_auc_ci95"]]),
            csv_cell(r["quality"]), csv_cell(r["agreement"] or ""),
            "" if r["conformal_set"] is None else csv_cell("|".join(r["conformal_set"])),
            "" if r["conformal_level"] is None else f"{r['conformal_level']:.2f}",
            "" if r["uncertain"] is None else int(r["uncertain"]),
            "" if r["background_share"] is None else f"{r['background_share']:.4f}",
            "" if r["feature_distance"] is None else f"{r['feature_distance']:.4f}",
            csv_cell("; ".join(r["warnings"])),
        ])
    for e in run.errors:
        w.writerow([csv_cell(shown(e.source)), "", "", "", "", "", "ERROR", "", "", "", *[""] * len(classes), "",
                    "", "", "", "", "", "", *[""] * 6])
    return buf.getvalue()


def engine_text(prov: Provenance) -> str:
    """``engine openvino 2026.4.1 f32 (deviation from Keras f32: ...)``: what computed the
    predictions, as the CSV header and the PDF state it (the JSON has the object)."""
    eng = prov.engine
    if not eng:
        return "engine not recorded"
    text = f"engine {eng['name']} {eng['version']} {eng['precision']}"
    if eng.get("note"):
        text += f" ({eng['note']})"
    if eng.get("deviation"):
        text += f"; deviation from Keras f32: {eng['deviation']}"
    return text


def write_json(path: str | Path, run: PredictionRun) -> Path:
    atomic_write_text(path, json_text(run))
    return Path(path)


def write_csv(path: str | Path, run: PredictionRun) -> Path:
    atomic_write_text(path, csv_text(run))
    return Path(path)


def _short(h: str | None, n: int = 16) -> str:
    return (h or "")[:n]


A4 = (8.27, 11.69)
SUMMARY_ROWS = 38  # rows of the summary table per page
GREY = "0.45"


def _name(pred: PatchPrediction, width: int = 60) -> str:
    name = shown(Path(pred.source).name) + ("" if pred.index is None else f" [{pred.index}]")
    return name if len(name) <= width else "\u2026" + name[-(width - 1):]


def _pretty(name: str | None) -> str:
    return "" if not name else name.replace("_", " ")


def _footer(fig, page: int, pages: int) -> None:
    """Disclaimer and page number on every page."""
    fig.text(0.06, 0.02, DISCLAIMER.capitalize() + ".", ha="left", fontsize=8, color="firebrick")
    fig.text(0.94, 0.02, f"page {page} of {pages}", ha="right", fontsize=8)


def _summary_pages(n: int) -> int:
    return 0 if n < 2 else math.ceil(n / SUMMARY_ROWS)


def _summary_page(fig, run: PredictionRun, part: Sequence[PatchPrediction], first: int) -> None:
    """One row per patch: call, probability, uncertainty, flag, agreement, true label."""
    truth = _true_labels(run)
    fig.suptitle("Summary of predictions", fontsize=14, y=0.97)
    fig.text(0.5, 0.935, DISCLAIMER.upper(), ha="center", fontsize=10, color="firebrick", weight="bold")
    fig.text(0.06, 0.91, f"Ensemble {CALL_RULE}.\nSet: {CONFORMAL_RULE}.\nWarning: {OOD_RULE}."
             f"\nMembers (agreement): {AGREEMENT_RULE}.", va="top",
             fontsize=7, wrap=True)
    head = ["#", "patch", "call", "P(call)", "set", "warning", "members", "true label"]
    cells = []
    for i, pred in enumerate(part, start=first):
        e = pred.ensemble
        if e is None:  # no ensemble: the first model's own answer
            e = next(iter(pred.per_model.values()))
        agree = _agreement(pred)
        unc = "" if pred.uncertainty is None else f"{pred.uncertainty:.3f}"
        cset = "" if pred.conformal is None else (
            ("UNCERTAIN: " if pred.uncertain else "") + ", ".join(_pretty(c) for c in pred.conformal))
        cells.append([str(i), _name(pred, 34), _pretty(e.predicted),
                      f"{e.probabilities.get(e.predicted, 0.0):.3f}", cset or unc,
                      "OOD" if pred.warnings else "", "" if agree is None else agree.state,
                      _pretty(truth.get(pred.key) or truth.get(pred.sha256)) or "\u2013"])
    ax = fig.add_axes([0.04, 0.06, 0.92, 0.8])
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=head, loc="upper center", cellLoc="left",
                     colWidths=[0.04, 0.24, 0.15, 0.06, 0.23, 0.06, 0.07, 0.14])
    table.auto_set_font_size(False)
    table.set_fontsize(6.5)
    table.scale(1.0, 1.25)
    for (r, _c), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
        cell.set_linewidth(0.3)


def _heatmap_title(run: PredictionRun, pred: PatchPrediction, model: str) -> str:
    meta = _lookup(run.heatmap_meta, pred, model) or {}
    method = meta.get("method", "gradcam")
    method = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}.get(method, method)
    target = meta.get("target")
    if not target:  # the default target (the most likely abnormal class)
        out = pred.output(model)
        target = None if out is None else default_target(out)
    title = f"{method} of {model} for class: {_pretty(target) or 'unknown'}"
    return title + (f"\n({NORMAL_MAP_NOTE})" if target == "baseline" else "")


def _page(fig, pred: PatchPrediction, patch, run: PredictionRun) -> None:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    prov = run.provenance
    quality = _qualities(run)
    truth = _true_labels(run)
    primary = pred.ensemble or next(iter(pred.per_model.values()))
    fig.suptitle(_name(pred, 80), fontsize=13, y=0.985)
    fig.text(0.5, 0.945, DISCLAIMER.upper(), ha="center", fontsize=10, color="firebrick",
             weight="bold")
    true_label = truth.get(pred.key) or truth.get(pred.sha256)
    if true_label:
        fig.text(0.5, 0.927, f"True label (from the data): {_pretty(true_label)}", ha="center", fontsize=9)
    ax1 = fig.add_axes([0.06, 0.64, 0.38, 0.26])
    ax2 = fig.add_axes([0.50, 0.64, 0.38, 0.26])
    cax = fig.add_axes([0.90, 0.64, 0.015, 0.26])
    for ax in (ax1, ax2):
        ax.set_xticks([])
        ax.set_yticks([])
    hm_model = primary.model
    hm = _lookup(run.heatmaps, pred, hm_model)
    if hm is None:
        for m in pred.per_model:
            hm = _lookup(run.heatmaps, pred, m)
            if hm is not None:
                hm_model = m
                break
    cax.set_visible(False)
    if patch is not None:
        ax1.imshow(to_uint8(patch.pixels), cmap="gray", vmin=0, vmax=255)
        ax1.set_title("patch (windowed min..max)", fontsize=9)
        if hm is not None:
            mask = _tissue(patch)
            shown = display_map(hm, patch)
            ax2.imshow(overlay(patch.pixels, shown, mask=mask))
            ax2.set_title(_heatmap_title(run, pred, hm_model), fontsize=8)
            cax.set_visible(True)
            fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=cax)
            cax.tick_params(labelsize=7)
            cax.set_ylabel("relevance (per patch: 1 = most)", fontsize=7)
            ax2.set_xlabel("background below the tissue threshold left uncoloured", fontsize=7)
        else:
            ax2.text(0.5, 0.5, "no heatmap computed", ha="center", va="center")
    else:
        ax1.text(0.5, 0.5, "pixels not available", ha="center", va="center")
        ax2.text(0.5, 0.5, "no heatmap", ha="center", va="center")

    axb = fig.add_axes([0.3, 0.44, 0.62, 0.15])
    names = list(primary.probabilities)
    vals = [primary.probabilities[c] for c in names]
    colors = ["tab:red" if c == primary.predicted else "tab:blue" for c in names]
    axb.barh(range(len(names)), vals, color=colors)
    axb.set_yticks(range(len(names)), [_pretty(n) for n in names], fontsize=8)
    axb.invert_yaxis()
    axb.set_xlim(0, 1)
    axb.set_xlabel("probability (red = the call)", fontsize=8)
    for i, v in enumerate(vals):
        axb.text(min(v + 0.01, 0.9), i, f"{v:.3f}", va="center", fontsize=7)
    axb.set_title(f"{primary.model} ({primary.task}): call {_pretty(primary.predicted)} "
                  f"{primary.probabilities.get(primary.predicted, 0.0):.3f}", fontsize=9)

    y = 0.385
    step = 0.0106
    bottom = 0.04  # the footer sits below

    def line(text: str, color: str = "black", size: float = 7.0) -> None:
        nonlocal y
        indent = " " * (len(text) - len(text.lstrip()) + 4)
        for part in textwrap.wrap(text, 112, subsequent_indent=indent) or [""]:
            if y < bottom:
                return
            if y - step < bottom:
                part = "\u2026 (the rest is in the JSON / CSV report)"
            fig.text(0.06, y, part, va="top", fontsize=size, family="monospace", color=color)
            y -= step

    for w in pred.warnings:
        line(f"WARNING: {w}", color="firebrick")
    if pred.ensemble is not None:
        line(f"Ensemble {CALL_RULE}.")
        if pred.conformal is not None and pred.level is not None:
            line(set_words(pred.conformal, pred.level, _pretty)
                 + (" (uncertain)" if pred.uncertain else ""),
                 color="darkorange" if pred.uncertain else "black")
        agree = _agreement(pred)
        unc = "n/a (fewer than 2 members per factor)" if pred.uncertainty is None else f"{pred.uncertainty:.4f}"
        thr = None if prov.ensemble is None else prov.ensemble.threshold
        line(f"{agree.text}: disagreement {unc}" + ("" if thr is None else f" (threshold {thr:.4f})")
             + f", P(call) {pred.ensemble.probabilities.get(pred.ensemble.predicted, 0.0):.3f}",
             color=GREY)
        if pred.entropy is not None:
            line(f"Normalised entropy of the five-class distribution: {pred.entropy:.4f}")
        q = quality.get(pred.ensemble.model)
        if q is not None:
            line(f"Ensemble {q.text()}")
        questions = _questions(run).get(pred.ensemble.model) or []
        if questions:
            line("  by question: " + "; ".join(
                f"{(qq.question or '').replace('_', ' ')} {qq.auc_text().removeprefix('AUC ')}"
                + ("" if qq.trusted else f" ({qq.status})") for qq in questions))
        y -= step / 2
    line("Member models (answer; measured quality on held-out data; grey = not above chance):")
    for name, out in pred.per_model.items():
        q = quality.get(name) or ModelQuality(name)
        normal_call = pred.ensemble is not None and pred.ensemble.predicted == "baseline"
        unasked = normal_call and asks_if_lesion(out.task, out.probabilities)
        color = "black" if q.trusted and not unasked else GREY
        line(f"  {name} ({out.task}): {member_words(out)}"
             + (" (not asked: the call is normal tissue)" if unasked else ""), color=color)
        line(f"      {q.text()}", color=color)
    y -= step / 2
    line("Models:")
    for rec in prov.models:
        line(f"  {rec.name} v{rec.version} [{rec.kind}, {rec.task}] sha256 {_short(rec.sha256)}")
    line(f"Input sha256 (pixels): {pred.sha256}")
    line("Intensity: " + ("float pixels in [0, 1]" if pred.bits is None
                          else f"scaled by its {pred.bits}-bit depth (pixels / {(1 << pred.bits) - 1})"))
    line(f"Created {prov.created}  mammo {prov.software_version}")
    line(engine_text(prov).capitalize())


def _tissue(patch) -> np.ndarray:
    """The tissue mask of a patch on the model-input scale (a ``Patch`` by its own bit depth)."""
    return tissue_mask(to_model_input(patch if isinstance(patch, Patch) else patch.pixels)[0])


def display_map(heatmap: np.ndarray, patch) -> np.ndarray:
    """The map as every report draws it: per patch [0, 1] with the background masked out
    (:func:`mammo_core.explain.finish_map`; a no-op for maps from :class:`Session`)."""
    return finish_map(np.asarray(heatmap), _tissue(patch))


def pdf_pages(run: PredictionRun) -> Iterator[Any]:
    """The PDF's pages as matplotlib figures, in order, each with the disclaimer and "page i of
    n" (the caller closes them): a summary page (more than one patch; 38 rows a page), a page
    per patch, a last page listing unreadable inputs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    by_key: dict[str, Any] = {}
    for p in run.patches:
        by_key.setdefault(p.key, p)
        by_key.setdefault(p.sha256, p)
    preds = list(run.predictions)
    n_summary = _summary_pages(len(preds))
    pages = max(n_summary + len(preds) + (1 if run.errors else 0), 1)
    page = 0

    def done(fig):
        nonlocal page
        page += 1
        _footer(fig, page, pages)
        return fig

    if not preds and not run.errors:
        fig = plt.figure(figsize=A4)
        fig.text(0.5, 0.5, "No predictions.", ha="center")
        yield done(fig)
    for s in range(n_summary):
        fig = plt.figure(figsize=A4)
        _summary_page(fig, run, preds[s * SUMMARY_ROWS:(s + 1) * SUMMARY_ROWS], s * SUMMARY_ROWS + 1)
        yield done(fig)
    for pred in preds:
        fig = plt.figure(figsize=A4)
        _page(fig, pred, by_key.get(pred.key) or by_key.get(pred.sha256), run)
        yield done(fig)
    if run.errors:
        fig = plt.figure(figsize=A4)
        text = "Inputs that could not be read:\n\n" + "\n".join(
            shown(f"{e.source}: {e.error}")[:110] for e in run.errors[:80])
        fig.text(0.06, 0.95, text, va="top", fontsize=8, family="monospace")
        yield done(fig)


def write_pdf(path: str | Path, run: PredictionRun) -> Path:
    """The PDF report (:func:`pdf_pages`), written atomically. matplotlib Agg + PdfPages."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    meta = {"Title": "mammo predictions", "Subject": DISCLAIMER, "Creator": "mammo-patches"}
    try:
        with atomic_path(path) as tmp, PdfPages(tmp, metadata=meta) as pdf:
            for fig in pdf_pages(run):
                try:
                    pdf.savefig(fig)
                finally:
                    plt.close(fig)
    except zlib.error as exc:  # the PDF's compressor failing after a write error (a full disk)
        cause = exc.__context__
        if isinstance(cause, OSError) and cause.strerror:
            raise OSError(cause.errno, cause.strerror, str(path)) from exc
        raise OSError(errno.EIO, f"the PDF could not be written ({exc}); is the disk full?",
                      str(path)) from exc
    finally:
        plt.close("all")
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
