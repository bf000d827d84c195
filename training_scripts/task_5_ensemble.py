#!/usr/bin/env python3
"""Task 5 of the study (left unfinished there): an ensemble of the task models -> five classes.

Fits, on VALIDATION predictions of the members, a temperature per member, soft-voting weights
per task and the disagreement threshold (see mammo_core/ensemble.py for the method), writes the
ensemble bundle (card.json + ensemble.json, no pickle) and compares every member with the
ensemble on the held-out split (public_test_*): AUC abnormal-vs-baseline (from 1 - P(baseline)),
mass-vs-calcification and benign-vs-malignant (on abnormal patches), accuracy, ECE, NLL, as a
table in metrics.json and comparison.png.

Validation patches: the train_* patches that *no member trained on* (members' grouped splits
recomputed from their cards); when the cards do not allow that, a grouped split of train_* and
the card says that disjointness is NOT guaranteed. The work is done by
mammo_core.ensemble_fit.fit_and_evaluate; this script only maps flags to its config.

Write it into a run folder (never into assets/models, an input or an existing bundle unless
--overwrite), e.g. ``--out runs/ensemble``; to ship it, copy it beside the member bundles (members
are found by name in the ensemble's parent folder; training_scripts/train_bundled.sh does this),
then ``mammo models manifest``.
Research use only - not a medical device.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mammo_core import DISCLAIMER
from mammo_core.ensemble_fit import EnsembleFitConfig, fit_and_evaluate
from mammo_core.errors import MammoError
from mammo_core.paths import path_arg
from mammo_core.training.cli import quiet_terminal
from mammo_core.training.outdir import abandon, plan_out, publish

log = logging.getLogger("task_5_ensemble")


def _log(msg: str) -> None:
    log.info("%s", msg)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="task_5_ensemble.py",
        description="Fit the five-class ensemble of trained member bundles on validation "
                    "predictions and compare it with its members on public_test. " + DISCLAIMER + ".",
        epilog="example: task_5_ensemble.py --members assets/models/scratch_mass_calc "
               "assets/models/vgg16_benign_malignant assets/models/scratch_v2_baseline_mass_calc "
               "--data ../shared/data/mias_patches --out runs/ensemble",
    )
    p.add_argument("--members", nargs="+", type=path_arg, required=True, metavar="DIR",
                   help="member bundle folders (mass_calc, benign_malignant, baseline_mass_calc, five_class)")
    p.add_argument("--data", type=path_arg, required=True, metavar="DIR",
                   help="CBIS-DDSM-layout folder (train_*, public_test_*, optional metadata.csv)")
    p.add_argument("--out", type=path_arg, required=True, metavar="DIR",
                   help="ensemble bundle folder to write; never inside assets/models, an input or an existing "
                        "bundle (unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the bundle already in --out, once the new one is complete and verified")
    p.add_argument("--name", default="ensemble", help="ensemble bundle name (default: ensemble)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fallback grouped validation fraction of train_* (default 0.2)")
    p.add_argument("--percentile", type=float, default=90.0,
                   help="disagreement threshold: this percentile of validation disagreement (default 90)")
    p.add_argument("--oof", nargs="+", type=path_arg, default=(), metavar="DIR",
                   help="members' run folders with oof.npz (same order as --members): fit on their "
                        "out-of-fold predictions over every train_* patch (preferred)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (over women) for CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--smoke", action="store_true", help="tiny subsets (CI): at most 64 patches per split")
    p.add_argument("--held-out-seen", default="", metavar="WHY",
                   help="the public_test split was seen before a change to this ensemble's fitting: "
                        "say how; the card then records its numbers as not blind (metrics.blind false) "
                        "and the viewer and reports show them as test-split, not held-out, figures")
    return p.parse_args(argv)


def config_from_args(args) -> EnsembleFitConfig:
    return EnsembleFitConfig(
        members=tuple(args.members), data=args.data, out=args.out, name=args.name,
        val_fraction=args.val_fraction, percentile=args.percentile, seed=args.seed,
        batch_size=args.batch_size, smoke=args.smoke, oof=tuple(args.oof), n_boot=args.n_boot,
        held_out_seen=args.held_out_seen.strip(),
        command=" ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if sys.argv else [])]),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_terminal("task_5_ensemble.py")  # library start-up lines to the training log
    try:  # usage: the output folder checked against every input before any work
        inputs = {"--data": args.data, **{f"--members {m}": m for m in args.members},
                  **{f"--oof {d}": d for d in args.oof}}
        plan = plan_out(args.out, inputs, overwrite=args.overwrite)
        cfg = config_from_args(args)
    except MammoError as err:
        log.error("error: %s", err)
        return 2
    try:
        fit_and_evaluate(replace(cfg, out=plan.work), log=_log)
        publish(plan)
    except MammoError as err:
        abandon(plan)
        log.error("error: %s", err)
        return 1
    except OSError as exc:  # the disk: full, read-only, removed under the run
        abandon(plan)
        log.error("error: %s: %s", exc.filename or plan.work, exc.strerror or exc)
        return 1
    except BaseException:
        abandon(plan)
        raise
    _log(f"wrote {plan.final} (card.json, ensemble.json, metrics.json, comparison.png); "
         f"put it beside the members and run 'mammo models manifest'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
