"""The shared flags of ``training_scripts/`` (one parser, one main; the scripts are thin)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from mammo_core import DISCLAIMER, logsetup
from mammo_core.errors import MammoError
from mammo_core.labels import get_task
from mammo_core.models.output import OUTPUT_ACTIVATIONS
from mammo_core.paths import path_arg
from mammo_core.shifts import AUGMENTS
from mammo_core.training.augment import AUGMENT_SPECS, OVERRIDE_FIELDS
from mammo_core.training.config import (
    DISTRIBUTE,
    FT_UNFREEZE,
    LR_SCALING,
    OPTIMIZERS,
    TrainConfig,
    parse_class_weights,
    parse_grid,
)
from mammo_core.training.distribute import check_backend
from mammo_core.training.outdir import UsageError, abandon, plan_out, publish
from mammo_core.training.presets import format_table, resolve
from mammo_core.training.runner import train

log = logging.getLogger(__name__)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag defaults in the help (not for flags whose default is the preset), the preset table
    kept as written."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


PRESET_HELP = "default: the study preset (table below)"


def make_parser(prog: str, description: str, *, scratch_models: tuple[str, ...] = ("scratch_v1",),
                transfer: bool = False, default_model: str | None = None,
                preset: str | None = None) -> argparse.ArgumentParser:
    table = format_table(preset) + "\n\n" if preset else ""
    augs = "; ".join(f"{k}: {v.description}" for k, v in AUGMENT_SPECS.items())
    p = argparse.ArgumentParser(
        prog=prog, description=description + f" ({DISCLAIMER}.)",
        formatter_class=_HelpFormatter,
        epilog=table + "Writes into --out: model.keras + card.json (the bundle; the card lists every setting "
               "with its source), metrics.json, history.csv, curves.png, confusion_matrix.png, roc.png "
               "(and folds.csv / grid.csv when asked).",
    )
    p.add_argument("--data", required=True, type=path_arg, metavar="DIR",
                   help="CBIS-DDSM-layout folder (train_*, public_test_* arrays; metadata.csv optional)")
    p.add_argument("--out", required=True, type=path_arg, metavar="DIR",
                   help="output folder (the bundle); never inside assets/models, --data or an existing "
                        "bundle (unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the bundle already in --out, once the new one is complete and verified "
                        "(the folder is exchanged in one step; a failed run leaves the old bundle)")
    p.add_argument("--name", default=None, help="bundle name (default: derived from task and model)")
    models = list(scratch_models) + (["transfer"] if transfer else [])
    if len(models) > 1:
        p.add_argument("--model", choices=models, default=None,
                       help=f"registry model to train ({PRESET_HELP if preset else default_model})")
    if transfer:
        g = p.add_argument_group("transfer learning")
        g.add_argument("--backbone", choices=("vgg16", "vgg19", "resnet50", "vgg16_block4"), default=None,
                       help=f"ImageNet base; vgg16_block4 = VGG16 cut after block 4 (smaller model); {PRESET_HELP}")
        g.add_argument("--mode", choices=("fe", "ft"), default=None,
                       help="fe: frozen base, head trained on cached features; ft: then fine-tune "
                            f"(--ft-unfreeze) at --ft-lr; {PRESET_HELP}")
        g.add_argument("--weights", default="imagenet",
                       help="'imagenet' (keras download), a .weights.h5 file, or 'none'")
        g.add_argument("--fe-copies", type=int, default=None,
                       help=f"augmented variants added to each original patch in the feature cache; {PRESET_HELP}")
        g.add_argument("--ft-unfreeze", choices=FT_UNFREEZE, default=None,
                       help=f"fine-tuning: the last conv layer or the whole last block; {PRESET_HELP}")
        g.add_argument("--ft-epochs", type=int, default=None, help="fine-tuning epochs (default --epochs)")
        g.add_argument("--ft-lr", type=float, default=None, help="fine-tuning learning rate (default --lr)")
        g.add_argument("--head", choices=("flatten", "pooled"), default="flatten",
                       help="flatten: Flatten + Dense(hidden) head trained with Keras; pooled: globally "
                            "pooled backbone layers + L2 logistic regression (frozen backbone, k-fold "
                            "out-of-fold choice of pooling, C and TTA; needs --folds)")
        g.add_argument("--pool-candidates", nargs="+", default=("block3_pool,block4_pool,block5_pool:avg",),
                       metavar="LAYERS:POOL", help="pooled head: candidate layer lists with pooling "
                       "avg|max|avgmax, chosen out of fold")
        g.add_argument("--c-grid", nargs="+", type=float, default=(), metavar="C",
                       help="pooled head: logistic-regression C values tried out of fold")
        g.add_argument("--tta", choices=("auto", "none", "dihedral8"), default="auto",
                       help="pooled head: test-time augmentation (auto = chosen out of fold)")
        g.add_argument("--train-views", type=int, default=8, choices=range(1, 9), metavar="1-8",
                       help="pooled head: dihedral views per training patch in the fit (view 0 + random others)")
        g.add_argument("--train-augment", choices=AUGMENTS, default="none",
                       help="pooled head: acquisition = training views 1..--augment-views of every patch get a "
                            "random acquisition change (gamma, contrast, noise, blur, rescale; "
                            "mammo_core.shifts.random_acquisition); scale = the random rescale only; "
                            "predictions unchanged")
        g.add_argument("--augment-views", type=int, default=1, metavar="N",
                       help="pooled head, --train-augment acquisition / scale: how many of the --train-views views "
                            "(never view 0) are changed (default 1)")
        g.add_argument("--feature-squash", type=float, default=0.0, metavar="K",
                       help="pooled head: K > 0 squashes each pooled feature f to f / (f + K x its median over "
                            "the fitting rows) before the standardisation (a built-in softsign in the bundle; "
                            "docs/robust_inputs.md); 0 = none (default)")
        g.add_argument("--feature-cache", default="", metavar="DIR",
                       help="pooled head: feature cache folder (default $MAMMO_FEATURE_CACHE or "
                            "runs/feature_cache; never in git)")
    p.add_argument("--hidden", type=int, default=None, help="units of the hidden dense layer")
    if any(m.startswith("scratch") for m in models):
        p.add_argument("--dropout", type=float, default=None,
                       help="dropout after the hidden dense layer (scratch_v1: 0 = none, the study's first "
                            "Task 2.2 model had dropout with --hidden 256; scratch_v2: 0.2)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"optimizer; {PRESET_HELP}")
    p.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default=None,
                   help="softmax over the classes, or (two-class tasks) sigmoid: one sigmoid unit trained "
                        "with binary cross-entropy, the bundle outputs [1 - s, s]; " + PRESET_HELP)
    p.add_argument("--epochs", type=int, default=None, help=f"maximum epochs; {PRESET_HELP}")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"batch per replica (global batch = this x replicas); {PRESET_HELP}")
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate; {PRESET_HELP}")
    p.add_argument("--patience", type=int, default=None,
                   help=f"early-stopping patience (epochs, val_loss); {PRESET_HELP}")
    p.add_argument("--class-weights", default=None,
                   help="'balanced' (total / (n_classes * n_c)), 'none', or one number per class: 1,1.25; "
                        + PRESET_HELP)
    p.add_argument("--augment", choices=tuple(AUGMENT_SPECS), default=None,
                   help=f"augmentation ({augs}); {PRESET_HELP}")
    p.add_argument("--no-augment", action="store_true",
                   help="the study's variant without augmentation (= --augment none)")
    p.add_argument("--augment-spec", type=_json_object, default=None, metavar="JSON",
                   help="ImageDataGenerator arguments over --augment, e.g. "
                        "'{\"width_shift_range\": 0.1, \"fill_mode\": \"reflect\"}' (keys: "
                        + ", ".join(OVERRIDE_FIELDS) + ")")
    p.add_argument("--val-fraction", type=float, default=0.15, help="grouped validation fraction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=0, help="k-fold holdout (study: 4) before the final model")
    p.add_argument("--grid", nargs="+", default=(), metavar="KEY=V1,V2",
                   help="grid search, e.g. batch=25,50 hidden=64,128,256,512")
    p.add_argument("--distribute", choices=DISTRIBUTE, default="none",
                   help="mirrored: tf.distribute.MirroredStrategy over all local GPUs; multiworker: "
                        "MultiWorkerMirroredStrategy from TF_CONFIG (TensorFlow backend); data-parallel: "
                        "keras.distribution.DataParallel over all local devices (KERAS_BACKEND=jax)")
    p.add_argument("--lr-scaling", choices=LR_SCALING, default="none",
                   help="linear: learning rate x replicas (the global batch grows with them)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 on a GPU (Keras policy; ignored on CPU); the saved model is float32")
    p.add_argument("--workers", type=int, default=0,
                   help="augmentation threads (0 = every core); the batches are the same at any value")
    p.add_argument("--allow-collapsed", action="store_true",
                   help="write the bundle even when its validation / out-of-fold predictions are (near) "
                        "constant or one class (refused by default; the card records it)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the AUC CI")
    p.add_argument("--held-out-seen", default="", metavar="WHY",
                   help="the public_test split was seen before a change to this model: say how; the "
                        "card then records its numbers as not blind (metrics.blind false) and the viewer "
                        "and reports show them as test-split, not held-out, figures")
    p.add_argument("--smoke", action="store_true",
                   help="tiny CI run: a few patches per class, one epoch, batch 8")
    p.add_argument("--log", type=path_arg, default=None, metavar="FILE",
                   help="log file: every message, and the start-up lines of TensorFlow / absl / JAX / CUDA "
                        "(kept off the terminal) (default $XDG_DATA_HOME/mammo-patches/training.log)")
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    return p


def config_from_args(args: argparse.Namespace, task: str, model: str | None, argv: list[str], prog: str,
                     preset: str | None = None):
    given = {"model": getattr(args, "model", None), "epochs": args.epochs, "batch_size": args.batch_size,
             "lr": args.lr, "patience": args.patience, "class_weights": args.class_weights,
             "augment": "none" if args.no_augment else args.augment, "optimizer": args.optimizer,
             "output_activation": args.output_activation}
    for k in ("backbone", "mode", "fe_copies", "ft_unfreeze"):
        given[k] = getattr(args, k, None)
    if preset:
        settings = resolve(preset, given)
        val = {k: s.value for k, s in settings.items()}
    else:  # no preset: the library's defaults
        settings = {}
        val = {k: v for k, v in given.items() if v is not None}
    model = val.get("model") or model
    opts: dict = {}
    if args.hidden is not None:
        opts["hidden"] = args.hidden
    if getattr(args, "dropout", None) is not None:
        opts["dropout"] = args.dropout
    if val.get("output_activation") is not None and getattr(args, "head", "flatten") != "pooled":
        opts["output_activation"] = val["output_activation"]
    extra: dict = {}
    if model == "transfer":
        opts.update(backbone=val.get("backbone", "vgg16"), mode=val.get("mode", "fe"), weights=args.weights)
        extra = {"ft_epochs": args.ft_epochs, "ft_lr": args.ft_lr}
        for k in ("fe_copies", "ft_unfreeze"):
            if k in val:
                extra[k] = val[k]
        if getattr(args, "head", "flatten") == "pooled":
            opts["head"] = "pooled"
            extra.update(pool_candidates=tuple(args.pool_candidates), c_grid=tuple(args.c_grid),
                         tta=args.tta, feature_cache=args.feature_cache, train_views=args.train_views,
                         train_augment=args.train_augment, augment_views=args.augment_views,
                         feature_squash=args.feature_squash)
    for k in ("epochs", "batch_size", "lr", "patience", "class_weights", "augment", "optimizer"):
        if val.get(k) is not None:
            extra[k] = val[k]
    if args.augment_spec:
        extra["augment_overrides"] = args.augment_spec
    default_name = f"{task}_{model}" + (f"_{opts['backbone']}_{opts['mode']}" if model == "transfer" else "")
    return TrainConfig(
        task=task, model=model, data_dir=args.data, out_dir=args.out, name=args.name or default_name,
        model_options=opts, val_fraction=args.val_fraction,
        folds=args.folds, grid=parse_grid(list(args.grid)), seed=args.seed, smoke=args.smoke,
        distribute=args.distribute, mixed_precision=args.mixed_precision, n_boot=args.n_boot,
        lr_scaling=args.lr_scaling, workers=args.workers, preset=preset or "",
        settings={k: s.as_dict() for k, s in settings.items()}, allow_collapsed=args.allow_collapsed,
        held_out_seen=args.held_out_seen.strip(),
        command=" ".join(shlex.quote(a) for a in [prog, *argv]), **extra,
    )


# flags the pooled head (chosen out of fold by logistic regression) has no use for, and the
# pooled-only flags the Keras (flatten) head has no use for: given, they are refused (exit 2)
POOLED_IGNORES = ("epochs", "batch_size", "lr", "patience", "augment", "no_augment", "augment_spec", "optimizer",
                  "output_activation", "val_fraction", "grid",
                  "distribute", "mixed_precision", "workers", "hidden", "lr_scaling", "fe_copies", "ft_unfreeze",
                  "ft_epochs", "ft_lr")
FLATTEN_IGNORES = ("pool_candidates", "c_grid", "tta", "train_views", "feature_cache", "train_augment",
                   "augment_views", "feature_squash")


# loggers whose records (TensorFlow, absl, Keras and Python warnings, JAX's backend probing:
# "Unable to initialize backend 'tpu'") go to the log file only
QUIET_LOGGERS = ("tensorflow", "absl", "keras", "h5py", "py.warnings", "jax", "jax._src.xla_bridge")
_DIVERTED: list[Path] = []


def default_log() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "mammo-patches" / "training.log"


def quiet_terminal(prog: str, log_file: Path | None = None) -> Path | None:
    """The script's own lines on the terminal; TensorFlow / absl / JAX / CUDA start-up lines
    (native writes to descriptor 2 included) and library warnings to the log file. Descriptor 2
    is diverted once per process, and only when ``sys.stderr`` is the process's own (not a
    test's capture). Returns the log file, or None where it cannot be written."""
    used = logsetup.configure(prog, log_file=log_file or default_log(), quiet=QUIET_LOGGERS)
    logging.captureWarnings(True)
    own = sys.stderr is sys.__stderr__
    if used is not None and own and not _DIVERTED and logsetup.divert_native_stderr(used):
        _DIVERTED.append(used)
    return used


def _json_object(text: str) -> dict:
    """argparse ``type`` of --augment-spec: a JSON object (checked again by the config)."""
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"zoom_range\": 0.1}'")
    return doc


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, cfg: TrainConfig) -> None:
    """Refuse flags the chosen head would silently ignore, and class weights that do not match
    the task (UsageError, exit 2)."""
    pooled = cfg.model_options.get("head") == "pooled"
    ignored = POOLED_IGNORES if pooled else FLATTEN_IGNORES
    given = [_flag(d) for d in ignored if hasattr(args, d) and getattr(args, d) != parser.get_default(d)]
    if pooled and getattr(args, "mode", None) == "ft":
        given.append("--mode ft")
    if cfg.model == "transfer" and getattr(args, "dropout", None) is not None:
        given.append("--dropout")
    if given:
        what = ("--head pooled (logistic regression on frozen pooled features, chosen out of fold)"
                if pooled else "--head flatten (the Keras head)")
        raise UsageError(f"{', '.join(given)} not used by {what}; leave "
                         f"{'it' if len(given) == 1 else 'them'} out")
    parsed = parse_class_weights(cfg.class_weights)
    n = get_task(cfg.task).n_classes
    if isinstance(parsed, tuple) and len(parsed) != n:
        raise UsageError(f"--class-weights {cfg.class_weights}: {len(parsed)} weights for the {n} classes of "
                         f"task {cfg.task} ({', '.join(get_task(cfg.task).classes)})")


def run(argv: list[str] | None, *, prog: str, task: str, description: str, model: str = "scratch_v1",
        scratch_models: tuple[str, ...] | None = None, transfer: bool = False, preset: str | None = None) -> int:
    """Parse flags, train, print where the results are. Exit 0 ok, 1 bad input, 2 usage."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    scratch_models = scratch_models if scratch_models is not None else ((model,) if model != "transfer" else ())
    parser = make_parser(prog, description, scratch_models=scratch_models, transfer=transfer,
                         default_model=model, preset=preset)
    args = parser.parse_args(argv)
    quiet_terminal(prog, args.log)  # training progress is INFO; library start-up lines to the log
    try:  # usage: every flag and the output folder checked before any work or folder is made
        cfg = config_from_args(args, task, model, argv, prog, preset)
        check_flags(parser, args, cfg)
        check_backend(cfg.distribute)
        plan = plan_out(cfg.out_dir, {"--data": cfg.data_dir}, overwrite=args.overwrite)
    except MammoError as exc:
        if args.debug:
            raise
        log.error("error: %s", exc)
        return 2
    try:
        result = train(cfg.with_(out_dir=plan.work))
        publish(plan)
    except MammoError as exc:
        abandon(plan)
        if args.debug:
            raise
        log.error("error: %s", exc)
        return 2 if isinstance(exc, UsageError) else 1
    except OSError as exc:  # the disk: full, read-only, removed under the run
        abandon(plan)
        if args.debug:
            raise
        log.error("error: %s: %s", exc.filename or plan.work, exc.strerror or exc)
        return 1
    except BaseException:
        abandon(plan)
        raise
    result.out_dir = plan.final
    m = result.metrics
    if cfg.model_options.get("head") == "pooled":  # chosen out of fold; held-out numbers stay in the card
        print(f"{cfg.bundle_name}: held-out split scored once (see card.json) -> {result.out_dir} ({DISCLAIMER})")
        return 0
    print(f"{cfg.bundle_name}: public_test accuracy {m['accuracy']:.4f} AUC {m['auc']:.4f} "
          f"F1 {m['f1_macro']:.4f} -> {result.out_dir} ({DISCLAIMER})")
    return 0
