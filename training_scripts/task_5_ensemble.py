#!/usr/bin/env python3
"""Task 5 of the study (left unfinished there): an ensemble of the task models -> five classes.

Fits, on VALIDATION predictions of the members, a temperature per member, soft-voting weights
per task and the disagreement threshold (see mammo_core/ensemble.py for the method), writes the
ensemble bundle (card.json + ensemble.json, no pickle) and compares every member with the
ensemble on the held-out split (public_test_*): AUC abnormal-vs-baseline (from 1 - P(baseline)),
mass-vs-calcification and benign-vs-malignant (on abnormal patches), accuracy, ECE, NLL, as a
table in metrics.json and comparison.png.

Validation patches: the train_* patches that *no member trained on*. Each member's card records
its grouped validation split (training.split: validation_fraction, seed, grouped_by) and the
sha256 of the arrays it used; the split is recomputed here with
mammo_core.datasets.splits.grouped_split exactly as training did, and patches in any member's
training part are excluded. When a card does not allow that (no split recorded, other data,
--smoke members) the script falls back to a grouped split of train_* and the card says that
disjointness from the members' training data is NOT guaranteed.

Put the output folder beside the member bundles (members are found by name in the ensemble's
parent folder), e.g. ``--out assets/models/ensemble``, then ``mammo models manifest``.
Research use only - not a medical device.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mammo_core import DISCLAIMER
from mammo_core.errors import MammoError


def _log(msg: str) -> None:
    print(f"[task5] {msg}", file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="task_5_ensemble.py",
        description="Fit the five-class ensemble of trained member bundles on validation "
                    "predictions and compare it with its members on public_test. " + DISCLAIMER + ".",
        epilog="example: task_5_ensemble.py --members assets/models/scratch_mass_calc "
               "assets/models/vgg16_benign_malignant assets/models/scratch_v2_baseline_mass_calc "
               "--data ../shared/data/mias_patches --out assets/models/ensemble",
    )
    p.add_argument("--members", nargs="+", type=Path, required=True, metavar="DIR",
                   help="member bundle folders (mass_calc, benign_malignant, baseline_mass_calc, five_class)")
    p.add_argument("--data", type=Path, required=True, metavar="DIR",
                   help="CBIS-DDSM-layout folder (train_*, public_test_*, optional metadata.csv)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="ensemble bundle folder to write")
    p.add_argument("--name", default="ensemble", help="ensemble bundle name (default: ensemble)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fallback grouped validation fraction of train_* (default 0.2)")
    p.add_argument("--percentile", type=float, default=90.0,
                   help="disagreement threshold: this percentile of validation disagreement (default 90)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--smoke", action="store_true", help="tiny subsets (CI): at most 64 patches per split")
    return p.parse_args(argv)


def member_training_indices(info, folder: Path, labels: np.ndarray, groups: np.ndarray):
    """The train_* indices the member trained on, or (None, reason) when they cannot be
    reconstructed from its card."""
    from mammo_core.bundle import sha256_file
    from mammo_core.datasets.splits import grouped_split
    from mammo_core.labels import get_task

    tr = info.card.get("training") or {}
    split = tr.get("split") if isinstance(tr, dict) else None
    if not isinstance(split, dict) or "validation_fraction" not in split or "seed" not in split:
        return None, "card records no reproducible validation split"
    if (tr.get("protocol") or {}).get("smoke"):
        return None, "member was trained with --smoke (subset not reconstructed)"
    data_hashes = ((tr.get("data") or {}).get("sha256") or {})
    want = data_hashes.get("train_labels.npy")
    if want is None or want != sha256_file(folder / "train_labels.npy"):
        return None, "member was trained on other data (train_labels.npy sha256 differs)"
    keep, y = get_task(info.task).map_labels(labels)
    idx = np.flatnonzero(keep)
    t_idx, v_idx = grouped_split(y, groups[keep], float(split["validation_fraction"]), seed=int(split["seed"]))
    if len(t_idx) != split.get("train", len(t_idx)) or len(v_idx) != split.get("validation", len(v_idx)):
        return None, "recomputed split sizes differ from the card"
    return idx[t_idx], None


def task_scores(task: str, p: np.ndarray, subset=None) -> dict[str, np.ndarray]:
    """Scores for the comparison AUCs from a model's own distribution."""
    from mammo_core.ensemble import factor_estimates

    f = factor_estimates(task, p, subset)
    out = {}
    if "baseline" in f:
        out["abnormal"] = 1.0 - f["baseline"]
    if "mass_given_abnormal" in f:
        out["mass"] = f["mass_given_abnormal"]
    if task == "benign_malignant":
        out["malignant"] = p[:, 1]
    elif task == "five_class":
        out["malignant"] = (p[:, 2] + p[:, 4]) / np.clip(1.0 - p[:, 0], 1e-12, None)
    return out


def compare(name, task, p, labels, scores):
    from sklearn.metrics import roc_auc_score

    from mammo_core.labels import get_task
    from mammo_core.metrics import classification_metrics

    ab = labels != 0

    def auc(y, s):
        return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else math.nan

    row = {"model": name, "task": task}
    row["auc_abnormal_vs_baseline"] = auc(ab.astype(int), scores["abnormal"]) if "abnormal" in scores else math.nan
    row["auc_mass_vs_calcification"] = (auc(np.isin(labels[ab], (1, 2)).astype(int), scores["mass"][ab])
                                        if "mass" in scores else math.nan)
    row["auc_benign_vs_malignant"] = (auc(np.isin(labels[ab], (2, 4)).astype(int), scores["malignant"][ab])
                                      if "malignant" in scores else math.nan)
    keep, y = get_task(task).map_labels(labels)
    m = classification_metrics(y, p[keep], get_task(task).classes)
    row.update({"n": m["n"], "accuracy": m["accuracy"], "ece": m["ece"], "nll": m["nll"]})
    return row


def plot(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from mammo_core.atomic import atomic_path

    cols = ["auc_abnormal_vs_baseline", "auc_mass_vs_calcification", "auc_benign_vs_malignant"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    w = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        vals = [r[c] if r[c] is not None and math.isfinite(r[c]) else 0.0 for c in cols]
        ax.bar(np.arange(3) + i * w, vals, w, label=f"{r['model']} ({r['task']})")
    ax.set_xticks(np.arange(3) + w * (len(rows) - 1) / 2,
                  ["abnormal vs baseline", "mass vs calcification", "benign vs malignant"])
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_ylabel("ROC AUC (public_test; missing bar = not estimated)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.text(0.99, 0.005, DISCLAIMER, ha="right", va="bottom", fontsize=6, color="0.4")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _clean(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        return _run(args, t0)
    except MammoError as err:
        print(f"task_5_ensemble.py: error: {err}", file=sys.stderr)
        return 1


def _run(args, t0) -> int:
    from mammo_core import io
    from mammo_core.atomic import atomic_write_text
    from mammo_core.bundle import sha256_file
    from mammo_core.datasets.splits import grouped_split, groups_for_arrays
    from mammo_core.ensemble import (
        MemberInfo,
        apply_temperature,
        combine,
        fit_ensemble,
        write_ensemble,
    )
    from mammo_core.inference import load_bundle, predict_arrays

    folder = args.data
    arrays = io.load_patch_arrays(folder)
    for need in ("train", "public_test"):
        if need not in arrays.splits or arrays.splits[need].labels is None:
            raise MammoError(f"needs labelled {need}_tensor.npy / {need}_labels.npy", folder)
    train, test = arrays.splits["train"], arrays.splits["public_test"]
    labels = np.asarray(train.labels, dtype=np.int64)
    groups = groups_for_arrays(folder, split="train")

    models = [load_bundle(d) for d in args.members]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise MammoError(f"member names must be unique: {names}")
    _log(f"members: {', '.join(f'{m.name} ({m.task})' for m in models)}")

    # validation patches: train_* patches no member trained on
    used = np.zeros(len(labels), dtype=bool)
    reasons = []
    for m in models:
        idx, why = member_training_indices(m.info, folder, labels, groups)
        if idx is None:
            reasons.append(f"{m.name}: {why}")
        else:
            used[idx] = True
    val_idx = np.flatnonzero(~used) if not reasons else None
    guaranteed = val_idx is not None and len(val_idx) >= 20 and len(np.unique(labels[val_idx])) == 5
    if guaranteed:
        how = ("train_* patches outside every member's training part (members' grouped splits "
               "recomputed from their cards)")
    else:
        if val_idx is not None:
            reasons.append(f"only {len(val_idx)} patches / {len(np.unique(labels[val_idx]))} labels "
                           "outside every member's training part")
        _, val_idx = grouped_split(labels, groups, args.val_fraction, seed=args.seed)
        how = (f"grouped split ({args.val_fraction:.0%}, seed {args.seed}) of train_*; disjointness from "
               f"the members' training data NOT guaranteed: " + "; ".join(reasons))
        _log("WARNING: " + how)
    test_idx = np.arange(len(test.labels))
    if args.smoke:
        rng = np.random.default_rng(args.seed)
        val_idx = np.sort(rng.permutation(val_idx)[:64])
        test_idx = np.sort(rng.permutation(test_idx)[:64])
    _log(f"validation: {len(val_idx)} patches ({how[:60]}...); public_test: {len(test_idx)}")

    x_val = io.to_model_input(np.asarray(train.images[val_idx]))
    y_val = labels[val_idx]
    p_val = predict_arrays(models, x_val, batch_size=args.batch_size)
    validation = {
        "split": "train_*", "how": how, "disjoint_from_member_training": bool(guaranteed),
        "n": len(val_idx), "data": str(folder.resolve()),
        "train_labels_sha256": sha256_file(folder / "train_labels.npy"), "smoke": bool(args.smoke),
    }
    spec = fit_ensemble([MemberInfo.from_bundle(m.info) for m in models], p_val, y_val,
                        percentile=args.percentile, validation=validation)

    x_te = io.to_model_input(np.asarray(test.images[test_idx]))
    y_te = np.asarray(test.labels, dtype=np.int64)[test_idx]
    p_te = predict_arrays(models, x_te, batch_size=args.batch_size)
    res = combine(spec, p_te)
    rows = []
    for m, ms in zip(models, spec.members):
        row = compare(m.name, m.task, p_te[m.name], y_te, task_scores(m.task, p_te[m.name], ms.subset))
        from mammo_core.labels import get_task
        from mammo_core.metrics import expected_calibration_error

        keep, y = get_task(m.task).map_labels(y_te)
        row["ece_after_temperature"] = expected_calibration_error(
            y, apply_temperature(p_te[m.name][keep], ms.temperature))
        row["temperature"] = ms.temperature
        row["weight"] = ms.weight
        rows.append(row)
    ens_scores = {"malignant": task_scores("five_class", res.probabilities)["malignant"],
                  "mass": task_scores("five_class", res.probabilities)["mass"]}
    if spec.coverage["baseline"]:
        ens_scores["abnormal"] = 1.0 - res.probabilities[:, 0]
    erow = compare(args.name, "five_class", res.probabilities, y_te, ens_scores)
    erow["flagged_fraction"] = float(res.flagged.mean())
    if res.disagreement is not None:
        from mammo_core.labels import NAME_TO_LABEL

        pred = np.array([NAME_TO_LABEL[c] for c in res.predicted])
        ok = pred == y_te
        erow["accuracy_unflagged"] = float(ok[~res.flagged].mean()) if (~res.flagged).any() else None
        erow["accuracy_flagged"] = float(ok[res.flagged].mean()) if res.flagged.any() else None
    rows.append(erow)

    cols = ["model", "task", "n", "auc_abnormal_vs_baseline", "auc_mass_vs_calcification",
            "auc_benign_vs_malignant", "accuracy", "ece", "nll"]
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        table.append("| " + " | ".join(
            (f"{r[c]:.4f}" if isinstance(r[c], float) and math.isfinite(r[c]) else
             ("—" if isinstance(r[c], float) else str(r[c]))) for c in cols) + " |")
    _log("public_test comparison:\n" + "\n".join(table))

    out = args.out
    card = {
        "name": args.name,
        "training": {"method": "mammo_core.ensemble (temperature scaling, soft voting, hierarchy)",
                     "validation": validation, "held_out": "public_test",
                     "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if sys.argv else [])])},
        "metrics": _clean({"split": "public_test", "measured": "once, after fitting",
                           "smoke": bool(args.smoke), **{k: erow[k] for k in cols[2:]}}),
        "disclaimer": DISCLAIMER,
    }
    info = write_ensemble(out, spec, card)
    doc = {"disclaimer": DISCLAIMER, "held_out": "public_test", "n_test": len(test_idx),
           "validation": validation, "table": rows, "table_markdown": "\n".join(table),
           "fitted": spec.fitted, "threshold": spec.threshold, "coverage": spec.coverage,
           "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(out / "metrics.json", json.dumps(_clean(doc), indent=2) + "\n")
    plot(rows, out / "comparison.png", f"Members vs {args.name} on public_test (n={len(test_idx)})"
         + (" [smoke]" if args.smoke else ""))
    _log(f"wrote {info.path} (card.json, ensemble.json, metrics.json, comparison.png); "
         f"put it beside the members and run 'mammo models manifest'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
