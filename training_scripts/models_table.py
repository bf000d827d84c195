#!/usr/bin/env python3
"""Data statements for the bundled model cards, and MODELS.md generated from the cards.

    python training_scripts/models_table.py --data data/mias --models assets/models --annotate-cards
    python training_scripts/models_table.py --data data/mias --models assets/models --out assets/models/MODELS.md

``--annotate-cards`` adds to every card.json under ``--models`` the training-data statement
(mini-MIAS, protocol v1, which images are held out, counts per class and split, the MIAS licence
and citation) and, for the ensemble, its held-out metrics with 95 % bootstrap intervals
(five-class accuracy, macro F-score, ECE, confusion matrix; the three task AUCs), measured by
loading the shipped bundles and predicting the held-out split (public_test) once. Only the
card.json files change (the cards hash the model / ensemble files, not themselves); run
``mammo models manifest`` afterwards.

Without ``--annotate-cards`` it writes MODELS.md from the cards and the ensemble's metrics.json;
no number in MODELS.md is typed by hand. Research use only — not a medical device.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mammo_core import DISCLAIMER, logsetup
from mammo_core.bundle import bundle_dirs
from mammo_core.errors import MammoError
from mammo_core.jsonutil import json_safe

log = logging.getLogger("models_table")

MEMBER_ORDER = ("scratch_mass_calc", "scratch_benign_malignant", "vgg16_mass_calc",
                "vgg16_benign_malignant", "scratch_baseline_mass_calc", "vgg16b4_baseline_mass_calc")
TASK_TITLE = {
    "mass_calc": "2.1 / 3.1 mass vs calcification",
    "benign_malignant": "2.2 / 3.2 benign vs malignant",
    "baseline_mass_calc": "4 baseline vs mass vs calcification",
    "five_class": "5 five classes (ensemble)",
}
GOALS = (("auc_abnormal_vs_baseline", "abnormal vs baseline (1 - P(baseline))", 0.85),
         ("auc_mass_vs_calcification", "mass vs calcification (abnormal patches)", 0.90),
         ("auc_benign_vs_malignant", "benign vs malignant (abnormal patches)", None))
REPRODUCE = "training_scripts/train_bundled.sh   # or: make models"


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="models_table.py",
        description="Add data statements (and the ensemble's held-out metrics) to the bundled "
                    "cards, or write MODELS.md from the cards. " + DISCLAIMER + ".")
    p.add_argument("--data", type=Path, required=True, help="the built mini-MIAS folder (build.json, metadata.csv)")
    p.add_argument("--models", type=Path, default=Path("assets/models"), help="bundles folder (default assets/models)")
    p.add_argument("--annotate-cards", action="store_true", help="write data statements into the cards")
    p.add_argument("--out", type=Path, help="write MODELS.md here")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    args = p.parse_args(argv)
    if not args.annotate_cards and args.out is None:
        p.error("give --annotate-cards and/or --out")
    return args


# --------------------------------------------------------------------------- data statement

def data_statement(data: Path) -> dict:
    try:
        build = json.loads((data / "build.json").read_text(encoding="utf-8"))
        with open(data / "metadata.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, ValueError) as exc:
        raise MammoError(f"{data}: cannot read build.json / metadata.csv: {exc}") from None
    held = sorted({r["image"] for r in rows if r["split"] == "public_test"})
    train_imgs = sorted({r["image"] for r in rows if r["split"] == "train"})
    held_lesions = [{"image": r["image"], "lesion": r["lesion"], "class": r["class_name"],
                     "mias_class": r["mias_class"], "severity": r["severity"]}
                    for r in rows if r["split"] == "public_test" and r["role"] == "abnormality"]
    originals = {}
    for r in rows:
        if r["split"] == "train" and r["role"] == "abnormality" and str(r.get("jitter", "0")) == "0":
            originals[r["class_name"]] = originals.get(r["class_name"], 0) + 1
    return {
        "source": "mini-MIAS (Mammographic Image Analysis Society, 322 digitised mammograms, 1024x1024)",
        "protocol": build.get("protocol"),
        "builder": "mammo dataset build-mias",
        "split": build.get("split"),
        "test_fraction": build.get("test_fraction"),
        "seed": build.get("seed"),
        "jitter_copies_per_train_lesion": build.get("jitter_copies_per_train_lesion"),
        "counts": build.get("counts"),
        "train_lesions_without_jitter": originals,
        "train_images": train_imgs,
        "held_out_images": held,
        "held_out_lesions": held_lesions,
        "skipped": build.get("skipped"),
        "licence": build.get("licence"),
        "citation": build.get("citation"),
        "scope": "trained and evaluated on mini-MIAS only; claims nothing about CBIS-DDSM",
    }


def ensemble_heldout(models: Path, data: Path, n_boot: int) -> dict:
    """The ensemble's held-out metrics with bootstrap intervals (predicts public_test once)."""
    from mammo_core import io
    from mammo_core.ensemble import (
        call_five_class,
        combine,
        factor_estimates,
        member_dirs,
        read_ensemble,
    )
    from mammo_core.inference import load_bundle, predict_arrays
    from mammo_core.labels import CLASS_NAMES
    from mammo_core.metrics import auc, bootstrap_ci, classification_metrics

    _, spec = read_ensemble(models / "ensemble")
    dirs = member_dirs(spec, models)
    loaded = [load_bundle(d) for d in dirs.values()]
    arrays = io.load_patch_arrays(data)
    test = arrays.splits["public_test"]
    x = io.to_model_input(np.asarray(test.images))
    y = np.asarray(test.labels, dtype=np.int64)
    res = combine(spec, predict_arrays(loaded, x))
    p5 = res.probabilities
    m = classification_metrics(y, p5, CLASS_NAMES, call_five_class(p5))
    out = {k: m[k] for k in ("n", "accuracy", "auc", "f1_macro", "ece", "nll", "confusion_matrix")}
    out["auc_ci95"] = list(bootstrap_ci(y, p5, n_boot=n_boot, seed=0))
    out["auc_ci_method"] = "percentile bootstrap over patches, 2000 resamples (macro one-vs-rest, five classes)"
    out["classes"] = list(CLASS_NAMES)
    f = factor_estimates("five_class", p5)
    ab = y != 0
    task_sets = {
        "auc_abnormal_vs_baseline": (ab.astype(int), 1.0 - p5[:, 0]),
        "auc_mass_vs_calcification": (np.isin(y[ab], (1, 2)).astype(int), f["mass_given_abnormal"][ab]),
        "auc_benign_vs_malignant": (np.isin(y[ab], (2, 4)).astype(int),
                                    ((p5[:, 2] + p5[:, 4]) / np.clip(1.0 - p5[:, 0], 1e-12, None))[ab]),
    }
    for key, (yt, s) in task_sets.items():
        two = np.stack([1.0 - s, s], axis=1)
        out[key] = auc(yt, two)
        out[key + "_ci95"] = list(bootstrap_ci(yt, two, n_boot=n_boot, seed=0))
        out[key + "_n"] = len(yt)
    out["flagged_fraction"] = float(res.flagged.mean())
    return out


def annotate(models: Path, data: Path, n_boot: int) -> None:
    from mammo_core.bundle import read_card, write_card

    stmt = data_statement(data)
    for d in bundle_dirs(models):
        info = read_card(d)
        card = dict(info.card)
        card["training_data"] = stmt
        if info.kind == "ensemble":
            held = ensemble_heldout(models, data, n_boot)
            card["metrics"] = json_safe({**(card.get("metrics") or {}), **held, "split": "public_test",
                                      "measured": "once, after fitting"})
            card["kfold"] = ("not applicable: the ensemble has no trainable weights of its own; its "
                             "temperatures, weights and threshold are fitted on validation patches "
                             "that no member trained on — see the members' k-fold results")
        write_card(d, card)
        log.info("annotated %s", d / "card.json")


# --------------------------------------------------------------------------- MODELS.md

def _f(v, nd=3) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _ci(ci) -> str:
    if not ci or any(c is None for c in ci):
        return "—"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _fold(card, key) -> str:
    if card.get("kind") == "ensemble":
        return "n/a (no own weights)"
    rows = (card.get("training") or {}).get("folds") or []
    mean = next((r for r in rows if r.get("fold") == "mean"), None)
    sd = next((r for r in rows if r.get("fold") == "std"), None)
    if not mean:
        return "not run"
    return f"{_f(mean.get(key))} ± {_f(sd.get(key) if sd else None)}"


def _n_lesions(stmt) -> str:
    if not stmt:
        return "?"
    c = stmt["counts"]["public_test"]
    return str(sum(v for k, v in c.items() if k != "baseline"))


def _seconds(bundle: Path) -> str:
    try:
        doc = json.loads((bundle / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "—"
    v = doc.get("seconds_total", doc.get("seconds"))
    return "—" if v is None else f"{float(v):.0f}"


def arch_text(card) -> str:
    a = card.get("architecture") or {}
    if card.get("kind") == "ensemble":
        return "temperature-scaled soft vote of its members (hierarchy to five classes)"
    o = a.get("options") or {}
    if a.get("model") == "transfer":
        s = f"{o.get('backbone', '?').upper()} ImageNet, {o.get('mode', '?')}"
        ft = ((card.get("training") or {}).get("protocol") or {}).get("fine_tuning")
        if ft:
            s += f" (block5 fine-tuned {ft.get('epochs')} ep)"
        return s
    return str(a.get("model", "?"))


def write_models_md(models: Path, out: Path) -> None:
    from mammo_core.atomic import atomic_write_text
    from mammo_core.bundle import read_card

    cards = {}
    for d in bundle_dirs(models):
        cards[d.name] = read_card(d).card
    names = [n for n in MEMBER_ORDER if n in cards] + [n for n in cards if n not in MEMBER_ORDER]
    ens = cards.get("ensemble")
    stmt = next((c.get("training_data") for c in cards.values() if c.get("training_data")), None)
    L = ["# Bundled models", "",
         (f"**{DISCLAIMER.capitalize()}.** Generated by `training_scripts/models_table.py` from the cards "
         "(`<name>/card.json`) and `ensemble/metrics.json`; every number below was measured by the "
         "commands in `training_scripts/train_bundled.sh` on the data stated below."), "",
         ("All numbers are on **mini-MIAS** (protocol v1). The held-out test split is small "
         f"({_n_lesions(stmt)} lesions, each with its baseline patch), so the 95 % bootstrap "
         "intervals are wide: read them, not only the point estimates. These models claim nothing "
         "about CBIS-DDSM."), "",
         "## All bundles on the held-out split (public_test)", "",
         ("| bundle | task | architecture | n | AUC [95 % CI] | accuracy | F1 (macro) | ECE | "
         "4-fold AUC mean ± sd | 4-fold accuracy mean ± sd | wall time (s) |"),
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        c = cards[n]
        m = c.get("metrics") or {}
        L.append(f"| `{n}` | {TASK_TITLE.get(c.get('task'), c.get('task'))} | {arch_text(c)} | {m.get('n', '—')} | "
                 f"{_f(m.get('auc'))} {_ci(m.get('auc_ci95'))} | {_f(m.get('accuracy'))} | "
                 f"{_f(m.get('f1_macro'))} | {_f(m.get('ece'))} | {_fold(c, 'auc')} | {_fold(c, 'accuracy')} | "
                 f"{_seconds(models / n)} |")
    L += ["", ("AUC: binary tasks the ROC AUC of the positive class; three / five classes the macro "
          "one-vs-rest AUC. k-fold: the study's grouped 4-fold holdout on the training split "
          "(per fold a model trained on the other three folds), mean ± sd over the folds; "
          "\"not run\" where it was too expensive on the 2-core CPU (see the notes). Wall time: "
          "the whole training run (k-fold included) on the machine that built the bundles."), ""]
    # confusion matrices
    L += ["### Confusion matrices (held-out, rows = truth)", ""]
    for n in names:
        m = cards[n].get("metrics") or {}
        cm = m.get("confusion_matrix")
        classes = cards[n].get("classes") or m.get("classes") or []
        if cm:
            L.append(f"- `{n}` ({', '.join(classes)}): `{cm}`")
    L.append("")
    # k-fold tables
    L += ["### k-fold validation per fold", ""]
    for n in names:
        rows = ((cards[n].get("training") or {}).get("folds")) or []
        if not rows:
            continue
        L += [f"`{n}`:", "", "| fold | accuracy | loss | AUC | F1 |", "|---|---|---|---|---|"]
        for r in rows:
            f = r["fold"] if isinstance(r["fold"], str) else f"fold {r['fold']}"
            L.append(f"| {f} | {_f(r.get('accuracy'))} | {_f(r.get('loss'))} | {_f(r.get('auc'))} | "
                     f"{_f(r.get('f1_macro'))} |")
        L.append("")
    # ensemble vs members
    em = {}
    if ens is not None and (models / "ensemble" / "metrics.json").is_file():
        em = json.loads((models / "ensemble" / "metrics.json").read_text(encoding="utf-8"))
    if em:
        L += ["## Ensemble vs members: the three task AUCs on the held-out split", "",
              (f"Validation for the ensemble fit: {em.get('validation', {}).get('n', '?')} training-split "
              f"patches ({em.get('validation', {}).get('how', '')})."), "",
              ("| model | task | abnormal vs baseline | mass vs calcification | benign vs malignant | "
              "accuracy (own task) | ECE | temperature | weight |"), "|---|---|---|---|---|---|---|---|---|"]
        for r in em.get("table", []):
            L.append(f"| `{r['model']}` | {r['task']} | {_f(r.get('auc_abnormal_vs_baseline'))} | "
                     f"{_f(r.get('auc_mass_vs_calcification'))} | {_f(r.get('auc_benign_vs_malignant'))} | "
                     f"{_f(r.get('accuracy'))} | {_f(r.get('ece'))} | {_f(r.get('temperature'), 2)} | "
                     f"{_f(r.get('weight'), 2)} |")
        L += ["", ("Members answer only their own question (— = the member has no score for it); the "
              "ensemble combines them into five classes."), ""]
    if ens is not None:
        m = ens.get("metrics") or {}
        L += ["### Ensemble task AUCs with 95 % bootstrap intervals", "",
              "| task | n | AUC [95 % CI] | goal | met? | best member | ensemble ≥ best member? |",
              "|---|---|---|---|---|---|---|"]
        wins = 0
        for key, title, goal in GOALS:
            best = None
            for r in em.get("table", []):
                if r["model"] == "ensemble" or r.get(key) is None:
                    continue
                if best is None or r[key] > best[1]:
                    best = (r["model"], r[key])
            v = m.get(key)
            ge = None if (v is None or best is None) else v >= best[1] - 1e-12
            wins += bool(ge)
            met = "—" if goal is None else ("yes" if v is not None and v >= goal else "**no**")
            L.append(f"| {title} | {m.get(key + '_n', '—')} | {_f(v)} {_ci(m.get(key + '_ci95'))} | "
                     f"{'≥ ' + str(goal) if goal else 'report'} | {met} | "
                     f"{'—' if best is None else f'`{best[0]}` {best[1]:.3f}'} | "
                     f"{'—' if ge is None else ('yes' if ge else 'no')} |")
        L += ["", (f"Ensemble at least as good as its best member on {wins} of 3 tasks "
              f"(goal: 2 of 3 — {'met' if wins >= 2 else '**not met**'}). Five-class held-out: "
              f"accuracy {_f(m.get('accuracy'))}, macro F1 {_f(m.get('f1_macro'))}, ECE {_f(m.get('ece'))}, "
              f"macro AUC {_f(m.get('auc'))} {_ci(m.get('auc_ci95'))}; confusion matrix "
              f"(baseline, mass_benign, mass_malignant, calcification_benign, calcification_malignant; "
              f"rows = truth) `{m.get('confusion_matrix')}`."), ""]
    # data statement
    if stmt:
        L += ["## Training data", "",
              (f"- Source: {stmt['source']}. Protocol: {stmt['protocol']} (`{stmt['builder']}`): every "
              "mass / calcification cut into a baseline / abnormality pair of 150x150 16-bit patches; "
              "ARCH / ASYM and rows without coordinates skipped "
              f"({stmt.get('skipped')} skipped)."),
              (f"- Split: {stmt['split']}; {round(100 * (stmt.get('test_fraction') or 0))} % of the "
              f"women held out as this project's test split (seed {stmt['seed']}); "
              f"{stmt['jitter_copies_per_train_lesion']} extra jittered crops per training lesion "
              "(training split only; the held-out split is never jittered). Validation splits and "
              "folds are grouped by woman, so jittered copies never straddle them."),
              "", "| split | " + " | ".join(stmt["counts"]["train"]) + " |",
              "|---|" + "---|" * len(stmt["counts"]["train"])]
        for s in ("train", "public_test"):
            L.append(f"| {s} | " + " | ".join(str(v) for v in stmt["counts"][s].values()) + " |")
        orig = stmt.get("train_lesions_without_jitter") or {}
        L.append("| train lesions without jitter | — | " + " | ".join(
            str(orig.get(c, 0)) for c in list(stmt["counts"]["train"])[1:]) + " |")
        L += ["", (f"- Patch counts of the train split include the jittered crops; {len(stmt['train_images'])} "
              "mammograms with a usable lesion are in the training split."),
              f"- Held-out images ({len(stmt['held_out_images'])}): "
              + ", ".join(stmt["held_out_images"]) + ".",
              "- Held-out lesions: " + "; ".join(f"{h['lesion']} {h['class']}" for h in stmt["held_out_lesions"]) + ".",
              f"- Licence: {stmt['licence']}. Citation: {stmt['citation']}.",
              f"- Scope: {stmt['scope']}.", ""]
    # commands
    L += ["## Reproduce", "", "```bash", REPRODUCE, "```", "",
          "Each card records the exact training command (`training.command`):", ""]
    for n in names:
        cmd = (cards[n].get("training") or {}).get("command")
        if cmd:
            L.append(f"- `{n}`: `{cmd}`")
    notes = Path(__file__).with_name("models_notes.md")
    if notes.is_file():
        L += ["", notes.read_text(encoding="utf-8").rstrip()]
    L.append("")
    atomic_write_text(out, "\n".join(L))
    log.info("wrote %s", out)


def main(argv=None) -> int:
    args = parse_args(argv)
    logsetup.configure("models_table.py")
    try:
        if args.annotate_cards:
            annotate(args.models, args.data, args.n_boot)
        if args.out is not None:
            write_models_md(args.models, args.out)
    except MammoError as err:
        log.error("error: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
