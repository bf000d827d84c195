#!/usr/bin/env python3
"""Task 3.2 of the study: ImageNet backbone (VGG16/VGG19/ResNet50), benign vs malignant.

Thin script: flags -> mammo_core.training.TrainConfig -> mammo_core.training.train.
Run with --help for the flags; --smoke for a tiny CI run. Research use only - not a medical device.
"""
from __future__ import annotations

import sys

from mammo_core.training.cli import run

TASK = "benign_malignant"


def main(argv: list[str] | None = None) -> int:
    return run(argv, prog="task_3_2_pretrained_benign_malignant.py", task=TASK,
               description=(
                   "Task 3.2 of the study: ImageNet backbone "
                   "(VGG16/VGG19/ResNet50), benign vs malignant."),
               model="transfer", scratch_models=(), transfer=True, preset="3.2")


if __name__ == "__main__":
    sys.exit(main())
