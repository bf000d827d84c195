"""Fitting one model (scratch, or transfer with cached features and optional fine-tuning) and
evaluating it. Everything here is called by :func:`mammo_core.training.train`."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mammo_core.metrics import auc, bootstrap_ci, ci_method, classification_metrics
from mammo_core.models import build_model
from mammo_core.models.transfer import set_mode, split_base_head
from mammo_core.training.config import TrainConfig, class_weights
from mammo_core.training.pipeline import make_dataset


@dataclass
class FitResult:
    model: Any
    history: list[dict] = field(default_factory=list)  # one row per epoch, all stages
    seconds: float = 0.0
    class_weights: dict[int, float] = field(default_factory=dict)


_STRATEGIES: dict[str, Any] = {}


def get_strategy(cfg: TrainConfig):
    """One strategy object per kind and process: two MirroredStrategy objects in one process
    reuse collective-op keys and abort with a shape mismatch when a second run trains."""
    import tensorflow as tf

    if cfg.distribute == "mirrored":
        if "mirrored" not in _STRATEGIES:
            _STRATEGIES["mirrored"] = tf.distribute.MirroredStrategy()
        return _STRATEGIES["mirrored"]
    return tf.distribute.get_strategy()


def gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(cfg: TrainConfig, n_classes: int, strategy=None):
    opts = dict(cfg.model_options)
    if cfg.is_transfer:
        opts["mode"] = "fe"  # training always starts with the frozen base; ft follows
    strategy = strategy or get_strategy(cfg)
    with strategy.scope():
        return build_model(cfg.model, n_classes, **opts)


def _compile(model, lr: float, strategy):
    import keras

    with strategy.scope():
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=["accuracy"])


def _fit(model, train_ds, val_ds, epochs: int, patience: int, stage: str, first_epoch: int) -> list[dict]:
    import keras

    monitor = "val_loss" if val_ds is not None else "loss"
    cbs = [keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True),
           _epoch_logger(stage, epochs)]
    _log(f"[{stage}] up to {epochs} epochs, early stopping on {monitor} (patience {patience})")
    h = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=cbs, verbose=0, shuffle=False)
    rows = []
    n = len(next(iter(h.history.values()))) if h.history else 0
    for i in range(n):
        row = {"epoch": first_epoch + i + 1, "stage": stage}
        for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
            v = h.history.get(k)
            row[k] = float(v[i]) if v is not None else math.nan
        rows.append(row)
    return rows


def _epoch_logger(stage: str, epochs: int):
    """One line per epoch on stderr: stage, epoch, losses, accuracies, seconds."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = " ".join(f"{k} {v:.4f}" for k, v in logs.items()
                             if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
            _log(f"[{stage}] epoch {epoch + 1}/{epochs} {parts} ({time.perf_counter() - self._t:.1f} s)")

    return EpochLogger()


def extract_features(base, x: np.ndarray, batch_size: int, augment: str, copies: int, seed: int,
                     y: np.ndarray | None = None):
    """Run the frozen base once over ``copies`` augmented copies of ``x`` (or one plain copy when
    ``augment`` is ``none``); returns ``(features, labels)`` stacked copy after copy."""
    copies = 1 if augment == "none" else max(1, int(copies))
    feats, labels = [], []
    for k in range(copies):
        ds = make_dataset(x, batch_size=batch_size, augment=augment, seed=seed + 1000 * k)
        feats.append(base.predict(ds, verbose=0))
        if y is not None:
            labels.append(y)
    f = np.concatenate(feats)
    return f, (np.concatenate(labels) if y is not None else None)


def fit_model(cfg: TrainConfig, x_tr, y_tr, x_val, y_val, n_classes: int, strategy=None) -> FitResult:
    """Train one model from scratch on (x_tr, y_tr) with early stopping on (x_val, y_val)."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    strategy = strategy or get_strategy(cfg)
    t0 = time.perf_counter()
    cw = class_weights(y_tr, cfg.class_weights, n_classes)
    bs = cfg.batch_size * max(1, strategy.num_replicas_in_sync)
    aug = cfg.augmentation
    val_ds = make_dataset(x_val, y_val, batch_size=bs) if len(y_val) else None
    model = build(cfg, n_classes, strategy)
    history: list[dict] = []
    if not cfg.is_transfer:
        _compile(model, cfg.learning_rate, strategy)
        train_ds = make_dataset(x_tr, y_tr, batch_size=bs, weights=cw, shuffle=True, augment=aug, seed=cfg.seed,
                                 parallel=cfg.parallel_augment)
        history += _fit(model, train_ds, val_ds, cfg.epochs, cfg.patience, "train", 0)
    else:
        with strategy.scope():  # the head (a new keras.Model) must belong to the strategy too
            base, head = split_base_head(model)
        t1 = time.perf_counter()
        f_tr, fy_tr = extract_features(base, x_tr, bs, aug, cfg.fe_copies, cfg.seed, y_tr)
        f_val = base.predict(make_dataset(x_val, batch_size=bs), verbose=0) if len(y_val) else None
        _log(f"[fe] cached features {f_tr.shape} of {len(x_tr)} patches x "
             f"{len(f_tr) // max(1, len(x_tr))} copies in {time.perf_counter() - t1:.1f} s")
        _compile(head, cfg.learning_rate, strategy)
        head_tr = make_dataset(f_tr, fy_tr, batch_size=bs, weights=cw, shuffle=True, seed=cfg.seed)
        head_val = make_dataset(f_val, y_val, batch_size=bs) if f_val is not None else None
        history += _fit(head, head_tr, head_val, cfg.epochs, cfg.patience, "fe", 0)
        del f_tr, f_val
        if cfg.model_options.get("mode", "fe") == "ft":
            set_mode(model, cfg.model_options.get("backbone", "vgg16"), "ft")
            _compile(model, float(cfg.ft_lr if cfg.ft_lr is not None else cfg.learning_rate), strategy)
            train_ds = make_dataset(x_tr, y_tr, batch_size=bs, weights=cw, shuffle=True, augment=aug,
                                    seed=cfg.seed + 7, parallel=cfg.parallel_augment)
            history += _fit(model, train_ds, val_ds, int(cfg.ft_epochs or cfg.epochs), cfg.patience, "ft",
                            len(history))
    return FitResult(model, history, time.perf_counter() - t0, cw)


def predict(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.asarray(model.predict(make_dataset(x, batch_size=batch_size), verbose=0), dtype=np.float64)


def evaluate(model, x, y, classes, batch_size: int, n_boot: int = 2000, seed: int = 0,
             groups: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Held-out metrics (mammo_core.metrics) plus a 95 % bootstrap CI of the AUC (resampling
    women when ``groups`` names them, patches otherwise)."""
    p = predict(model, x, batch_size)
    m = classification_metrics(y, p, tuple(classes))
    m["loss"] = m["nll"]
    lo, hi = bootstrap_ci(y, p, auc, n_boot=n_boot, seed=seed, groups=groups)
    m["auc_ci95"] = [lo, hi]
    m["auc_ci_method"] = ci_method(n_boot, groups)
    return m, p
