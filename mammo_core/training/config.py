"""Training settings (frozen dataclass) and class weights."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core.errors import MammoError
from mammo_core.labels import get_task
from mammo_core.models.output import OUTPUT_ACTIVATIONS, check_output_activation
from mammo_core.training.augment import AUGMENT_NAMES, AugmentSpec, check_overrides, get_spec, with_overrides
from mammo_core.training.presets import PRESETS, TASK_DEFAULT_PRESET

AUGMENTATIONS = ("auto", *AUGMENT_NAMES)  # auto = the study's augmentation of the task (presets)
DISTRIBUTE = ("none", "mirrored", "multiworker", "data-parallel")
FT_UNFREEZE = ("last_conv", "last_block")
LR_SCALING = ("none", "linear")
OPTIMIZERS = ("adam", "rmsprop", "sgd")  # the study used Adam; RMSprop is an arm of its section 5.1.1 grid
DEFAULT_LR = {"scratch_v1": 1e-3, "scratch_v2": 1e-3, "transfer": 1e-5}
GRID_KEYS = {"batch": "batch_size", "batch_size": "batch_size", "hidden": "hidden", "lr": "lr",
             "dropout": "dropout", "optimizer": "optimizer", "output_activation": "output_activation"}
MODEL_OPTION_KEYS = ("hidden", "dropout", "output_activation")  # grid keys that are model options


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. ``train(config)`` is the only consumer.

    ``model_options`` go to :func:`mammo_core.models.build_model` (``hidden``, ``backbone``,
    ``mode``, ``weights``...). ``lr=None`` takes the study's default (1e-3 scratch, 1e-5
    transfer). ``class_weights`` is ``balanced`` (total / (n_classes * n_c)), ``none`` or an
    explicit comma list (``"1,1.25"``). ``folds`` > 1 runs the study's k-fold holdout before the
    final model; ``grid`` is a tuple of ``(key, (values...))`` (keys: batch, hidden, lr, dropout,
    optimizer, output_activation). ``model_options["output_activation"]`` ``sigmoid`` (two classes
    only) is one sigmoid unit (:mod:`mammo_core.models.output`).
    The training scripts fill these from the study's preset of their task
    (:mod:`mammo_core.training.presets`) and record the table in ``preset`` / ``settings``;
    built by hand, the defaults below apply (``augment="auto"``: the task's study augmentation).
    ``batch_size`` is per replica; ``lr_scaling="linear"`` multiplies the rate by the replicas.
    """

    task: str
    model: str
    data_dir: Path
    out_dir: Path
    name: str = ""
    model_options: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 50
    lr: float | None = None
    patience: int = 50
    class_weights: str = "balanced"
    augment: str = "auto"
    # ImageDataGenerator arguments over the augmentation named by ``augment`` (augment.AugmentSpec
    # fields: rotation_range, width_shift_range, ..., fill_mode); {} = the named one as it is
    augment_overrides: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "adam"  # adam | rmsprop | sgd
    fe_copies: int = 2  # augmented variants added to each original patch in the feature cache (transfer)
    ft_unfreeze: str = "last_conv"  # fine-tuning: the last conv layer (study) or the last block
    ft_epochs: int | None = None  # fine-tuning epochs (transfer, mode ft); None = epochs
    ft_lr: float | None = None  # fine-tuning rate; None = lr
    val_fraction: float = 0.15
    folds: int = 0
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    seed: int = 0
    smoke: bool = False
    distribute: str = "none"  # none | mirrored | multiworker (TensorFlow) | data-parallel (JAX)
    mixed_precision: bool = False
    lr_scaling: str = "none"  # none | linear (learning rate x replicas)
    n_boot: int = 2000
    workers: int = 0  # loader threads; 0 = every core (the batches are the same at any value)
    preset: str = ""  # the study task whose protocol gave the defaults (training.presets)
    settings: Mapping[str, Any] = field(default_factory=dict)  # resolved preset table, for the card
    command: str = ""
    # the pooled transfer member (model_options head="pooled"; mammo_core.training.pooled)
    pool_candidates: tuple[str, ...] = ()  # "block3_pool,block4_pool:avg" ...; chosen out of fold
    c_grid: tuple[float, ...] = ()  # L2 inverse strengths tried out of fold (default pooled.DEFAULT_C_GRID)
    tta: str = "auto"  # auto (chosen out of fold) | none | dihedral8
    allow_collapsed: bool = False  # write a bundle even if its predictions are constant / one class
    train_views: int = 8  # dihedral views per training patch in the fit (view 0 + random others)
    # pooled member: "acquisition" = training views 1..augment_views get a random acquisition change;
    # "scale" = a random rescale only (mammo_core.shifts.AUGMENT_FAMILIES)
    train_augment: str = "none"
    augment_views: int = 1
    # pooled member: k > 0 squashes each pooled feature, f / (f + k x median), before the standardisation
    feature_squash: float = 0.0
    # how public_test was seen before a change to this model (card: metrics.blind false); "" = blind
    held_out_seen: str = ""
    feature_cache: str = ""  # feature cache folder (default $MAMMO_FEATURE_CACHE or runs/feature_cache)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "model_options", dict(self.model_options))
        if self.augment not in AUGMENTATIONS:
            raise MammoError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        object.__setattr__(self, "augment_overrides", dict(self.augment_overrides))
        check_overrides(self.augment_overrides)
        if self.optimizer not in OPTIMIZERS:
            raise MammoError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        object.__setattr__(self, "settings", dict(self.settings))
        if self.distribute not in DISTRIBUTE:
            raise MammoError(f"distribute must be one of {', '.join(DISTRIBUTE)}, got {self.distribute!r}")
        if self.ft_unfreeze not in FT_UNFREEZE:
            raise MammoError(f"ft_unfreeze must be one of {', '.join(FT_UNFREEZE)}, got {self.ft_unfreeze!r}")
        if self.lr_scaling not in LR_SCALING:
            raise MammoError(f"lr_scaling must be one of {', '.join(LR_SCALING)}, got {self.lr_scaling!r}")
        if not self.feature_squash >= 0:
            raise MammoError(f"feature_squash must be >= 0 (0 = none), got {self.feature_squash}")
        if self.fe_copies < 0 or self.workers < 0:
            raise MammoError("fe_copies and workers must be at least 0")
        for k, _ in self.grid:
            if k not in GRID_KEYS:
                raise MammoError(f"unknown grid key {k!r}; choose from {', '.join(sorted(set(GRID_KEYS)))}")
        n_classes = get_task(self.task).n_classes
        activations = [dict(self.grid).get("output_activation", ()),
                       (self.model_options.get("output_activation", "softmax"),)]
        for activation in {a for values in activations for a in values}:
            check_output_activation(activation, n_classes)
        if self.epochs < 1 or self.batch_size < 1:
            raise MammoError("epochs and batch size must be at least 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise MammoError(f"validation fraction must be in (0, 1), got {self.val_fraction}")
        if self.folds == 1 or self.folds < 0:
            raise MammoError(f"folds must be 0 (off) or at least 2, got {self.folds}")
        parse_class_weights(self.class_weights)  # validate early

    @property
    def learning_rate(self) -> float:
        return float(self.lr if self.lr is not None else DEFAULT_LR.get(self.model, 1e-3))

    @property
    def augmentation(self) -> str:
        if self.augment == "auto":
            return PRESETS[self.preset or TASK_DEFAULT_PRESET.get(self.task, "2.1")]["augment"].value
        return self.augment

    @property
    def augmentation_spec(self) -> AugmentSpec:
        """The augmentation of the run: the named one with ``augment_overrides`` applied."""
        return with_overrides(get_spec(self.augmentation), self.augment_overrides)

    @property
    def is_transfer(self) -> bool:
        return self.model == "transfer"

    @property
    def bundle_name(self) -> str:
        return self.name or self.out_dir.name

    def with_(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; ``hidden``/``dropout``/``output_activation`` go into ``model_options``."""
        opts = dict(self.model_options)
        for k in MODEL_OPTION_KEYS:
            if k in changes:
                opts[k] = changes.pop(k)
        return replace(self, model_options=opts, **changes)


def parse_class_weights(spec: str) -> str | tuple[float, ...]:
    """``balanced`` | ``none`` | explicit comma list of positive floats."""
    s = str(spec).strip().lower()
    if s in ("balanced", "none"):
        return s
    try:
        values = tuple(float(v) for v in s.split(","))
    except ValueError:
        raise MammoError(f"class weights must be 'balanced', 'none' or numbers like 1,1.25; got {spec!r}") from None
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise MammoError(f"class weights must be positive numbers, got {spec!r}")
    return values


def class_weights(labels: np.ndarray, mode: str, n_classes: int | None = None) -> dict[int, float]:
    """Per-class loss weights.

    ``balanced`` is the study's formula ``total / (n_classes * n_c)`` (0.85 / 1.22 for 1341
    benign / 933 malignant); a class absent from ``labels`` gets 0 (it never occurs). ``none``
    gives 1 everywhere; an explicit list must have one value per class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(n_classes if n_classes is not None else labels.max() + 1)
    parsed = parse_class_weights(mode)
    if parsed == "none":
        return {c: 1.0 for c in range(n_classes)}
    if isinstance(parsed, str):  # "balanced"
        counts = np.bincount(labels, minlength=n_classes)
        total = counts.sum()
        return {c: (float(total / (n_classes * counts[c])) if counts[c] else 0.0) for c in range(n_classes)}
    if len(parsed) != n_classes:
        raise MammoError(f"{len(parsed)} class weights given for {n_classes} classes")
    return {c: float(w) for c, w in enumerate(parsed)}


def parse_grid(items: list[str] | tuple[str, ...]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``["batch=25,50", "hidden=64,128"]`` -> ``(("batch", (25, 50)), ("hidden", (64, 128)))``."""
    out = []
    for item in items:
        if "=" not in item:
            raise MammoError(f"grid entries look like key=v1,v2; got {item!r}")
        key, vals = item.split("=", 1)
        key = key.strip()
        if key not in GRID_KEYS:
            raise MammoError(f"unknown grid key {key!r}; choose from batch, hidden, lr, dropout, optimizer, "
                             "output_activation")
        conv = {"lr": float, "dropout": float, "optimizer": str, "output_activation": str}.get(key, int)
        try:
            values = tuple(conv(v.strip()) for v in vals.split(",") if v.strip())
        except ValueError:
            raise MammoError(f"bad grid values in {item!r}") from None
        if not values:
            raise MammoError(f"no values in grid entry {item!r}")
        if key == "optimizer" and set(values) - set(OPTIMIZERS):
            raise MammoError(f"grid optimizer values must be among {', '.join(OPTIMIZERS)}; got {item!r}")
        if key == "output_activation" and set(values) - set(OUTPUT_ACTIVATIONS):
            raise MammoError(f"grid output_activation values must be among {', '.join(OUTPUT_ACTIVATIONS)}; "
                             f"got {item!r}")
        out.append((key, values))
    return tuple(out)
