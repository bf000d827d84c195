#!/usr/bin/env python3
"""Task 4 of the study: baseline tissue vs mass vs calcification (3 classes, baseline patches kept).

Thin script: flags -> mammo_core.training.TrainConfig -> mammo_core.training.train.
Run with --help for the flags; --smoke for a tiny CI run. Research use only - not a medical device.
"""
from __future__ import annotations

import sys

from mammo_core.training.cli import run

TASK = "baseline_mass_calc"


def main(argv: list[str] | None = None) -> int:
    return run(argv, prog="task_4_baseline_mass_calc.py", task=TASK,
               description=(
                   "Task 4 of the study: baseline tissue vs mass vs "
                   "calcification (3 classes, baseline patches kept)."),
               model="scratch_v1", scratch_models=("scratch_v1", "scratch_v2"), transfer=True, preset="4")


if __name__ == "__main__":
    sys.exit(main())
