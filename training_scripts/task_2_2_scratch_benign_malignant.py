#!/usr/bin/env python3
"""Task 2.2 of the study: CNN from scratch (Fig. 10), benign vs malignant.

Thin script: flags -> mammo_core.training.TrainConfig -> mammo_core.training.train.
Run with --help for the flags; --smoke for a tiny CI run. Research use only - not a medical device.
"""
from __future__ import annotations

import sys

from mammo_core.training.cli import run

TASK = "benign_malignant"


def main(argv: list[str] | None = None) -> int:
    return run(argv, prog="task_2_2_scratch_benign_malignant.py", task=TASK,
               description=(
                   "Task 2.2 of the study: CNN from "
                   "scratch (Fig. 10), benign vs malignant."),
               model="scratch_v2", scratch_models=("scratch_v2", "scratch_v1"), transfer=False, preset="2.2")


if __name__ == "__main__":
    sys.exit(main())
