#!/usr/bin/env python3
"""Task 2.1 of the study: CNN from scratch (Fig. 2), mass vs calcification.

Thin script: flags -> mammo_core.training.TrainConfig -> mammo_core.training.train.
Run with --help for the flags; --smoke for a tiny CI run. Research use only - not a medical device.
"""
from __future__ import annotations

import sys

from mammo_core.training.cli import run

TASK = "mass_calc"


def main(argv: list[str] | None = None) -> int:
    return run(argv, prog="task_2_1_scratch_mass_calc.py", task=TASK,
               description=(
                   "Task 2.1 of the study: CNN from "
                   "scratch (Fig. 2), mass vs calcification."),
               model="scratch_v1", scratch_models=("scratch_v1", "scratch_v2"), transfer=False, preset="2.1")


if __name__ == "__main__":
    sys.exit(main())
