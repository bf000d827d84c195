"""Fitting one model (scratch, or transfer with cached features and optional fine-tuning) and
evaluating it. Everything here is called by :func:`mammo_core.training.train`."""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mammo_core.errors import MammoError
from mammo_core.metrics import auc, bootstrap_ci, ci_method, classification_metrics, hard_label_auc
from mammo_core.models import build_model
from mammo_core.models.output import training_view
from mammo_core.models.transfer import backbone_layer_names, set_mode, split_base_head
from mammo_core.training.augment import AugmentSpec, get_spec
from mammo_core.training.config import TrainConfig, class_weights
from mammo_core.training.distribute import gpu_available, make_placement, scaled_lr
from mammo_core.training.pipeline import default_workers, make_dataset

__all__ = ["FitResult", "RunInfo", "evaluate", "extract_features", "fit_model", "get_placement", "gpu_available",
           "predict", "unfreeze_last_conv"]

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    model: Any
    history: list[dict] = field(default_factory=list)  # one row per epoch, all stages
    seconds: float = 0.0
    class_weights: dict[int, float] = field(default_factory=dict)
    run: Any = None  # RunInfo


def get_placement(cfg: TrainConfig):
    """The run's :class:`~mammo_core.training.distribute.Placement` (backend, devices, strategy)."""
    return make_placement(cfg.distribute)


def _log(msg: str) -> None:
    log.info("%s", msg)


def build(cfg: TrainConfig, n_classes: int, placement=None):
    opts = dict(cfg.model_options)
    if cfg.is_transfer:
        opts["mode"] = "fe"  # training always starts with the frozen base; ft follows
    placement = placement or get_placement(cfg)
    with placement.scope():
        return build_model(cfg.model, n_classes, **opts)


OPTIMIZER_CLASSES = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}


def _compile(model, lr: float, placement, optimizer: str = "adam"):
    """Compile the view of ``model`` that trains (the model itself; for the sigmoid output the
    view ending at the units' logits, with their binary cross-entropy: models.output) and
    return it: fit that view, keep ``model``."""
    import keras

    with placement.scope():  # the optimizer's variables belong to the strategy too
        view, loss = training_view(model)
        opt = getattr(keras.optimizers, OPTIMIZER_CLASSES[optimizer])(learning_rate=lr)
        view.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    return view


def unfreeze_last_conv(model) -> str:
    """Fine-tuning as the study wrote it ("the last layer"): only the backbone's last
    convolutional layer is trainable (plus the head). Returns its name."""
    import keras

    names = backbone_layer_names(model)
    convs = [n for n in names if isinstance(model.get_layer(n), keras.layers.Conv2D)]
    if not convs:
        raise MammoError("no convolutional layer in the backbone to fine-tune")
    for n in names:
        model.get_layer(n).trainable = n == convs[-1]
    return convs[-1]


def _fit(model, train_ds, val_ds, epochs: int, patience: int, stage: str, first_epoch: int,
         placement=None) -> list[dict]:
    import keras

    monitor = "val_loss" if val_ds is not None else "loss"
    cbs = [keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True),
           _epoch_logger(stage, epochs)]
    _log(f"[{stage}] up to {epochs} epochs, early stopping on {monitor} (patience {patience})")
    with placement.scope() if placement is not None else contextlib.nullcontext():
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


def extract_features(base, x: np.ndarray, batch_size: int, augment: str | AugmentSpec, copies: int, seed: int,
                     y: np.ndarray | None = None, workers: int | None = None):
    """Run the frozen base once over the original patches and ``copies`` augmented variants of
    each (the study's cache: two variants added to each original, 3N); with ``augment`` none
    only the originals. Returns ``(features, labels)`` stacked: originals, then copy after copy.
    Copy ``k`` is the seeded stream's epoch ``k`` (reproducible at any worker count)."""
    copies = 0 if get_spec(augment).is_identity else max(0, int(copies))
    feats = [base.predict(make_dataset(x, batch_size=batch_size), verbose=0)]
    for k in range(copies):
        ds = make_dataset(x, batch_size=batch_size, augment=augment, seed=seed, epoch=k, workers=workers)
        feats.append(base.predict(ds, verbose=0))
    f = np.concatenate(feats)
    return f, (np.concatenate([y] * (copies + 1)) if y is not None else None)


@dataclass
class RunInfo:
    """What a fit actually used (for the card)."""

    backend: str
    distribute: str
    replicas: int
    per_replica_batch: int
    global_batch: int
    learning_rate: float
    ft_learning_rate: float | None
    lr_scaling: str
    workers: int
    ft_trainable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def fit_model(cfg: TrainConfig, x_tr, y_tr, x_val, y_val, n_classes: int, placement=None) -> FitResult:
    """Train one model on (x_tr, y_tr) with early stopping on (x_val, y_val)."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    placement = placement or get_placement(cfg)
    t0 = time.perf_counter()
    cw = class_weights(y_tr, cfg.class_weights, n_classes)
    bs = cfg.batch_size * max(1, placement.replicas)
    k = placement.multiple_of
    workers = cfg.workers or default_workers()
    lr = scaled_lr(cfg.learning_rate, cfg.lr_scaling, placement.replicas)
    ft_lr = scaled_lr(float(cfg.ft_lr if cfg.ft_lr is not None else cfg.learning_rate), cfg.lr_scaling,
                      placement.replicas)
    aug = cfg.augmentation_spec
    if k > 1:  # JAX data parallelism: every batch must split evenly over the devices
        x_val, y_val = x_val[:len(y_val) // k * k], y_val[:len(y_val) // k * k]
    val_ds = make_dataset(x_val, y_val, batch_size=bs) if len(y_val) else None
    model = build(cfg, n_classes, placement)
    history: list[dict] = []
    is_ft = cfg.is_transfer and cfg.model_options.get("mode", "fe") == "ft"
    info = RunInfo(placement.backend, placement.kind, placement.replicas, cfg.batch_size, bs, lr,
                   ft_lr if is_ft else None, cfg.lr_scaling, workers)
    if not cfg.is_transfer:
        trained = _compile(model, lr, placement, cfg.optimizer)
        train_ds = make_dataset(x_tr, y_tr, batch_size=bs, weights=cw, shuffle=True, augment=aug, seed=cfg.seed,
                                workers=workers, multiple_of=k)
        history += _fit(trained, train_ds, val_ds, cfg.epochs, cfg.patience, "train", 0, placement)
    else:
        with placement.scope():  # the head (a new keras.Model) must belong to the strategy too
            base, head = split_base_head(model)
        t1 = time.perf_counter()
        f_tr, fy_tr = extract_features(base, x_tr, bs, aug, cfg.fe_copies, cfg.seed, y_tr, workers)
        f_val = base.predict(make_dataset(x_val, batch_size=bs), verbose=0) if len(y_val) else None
        _log(f"[fe] cached features {f_tr.shape} of {len(x_tr)} patches x "
             f"{len(f_tr) // max(1, len(x_tr))} (originals + augmented variants) in {time.perf_counter() - t1:.1f} s")
        trained = _compile(head, lr, placement, cfg.optimizer)
        head_tr = make_dataset(f_tr, fy_tr, batch_size=bs, weights=cw, shuffle=True, seed=cfg.seed, multiple_of=k)
        head_val = make_dataset(f_val, y_val, batch_size=bs) if f_val is not None else None
        history += _fit(trained, head_tr, head_val, cfg.epochs, cfg.patience, "fe", 0, placement)
        del f_tr, f_val
        if is_ft:
            set_mode(model, cfg.model_options.get("backbone", "vgg16"), "ft")
            if cfg.ft_unfreeze == "last_conv":
                unfreeze_last_conv(model)
            info.ft_trainable = [layer.name for layer in model.layers if layer.trainable and layer.weights]
            _log(f"[ft] trainable: {', '.join(info.ft_trainable)}")
            trained = _compile(model, ft_lr, placement, cfg.optimizer)
            train_ds = make_dataset(x_tr, y_tr, batch_size=bs, weights=cw, shuffle=True, augment=aug,
                                    seed=cfg.seed + 7, workers=workers, multiple_of=k)
            history += _fit(trained, train_ds, val_ds, int(cfg.ft_epochs or cfg.epochs), cfg.patience, "ft",
                            len(history), placement)
    return FitResult(model, history, time.perf_counter() - t0, cw, info)


def predict(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.asarray(model.predict(make_dataset(x, batch_size=batch_size), verbose=0), dtype=np.float64)


def evaluate(model, x, y, classes, batch_size: int, n_boot: int = 2000, seed: int = 0,
             groups: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Held-out metrics (mammo_core.metrics) plus a 95 % bootstrap CI of the AUC (resampling
    women when ``groups`` names them, patches otherwise)."""
    p = predict(model, x, batch_size)
    m = classification_metrics(y, p, tuple(classes))
    m["auc_hard_labels"] = hard_label_auc(y, p)
    m["auc_note"] = ("auc: ROC AUC of the predicted probabilities; auc_hard_labels: ROC AUC of the "
                     "argmax labels, as the study's tables (not comparable with auc)")
    m["loss"] = m["nll"]
    lo, hi = bootstrap_ci(y, p, auc, n_boot=n_boot, seed=seed, groups=groups)
    m["auc_ci95"] = [lo, hi]
    m["auc_ci_method"] = ci_method(n_boot, groups)
    return m, p
