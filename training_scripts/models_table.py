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
from mammo_core.card import Card, Metrics
from mammo_core.errors import MammoError
from mammo_core.jsonutil import json_safe
from mammo_core.paths import path_arg

log = logging.getLogger("models_table")

MEMBER_ORDER = ("vgg16b4_baseline_mass_calc", "vgg16_mass_calc", "vgg16_benign_malignant")
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
    p.add_argument("--data", type=path_arg, required=True, help="the built mini-MIAS folder (build.json, metadata.csv)")
    p.add_argument("--models", type=path_arg, default=Path("assets/models"),
                   help="bundles folder (default assets/models)")
    p.add_argument("--annotate-cards", action="store_true", help="write data statements into the cards")
    p.add_argument("--out", type=path_arg, help="write MODELS.md here")
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
        "extra_baselines_per_train_image": build.get("extra_baselines_per_train_image", 0),
        "extra_baselines": build.get("extra_baselines", 0),
        "train_women": len({r["patient"] for r in rows if r["split"] == "train"}),
        "held_out_women": len({r["patient"] for r in rows if r["split"] == "public_test"}),
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
    from mammo_core.datasets.splits import groups_for_arrays
    from mammo_core.ensemble import (
        call_five_class,
        combine,
        member_dirs,
        read_ensemble,
    )
    from mammo_core.ensemble_fit import task_aucs, task_scores
    from mammo_core.inference import load_bundle, predict_arrays
    from mammo_core.labels import CLASS_NAMES
    from mammo_core.metrics import bootstrap_ci, ci_method, classification_metrics

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
    groups = groups_for_arrays(data, split="public_test")
    out["auc_ci95"] = list(bootstrap_ci(y, p5, n_boot=n_boot, seed=0, groups=groups))
    out["auc_ci_method"] = ci_method(n_boot, groups) + " (macro one-vs-rest AUC, five classes; task AUCs alike)"
    out["classes"] = list(CLASS_NAMES)
    aucs = task_aucs(y, task_scores("five_class", p5), groups, n_boot, 0)
    out.update({k: v for k, v in aucs.items() if k != "auc_ci_method"})
    out["flagged_fraction"] = float(res.flagged.mean())
    return out


def annotate(models: Path, data: Path, n_boot: int) -> None:
    from dataclasses import replace

    from mammo_core.bundle import CARD_FILE, read_card, write_card

    stmt = data_statement(data)
    for d in bundle_dirs(models):
        info = read_card(d)
        card = replace(info.card, training_data=json_safe(stmt))
        if info.kind == "ensemble":
            held = Metrics.from_row(json_safe({**ensemble_heldout(models, data, n_boot), "split": "public_test",
                                               "measured": "once, after fitting"}), d / CARD_FILE)
            card = replace(card, metrics=card.metrics.merged(held), kfold=(
                "not applicable: the ensemble has no trainable weights of its own; its "
                "temperatures, weights and threshold are fitted on the members' "
                "out-of-fold predictions (5 folds grouped by woman, the same for every "
                "member) over every training patch"))
        write_card(d, card)
        log.info("annotated %s", d / "card.json")


# --------------------------------------------------------------------------- MODELS.md

def _f(v, nd=3) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _ci(ci) -> str:
    if not ci or any(c is None or (isinstance(c, float) and not math.isfinite(c)) for c in ci):
        return "—"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _seconds(bundle: Path) -> str:
    try:
        doc = json.loads((bundle / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "—"
    v = doc.get("seconds_total", doc.get("seconds"))
    return "—" if v is None else f"{float(v):.0f}"


def arch_text(card: Card) -> str:
    a = card.architecture or {}
    if card.kind == "ensemble":
        return "temperature-scaled soft vote of its members (hierarchy to five classes)"
    o = a.get("options") or {}
    if a.get("model") == "transfer" and o.get("head") == "pooled":
        proto = card.training.protocol or {}  # the pooled search's hyper-parameter record
        sq = proto.get("feature_squash")
        squash = "" if not sq or sq == "none" else f" + softsign squash (K={sq['k']:g})"
        return (f"{o.get('backbone', '?').upper()} ImageNet, frozen; {o.get('pooling')}-pooled "
                f"{o.get('pool_layers', '').replace('_pool', '').replace(',', ' + ')}{squash} + L2 logistic regression")
    if a.get("model") == "transfer":
        return f"{o.get('backbone', '?').upper()} ImageNet, {o.get('mode', '?')}"
    return str(a.get("model", "?"))


def _question_values(m: Metrics) -> dict[str, object]:
    """The ensemble's per-question AUCs and intervals under the comparison table's names
    (``auc_<question>``, ``auc_<question>_ci95``)."""
    out: dict[str, object] = {}
    for q, v in m.questions.items():
        out[f"auc_{q}"] = v.auc
        out[f"auc_{q}_ci95"] = None if v.ci95 is None else list(v.ci95)
    return out


def _spread(sp) -> str:
    if not sp:
        return "—"
    return (f"std ≤ {max(sp['std']):.3f}; {sp['distinct_outputs']} distinct of {sp['n']}; "
            f"{sp['predicted_classes']} classes called")


def _table(rows, title_of=None) -> list[str]:
    L = ["| model | task | abnormal vs baseline [95 % CI] | mass vs calcification [95 % CI] | "
         "benign vs malignant [95 % CI] | n | flagged |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        def cell(k, r=r):
            return f"{_f(r.get(k))} {_ci(r.get(k + '_ci95'))}".strip()
        fl = r.get("flagged_fraction")
        L.append(f"| `{r['model']}` | {r['task']} | {cell('auc_abnormal_vs_baseline')} | "
                 f"{cell('auc_mass_vs_calcification')} | {cell('auc_benign_vs_malignant')} | {r.get('n', '—')} | "
                 f"{'—' if fl is None else f'{100 * fl:.1f} %'} |")
    return L


def _goals(rows, ens_values, label) -> tuple[list[str], int]:
    L = [f"| task | ensemble ({label}) | goal | met? | best member | ensemble ≥ best member? |",
         "|---|---|---|---|---|---|"]
    wins = 0
    for key, title, goal in GOALS:
        best = None
        for r in rows:
            if r["model"] == "ensemble" or r.get(key) is None or not math.isfinite(r[key]):
                continue
            if best is None or r[key] > best[1]:
                best = (r["model"], r[key])
        v = ens_values.get(key)
        ge = None if (v is None or best is None) else v >= best[1] - 1e-9
        wins += bool(ge)
        met = "—" if goal is None else ("yes" if v is not None and v >= goal else "**no**")
        L.append(f"| {title} | {_f(v)} {_ci(ens_values.get(key + '_ci95'))} | "
                 f"{'≥ ' + str(goal) if goal else 'report'} | {met} | "
                 f"{'—' if best is None else f'`{best[0]}` {best[1]:.3f}'} | "
                 f"{'—' if ge is None else ('yes' if ge else f'no ({v - best[1]:+.4f})')} |")
    return L, wins


def _seen_text(cards: dict[str, Card], members: list[str], ens_metrics: Metrics) -> str:
    """What was changed after public_test had been seen (the cards' ``metrics.blind`` /
    ``not_blind_because``); empty when every number on it is blind."""
    why = "the split was seen before a change"
    seen = [(n, cards[n].metrics) for n in members if not cards[n].metrics.blind]
    ens_seen = not ens_metrics.blind
    if not seen and not ens_seen:
        return ""
    parts = []
    if seen:
        who = "the members" if len(seen) == len(members) else ", ".join(f"`{n}`" for n, _ in seen)
        parts.append(f"{who}: " + "; ".join(sorted({m.not_blind_because or why for _, m in seen})))
    if ens_seen:
        parts.append("the ensemble: " + (ens_metrics.not_blind_because or why))
    everyone = ens_seen and len(seen) == len(members)
    rest = ("" if everyone else " The ensemble's numbers are blind." if not ens_seen
            else " No member was changed after seeing it; the members' numbers are blind.")
    return (" But models were changed after public_test numbers of an earlier version had been seen — "
            + "; ".join(parts) + " (see the notes). " + ("Every model's" if everyone else "Those models'")
            + " numbers on it are therefore **not blind** (the cards say so, and the viewer and reports "
            "call them test-split figures)." + rest)


def _cov_row(label: str, t: dict) -> str:
    pc = t.get("per_class") or {}
    cells = [f"{_f(c.get('coverage'))} / {_f(c.get('mean_set_size'), 2)} (n {c.get('n')})" for c in pc.values()]
    wrong = (f"{t.get('wrong_calls_uncertain')} of {t.get('wrong_calls')}"
             if t.get("wrong_calls") is not None else "—")
    return (f"| {label} | {_f(t.get('coverage'))} {_ci(t.get('coverage_ci95'))} | {_f(t.get('mean_set_size'), 2)} | "
            + " | ".join(cells) + f" | {wrong} |")


def _trust_section(em: dict) -> list[str]:
    """Conformal sets and OOD warnings, from the ensemble's metrics.json."""
    L: list[str] = []
    cf = em.get("conformal")
    if cf:
        classes = list((cf.get("fitting_rows") or {}).get("per_class") or {})
        L += ["## How far to trust each answer: conformal sets", "",
              (f"Every call carries its **{100 * cf['level']:.0f} % conformal set** ({cf['method']}); a set of "
               "more than one class reads *uncertain*. Coverage = share of patches whose set holds the true "
               "class; per class: coverage / mean set size. The fitting rows are the out-of-fold predictions "
               "the sets were calibrated on (coverage at the level by construction); *by fold* calibrates on "
               "four folds' women and measures the fifth (an estimate for unseen women); the test split is "
               "scored once. 'Wrong calls with > 1 class' counts the wrong calls whose set is not a single "
               "class (the retired disagreement flag marked 0 of 9 wrong calls on the samples)."), "",
              "| rows | coverage [95 % CI over women] | mean set size | " + " | ".join(classes)
              + " | wrong calls with > 1 class |",
              "|---|---|---|" + "---|" * len(classes) + "---|"]
        for key, label in (("fitting_rows", "out of fold, fitting rows"), ("by_fold", "out of fold, by fold"),
                           ("public_test", "public_test (scored once)")):
            if cf.get(key):
                L.append(_cov_row(label, cf[key]))
        L.append("")
    od = em.get("ood")
    if od:
        L += ["## Out-of-distribution warnings", "",
              (f"(a) background share above {100 * od['background_limit']:.0f} %: warned on "
               f"{_f(100 * od['background_warned_fitting_rows'], 1)} % of the training patches and "
               f"{_f(100 * od['background_warned_public_test'], 1)} % of public_test (lesion windows are "
               "kept with >= 50 % tissue, so some training patches do have film background).")]
        if od.get("feature_member"):
            L.append(f"(b) feature distance ({od['how']}): warned on "
                     f"{_f(100 * od['feature_warned_out_of_fold'], 1)} % of the training patches out of fold "
                     f"(~1 % by design) and {_f(100 * od['feature_warned_public_test'], 1)} % of public_test; "
                     f"any warning: {_f(100 * od['any_warned_out_of_fold'], 1)} % / "
                     f"{_f(100 * od['any_warned_public_test'], 1)} %.")
        if "acquisition_rule" in od:
            L.append(f"(c) acquisition check ({od['acquisition_rule']}; score threshold "
                     f"{_f(od['acquisition_threshold'], 3)}): warned on "
                     f"{_f(100 * od['acquisition_warned_out_of_fold'], 1)} % of the training patches out of "
                     f"fold and {_f(100 * od['acquisition_warned_public_test'], 1)} % of public_test "
                     "(\"any warning\" above counts (a)-(c)).")
        L.append("")
    return L


def _augment_text(rec) -> str:
    """The card's ``train_augment`` record in words ('' for none)."""
    if not rec or rec == "none":
        return ""
    return (f"; training augmentation `{rec['kind']}` on {rec['views']} of those views per patch "
            "(random gamma / contrast / noise / blur / rescale, docs/robust_inputs.md)")


def _squash_text(rec) -> str:
    """The card's ``feature_squash`` record in words ('' for none)."""
    if not rec or rec == "none":
        return ""
    return (f"; feature squash `f / (f + {rec['k']:g} x median)` of every pooled feature before the "
            "standardisation (docs/robust_inputs.md)")


def _shift_section(res: dict, augmented: list[str] | None = None) -> list[str]:
    """The acquisition-shift table (benchmarks/shift_bench.py --json ensemble/shift_bench.json)."""
    from mammo_core.training.shift_eval import false_warning_markdown, table_markdown

    who = (f"Members {', '.join('`' + n + '`' for n in augmented)} were" if augmented and len(augmented) > 1
           else f"Member `{augmented[0]}` was" if augmented else "")
    note = ([f"{who} trained with the acquisition "
             "augmentation, whose ranges contain the bench's gamma, contrast, noise, blur and rescale shifts: "
             "for the questions they answer those rows measure robustness to the families trained on, "
             "not to an unseen scanner "
             "(`film_edge` is not in the augmentation). The previous bundles' table and the member-level "
             "decision (both configurations in one run): docs/robust_inputs.md.", ""] if augmented else [])
    return ["## Acquisition shifts (out of fold)", "",
            (f"`benchmarks/shift_bench.py` on {res['n']} training patches, {res['folds']} folds grouped by "
             "woman, identity view only (no TTA, every row alike): " + res["method"]), "", *note,
            table_markdown(res), "", *_worst_shift_line(res),
            *(["Warnings on unshifted patches (false warnings):", "", false_warning_markdown(res), ""]
              if "false_warnings" in res else [])]


def _worst_shift_line(res: dict) -> list[str]:
    """One sentence: the ensemble's unshifted abnormal-vs-baseline AUC, its worst shift, the change
    with its interval over women, and whether the robustness target (within 0.03) is met."""
    import math

    q = "auc_abnormal_vs_baseline"
    none = next((r for r in res["rows"] if r["shift"] == "none"), None)
    shifted = [r for r in res["rows"] if r["shift"] != "none" and math.isfinite(r[q])]
    if none is None or not shifted:
        return []
    w = min(shifted, key=lambda r: r[q])
    cis = w.get("delta_ci95") or {}
    ci = cis.get(q)
    interval = f", 95 % interval over women {ci[0]:+.3f} to {ci[1]:+.3f}" if ci else ""
    met = "met" if none[q] - w[q] <= 0.03 else "NOT met"
    return [f"Abnormal vs baseline: unshifted {none[q]:.3f}, worst shift `{w['shift']}` {w[q]:.3f} (change "
            f"{w[q] - none[q]:+.3f}{interval}); the robustness target (worst shift within 0.03 of the "
            f"unshifted row) is {met}. Attempts to meet it and why none shipped: docs/robust_inputs.md.", ""]


def write_models_md(models: Path, out: Path) -> None:
    from mammo_core.atomic import atomic_write_text
    from mammo_core.bundle import read_card

    cards: dict[str, Card] = {}
    for d in bundle_dirs(models):
        cards[d.name] = read_card(d).card
    names = [n for n in MEMBER_ORDER if n in cards] + [n for n in cards if n not in MEMBER_ORDER and n != "ensemble"]
    ens = next((c for n, c in cards.items() if n == "ensemble"), None)
    ens_metrics = Metrics() if ens is None else ens.metrics
    ens_blind = ens_metrics.blind
    members_blind = all(cards[n].metrics.blind for n in names)
    held = "held-out" if members_blind else "test-split"
    stmt: dict = next((dict(c.training_data) for c in cards.values() if c.training_data), {})
    em = {}
    if ens is not None and (models / "ensemble" / "metrics.json").is_file():
        em = json.loads((models / "ensemble" / "metrics.json").read_text(encoding="utf-8"))
    n_les = "?" if not stmt else str(sum(v for k, v in stmt["counts"]["public_test"].items() if k != "baseline"))
    L = ["# Bundled models", "",
         (f"**{DISCLAIMER.capitalize()}.** Generated by `training_scripts/models_table.py` from the cards "
          "(`<name>/card.json`) and `ensemble/metrics.json`; every number below was measured by the "
          "commands in `training_scripts/train_bundled.sh` on the data stated below."), "",
         ("All numbers are on **mini-MIAS** (protocol v1). These models claim nothing about CBIS-DDSM: "
          "none was trained or evaluated on it here."), "",
         "## How the numbers were made", "",
         ("- **Every choice out of fold.** The training women are cut once into 5 folds (grouped by "
          "woman, stratified by label; the same folds for every member). For each member, its pooling "
          "candidate, its L2 strength C and test-time augmentation on/off were chosen on its "
          "out-of-fold (OOF) predictions over the training women; the ensemble's temperatures, weights "
          "and disagreement threshold were fitted on the members' OOF predictions over every training "
          "patch. The OOF numbers of the chosen settings are therefore slightly optimistic."),
         (f"- **Held-out split scored once, at the end.** `public_test` ({n_les} lesions, each with its "
          "adjacent baseline patch, protocol v1, no jitter, no extra baselines) was predicted after every "
          "choice above, once." + _seen_text(cards, names, ens_metrics)),
         ("- **Intervals over women.** Every 95 % interval here is a percentile cluster bootstrap that "
          "resamples women (2000 resamples), since a woman contributes several patches."), "",
         f"## Members: out-of-fold choice and numbers, {held} numbers"
         + ("" if members_blind else " (public_test, not blind)"), "",
         ("| bundle | task | architecture | chosen C / TTA | OOF AUC [95 % CI over women] | OOF spread | "
          f"{held} n | {held} AUC [95 % CI over women] | {held} accuracy | {held} spread | wall time (s) |"),
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        c = cards[n]
        m = c.metrics
        oof = c.training.oof or Metrics()
        chosen = c.training.protocol.get("chosen")
        ch = chosen if isinstance(chosen, dict) else {}
        L.append(f"| `{n}` | {TASK_TITLE.get(c.task, c.task)} | {arch_text(c)} | "
                 f"{ch.get('C', '—')} / {ch.get('tta', '—')} | {_f(oof.auc)} {_ci(oof.auc_ci95)} | "
                 f"{_spread(oof.spread)} | {'—' if m.n is None else m.n} | {_f(m.auc)} {_ci(m.auc_ci95)} | "
                 f"{_f(m.accuracy)} | {_spread(m.spread)} | {_seconds(models / n)} |")
    L += ["", ("AUC: binary tasks the ROC AUC of the positive class; three classes the macro one-vs-rest "
               "AUC. Spread: the largest standard deviation of a class probability over the patches, the "
               "number of distinct outputs (rounded to 1e-4) and of classes called — no member is constant "
               "(training refuses to write one; `mammo models verify` measures it again on the bundled "
               "samples)."), ""]
    L += ["### Out-of-fold candidates per member", ""]
    for n in names:
        pr = cards[n].training.protocol
        if pr.get("candidates"):
            L.append(f"- `{n}`: candidates {', '.join('`' + c + '`' for c in pr['candidates'])}; C in "
                     f"{pr.get('c_grid')}; TTA none / dihedral8; {pr.get('train_views')} view(s) per training "
                     f"patch in the fit{_augment_text(pr.get('train_augment'))}"
                     f"{_squash_text(pr.get('feature_squash'))}. Chosen: `{pr['chosen']['pool']}` "
                     "(table of every candidate in the bundle's `grid.csv`).")
    L.append("")
    L += ["### Per fold (out of fold, chosen settings)", ""]
    for n in names:
        rows = cards[n].training.folds or ()
        if not rows:
            continue
        L += [f"`{n}`:", "", "| fold | n | accuracy | log loss | AUC | F1 |", "|---|---|---|---|---|---|"]
        for r in rows:
            f = r["fold"] if isinstance(r["fold"], str) else f"fold {r['fold']}"
            L.append(f"| {f} | {r.get('n', '')} | {_f(r.get('accuracy'))} | {_f(r.get('loss'))} | "
                     f"{_f(r.get('auc'))} | {_f(r.get('f1_macro'))} |")
        L.append("")
    L += [f"### {held.capitalize()} confusion matrices (rows = truth)", ""]
    for n in names:
        cm = cards[n].metrics.confusion_matrix
        if cm:
            L.append(f"- `{n}` ({', '.join(cards[n].classes)}): `{[list(r) for r in cm]}`")
    L.append("")
    if em:
        oof_rows = em.get("oof_table") or []
        held_rows = em.get("table") or []
        eo = next((r for r in oof_rows if r["model"] == "ensemble"), {})
        L += ["## Ensemble vs members", "",
              f"Fitted on: {em.get('validation', {}).get('how', '')}.", ""]
        if oof_rows:
            L += ["### Out of fold (training women)", "", *_table(oof_rows), ""]
            g, wins = _goals(oof_rows, eo, "OOF")
            oof_text = (f"Out of fold the ensemble is at least as good as its best member on {wins} of 3 "
                        f"tasks (goal: 2 of 3 — {'met' if wins >= 2 else '**not met**'}). Its disagreement "
                        f"flag fires on {_f(100 * (eo.get('flagged_fraction') or 0), 1)} % of the "
                        "training patches (threshold: the 90th percentile of the OOF disagreement, so "
                        "10 % by design).")
            fw = (em.get("fitted") or {}).get("factor_weights") or {}
            if fw:
                oof_text += (" Mixing weights of the factors estimated by several tasks (chosen on the OOF "
                             "AUC of the factor, ties by NLL): " + "; ".join(
                                 f"{f}: " + ", ".join(f"{g} {w:.2f}" for g, w in ws.items())
                                 for f, ws in fw.items()) + ".")
            L += [*g, "", oof_text, ""]
        m = ens_metrics
        L += ["### Held-out split (public_test, scored once)" if ens_blind and members_blind else
              "### Test split (public_test: the members' numbers blind, the ensemble's not)" if members_blind
              else "### Test split (public_test: seen before a later change, not blind)",
              "", *_table(held_rows), ""]
        held_label = "held-out split" if ens_blind and members_blind else "test split"
        g, wins = _goals(held_rows, _question_values(m), held_label)
        fl = m.flagged_fraction
        ratio = None if fl is None else fl / 0.10
        held_text = (f"On public_test the ensemble is at least as good as its best member on {wins} "
                     f"of 3 tasks. Five-class on public_test: accuracy {_f(m.accuracy)}, macro F1 "
                     f"{_f(m.f1_macro)}, ECE {_f(m.ece)}, macro AUC {_f(m.auc)} "
                     f"{_ci(m.auc_ci95)}; confusion matrix (baseline, mass_benign, mass_malignant, "
                     f"calcification_benign, calcification_malignant; rows = truth) "
                     f"`{None if m.confusion_matrix is None else [list(r) for r in m.confusion_matrix]}`.")
        within = "within" if ratio is not None and 0.5 <= ratio <= 2 else "outside"
        flag_text = (f"Disagreement flag on the {held_label}: {_f(None if fl is None else 100 * fl, 1)} % of "
                     f"patches against 10 % by design ({within} 2x of the design rate). Only mass vs "
                     "calcification is estimated by two members here, so the flag measures how much those "
                     "two estimates disagree.")
        n_held = m.n
        if fl is not None and n_held:
            from scipy.stats import beta, binom

            k = round(fl * n_held)
            lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n_held - k + 1))
            hi = 1.0 if k == n_held else float(beta.ppf(0.975, k + 1, n_held - k))
            p_low = float(binom.cdf(k, n_held, 0.10))
            p_high = float(binom.sf(k - 1, n_held, 0.10))
            flag_text += (f" That is {k} of {n_held} patches: exact 95 % interval of the rate "
                          f"[{100 * lo:.1f} %, {100 * hi:.1f} %]; with a true rate of 10 %, the chance of "
                          f"{'at most' if k / n_held <= 0.10 else 'at least'} {k} flag{'' if k == 1 else 's'} in "
                          f"{n_held} patches is {min(p_low, p_high):.3f}, so the {held_label} is "
                          + ("too small to show that the rate differs from its design."
                             if min(p_low, p_high) >= 0.05 else "evidence that the rate differs from its design."))
        L += [*g, "", held_text, "", flag_text, ""]
        L += _trust_section(em)
    shifts = models / "ensemble" / "shift_bench.json"
    if shifts.is_file():
        protocols = {n: cards[n].training.protocol or {} for n in names}  # the pooled search's record
        augmented = [n for n in names if protocols[n].get("train_augment") not in (None, "none")]
        L += _shift_section(json.loads(shifts.read_text(encoding="utf-8")), augmented)
    if stmt:
        L += ["## Training data", "",
              (f"- Source: {stmt['source']}. Protocol: {stmt['protocol']} (`{stmt['builder']}`): every "
               "mass / calcification cut into a baseline / abnormality pair of 150x150 16-bit patches; "
               f"ARCH / ASYM and rows without coordinates skipped ({stmt.get('skipped')} skipped)."),
              (f"- Split: {stmt['split']}; {round(100 * (stmt.get('test_fraction') or 0))} % of the lesion "
               f"women held out as this project's test split (seed {stmt['seed']}): "
               f"{stmt.get('held_out_women', '?')} held-out women, {stmt.get('train_women', '?')} training women."),
              (f"- Training split only: {stmt['jitter_copies_per_train_lesion']} jittered crops per lesion "
               "(centre moved inside the lesion circle, side x0.85-1.2) and up to "
               f"{stmt.get('extra_baselines_per_train_image', 0)} extra baseline windows per mammogram "
               f"({stmt.get('extra_baselines', 0)} in all, from normal mammograms and from tissue far from "
               "lesions, >= 90 % tissue, sides drawn like the lesion windows). The held-out split has "
               "neither. Folds are grouped by woman, so a woman's crops and windows never straddle them."),
              "", "| split | " + " | ".join(stmt["counts"]["train"]) + " |",
              "|---|" + "---|" * len(stmt["counts"]["train"])]
        for sp in ("train", "public_test"):
            L.append(f"| {sp} | " + " | ".join(str(v) for v in stmt["counts"][sp].values()) + " |")
        orig = stmt.get("train_lesions_without_jitter") or {}
        L.append("| train lesions without jitter | — | " + " | ".join(
            str(orig.get(c, 0)) for c in list(stmt["counts"]["train"])[1:]) + " |")
        L += ["", f"- Held-out images ({len(stmt['held_out_images'])}): " + ", ".join(stmt["held_out_images"]) + ".",
              "- Held-out lesions: " + "; ".join(f"{h['lesion']} {h['class']}" for h in stmt["held_out_lesions"]) + ".",
              f"- Licence: {stmt['licence']}. Citation: {stmt['citation']}.",
              f"- Scope: {stmt['scope']}.", ""]
    L += ["## Reproduce", "", "```bash", REPRODUCE, "```", "",
          "Each card records the exact training command (`training.command`):", ""]
    for n in [*names, "ensemble"]:
        cmd = cards[n].training.command if n in cards else None
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
