"""Training: the Keras PyDataset loader with the study's augmentation (numpy/OpenCV), the
study presets, class weights, the scratch and transfer (cached features, fine-tuning) loops,
k-fold holdout, grid search, held-out
evaluation and the files each run writes. Research use only - not a medical device.

``from mammo_core.training import TrainConfig, train`` is the entry point; the scripts in
``training_scripts/`` only turn flags into a :class:`TrainConfig` (``training.cli``).
Importing this package does not import TensorFlow.
"""
from mammo_core.training.config import (
    TrainConfig,
    class_weights,
    parse_class_weights,
    parse_grid,
)
from mammo_core.training.runner import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "class_weights", "parse_class_weights", "parse_grid", "train"]
