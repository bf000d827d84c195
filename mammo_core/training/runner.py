"""``train(config)``: grid search and k-fold (optional), the final model, held-out evaluation,
and everything written to ``config.out_dir`` (bundle, metrics.json, history.csv, plots)."""
from __future__ import annotations

import itertools
import logging
import math
import time
from pathlib import Path

import numpy as np

from mammo_core import DISCLAIMER, io, tfload
from mammo_core.atomic import atomic_write_text
from mammo_core.bundle import sha256_file, write_bundle
from mammo_core.confidence import blind_fields
from mammo_core.datasets.splits import check_split, grouped_kfold, grouped_split, groups_for_arrays
from mammo_core.errors import MammoError
from mammo_core.jsonutil import json_safe, write_json
from mammo_core.labels import get_task
from mammo_core.metrics import check_not_collapsed
from mammo_core.models import build_model, gradcam_layer
from mammo_core.plots import plot_confusion, plot_history, plot_roc
from mammo_core.training.config import TrainConfig
from mammo_core.training.data import TaskData, load_task_data, smoke_subset
from mammo_core.training.loop import OPTIMIZER_CLASSES, evaluate, fit_model, get_placement, gpu_available
from mammo_core.training.outdir import REFUSED_MARK, RefusedRun
from mammo_core.training.pooled import train_pooled
from mammo_core.training.results import FOLD_COLUMNS, TrainResult, summarize_folds, write_csv

log = logging.getLogger(__name__)

SMOKE = {"epochs": 1, "ft_epochs": 1, "batch_size": 8, "n_boot": 200, "fe_copies": 1}  # fe: 2N


def _log(msg: str) -> None:
    log.info("%s", msg)


def validation_split(cfg: TrainConfig, y: np.ndarray, groups: np.ndarray, seed_offset: int = 0):
    tr, va = grouped_split(y, groups, cfg.val_fraction, seed=cfg.seed + seed_offset)
    check_split(tr, va, groups)
    if len(va) == 0 or len(tr) == 0:
        raise MammoError(f"too few groups to carve a {cfg.val_fraction:.0%} validation split "
                         f"from {len(y)} patches")
    return tr, va


def format_fold_table(rows: list[dict]) -> str:
    lines = ["| fold | accuracy | loss | AUC | AUC (hard labels) | F-score |", "|---|---|---|---|---|---|"]
    for r in rows:
        f = r["fold"] if isinstance(r["fold"], str) else f"fold {r['fold']}"
        lines.append(f"| {f} | " + " | ".join(
            "n/a" if r[c] is None or not math.isfinite(r[c]) else f"{r[c]:.4f}" for c in FOLD_COLUMNS) + " |")
    return "\n".join(lines)


def run_folds(cfg: TrainConfig, data: TaskData, placement) -> list[dict]:
    folds = grouped_kfold(data.y_train, data.groups_train, cfg.folds, seed=cfg.seed)
    rows = []
    for i, (tr, te) in enumerate(folds, start=1):
        check_split(tr, te, data.groups_train)
        _log(f"== fold {i}/{cfg.folds}: {len(tr)} train+val, {len(te)} held-out patches")
        itr, iva = validation_split(cfg, data.y_train[tr], data.groups_train[tr], seed_offset=i)
        itr, iva = tr[itr], tr[iva]
        fit = fit_model(cfg, data.x_train[itr], data.y_train[itr], data.x_train[iva], data.y_train[iva],
                        data.n_classes, placement)
        m, _ = evaluate(fit.model, data.x_train[te], data.y_train[te], data.classes, cfg.batch_size,
                        n_boot=0)
        rows.append({"fold": i, "n": len(te), **{c: m[c] for c in FOLD_COLUMNS},
                     "epochs": len(fit.history)})
    return summarize_folds(rows)


def run_grid(cfg: TrainConfig, data: TaskData, placement, out_dir: Path) -> tuple[TrainConfig, list[dict]]:
    """Try every combination; score by mean fold accuracy (with --folds) or validation accuracy.
    Returns the best config and the table (also written to grid.csv)."""
    keys = [k for k, _ in cfg.grid]
    rows = []
    best, best_key, best_params = cfg, None, {}
    for values in itertools.product(*[v for _, v in cfg.grid]):
        params = dict(zip(keys, values))
        changes = {("batch_size" if k in ("batch", "batch_size") else k): v for k, v in params.items()}
        c = cfg.with_(**changes, grid=())
        _log(f"== grid {params}")
        if cfg.folds:
            table = run_folds(c, data, placement)
            mean = table[-2]
            score = {k: mean[k] for k in FOLD_COLUMNS} | {"scored_on": f"mean of {cfg.folds} folds"}
        else:
            tr, va = validation_split(c, data.y_train, data.groups_train)
            fit = fit_model(c, data.x_train[tr], data.y_train[tr], data.x_train[va], data.y_train[va],
                            data.n_classes, placement)
            m, _ = evaluate(fit.model, data.x_train[va], data.y_train[va], data.classes, c.batch_size, n_boot=0)
            score = {k: m[k] for k in FOLD_COLUMNS} | {"scored_on": "validation split"}
        row = {**params, **score}
        rows.append(row)
        acc = score["accuracy"] if score["accuracy"] is not None and math.isfinite(score["accuracy"]) else -1
        loss = score["loss"] if score["loss"] is not None and math.isfinite(score["loss"]) else math.inf
        key = (acc, -loss)
        if best_key is None or key > best_key:
            best, best_key, best_params = c, key, params
    write_csv(out_dir / "grid.csv", rows)
    _log(f"grid: best {best_params} (by accuracy, then loss)")
    return best, rows


def _float32_copy(cfg: TrainConfig, model, n_classes: int):
    """Rebuild ``model`` under the float32 policy (bundles run on CPUs) with the same weights."""
    import keras

    keras.mixed_precision.set_global_policy("float32")

    opts = dict(cfg.model_options)
    if cfg.is_transfer:
        opts["weights"] = "none"
    m = build_model(cfg.model, n_classes, **opts)
    for layer in m.layers:  # by name: the weight order may differ with trainable flags
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return m


def _test_groups(cfg: TrainConfig, data: TaskData) -> np.ndarray | None:
    """The women of the held-out task patches (for bootstrap intervals over women), or None
    where the data does not name them (then patches are resampled)."""
    if cfg.smoke or data.grouping != "patient":
        return None
    labels = io.load_patch_arrays(cfg.data_dir).splits["public_test"].labels
    keep, _ = get_task(data.task).map_labels(np.asarray(labels))
    g = groups_for_arrays(cfg.data_dir, split="public_test")[keep]
    return g if len(g) == len(data.y_test) else None


def output_protocol(opts: dict) -> dict:
    """The output layer and the loss it was trained with, for the card."""
    if opts.get("output_activation", "softmax") == "sigmoid":
        return {"activation": "sigmoid", "units": 2,
                "loss": "binary cross-entropy of the two sigmoid units on one-hot labels (from the logits)",
                "outputs": "the two sigmoid outputs normalised to sum 1: s_c / (s_0 + s_1)"}
    return {"activation": "softmax", "loss": "sparse categorical cross-entropy"}


def collapse_reason(err: MammoError) -> str:
    """The collapse check's message without its 'refusing to write' tail."""
    return str(err).split("; refusing to write")[0]


def write_refused(cfg: TrainConfig, data: TaskData, history: list[dict], val_metrics: dict,
                  err: MammoError, seconds: float) -> None:
    """A run refused by the collapse guard: history.csv, curves.png and metrics.json (marked
    refused, no model file) in ``cfg.out_dir`` so the user can see why; then raise
    :class:`RefusedRun` naming them (exit code 1, as any refusal)."""
    out = cfg.out_dir
    reason = collapse_reason(err)
    write_json(out / "metrics.json", json_safe({
        "task": data.task, "classes": list(data.classes), "refused": reason, "model_written": False,
        "validation": val_metrics, "epochs_run": len(history), "seconds_total": round(seconds, 1),
        "public_test": None, "note": "the held-out split was not scored (no model was kept)",
        "disclaimer": DISCLAIMER}))
    write_csv(out / "history.csv", history, ["epoch", "stage", "loss", "accuracy", "val_loss", "val_accuracy"])
    plot_history(history, out / "curves.png", f"{cfg.bundle_name} ({data.task}) - REFUSED: collapsed")
    atomic_write_text(out / REFUSED_MARK, reason + "\n")
    raise RefusedRun(f"{reason}; no model written (--allow-collapsed writes it anyway). "
                     f"history.csv, curves.png and metrics.json (marked refused) are in {out}")


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` on ``config.task`` and write everything into ``config.out_dir``."""
    tfload.keras_backend()  # imported once, without TensorFlow's start-up noise (no TF on JAX)
    import keras

    if config.model_options.get("head") == "pooled":  # the small-data member: chosen out of fold
        return train_pooled(config)
    cfg = config.with_(**SMOKE) if config.smoke else config
    t0 = time.perf_counter()
    out = cfg.out_dir
    data = load_task_data(cfg.data_dir, cfg.task)
    if cfg.smoke:
        data = smoke_subset(data, seed=cfg.seed)
    out.mkdir(parents=True, exist_ok=True)  # only once the data are read and usable
    counts = np.bincount(data.y_train, minlength=data.n_classes).tolist()
    _log(f"task {data.task} {data.classes}: {len(data.y_train)} train patches {counts}, "
         f"{len(data.y_test)} held-out (public_test){' [smoke subset]' if cfg.smoke else ''}; "
         f"groups by {data.grouping}")
    placement = get_placement(cfg)
    _log(f"Keras backend {placement.backend}, --distribute {placement.kind}: {placement.replicas} replica(s)"
         + (f" on {', '.join(placement.devices)}" if placement.devices else " (CPU)")
         + (f"; MirroredStrategy over {placement.replicas} device(s)" if placement.kind == "mirrored" else ""))
    mixed = False
    if cfg.mixed_precision:
        if gpu_available():
            keras.mixed_precision.set_global_policy("mixed_float16")
            mixed = True
        else:
            _log("--mixed-precision ignored: no GPU")
    try:
        grid_rows = None
        if cfg.grid:
            cfg, grid_rows = run_grid(cfg, data, placement, out)
        fold_rows = None
        if cfg.folds:
            fold_rows = run_folds(cfg, data, placement)
            write_csv(out / "folds.csv", fold_rows, ["fold", *FOLD_COLUMNS, "n", "epochs"])
            _log(f"{cfg.folds}-fold holdout (grouped):\n" + format_fold_table(fold_rows))
        # final model: train (with a grouped validation split), held-out split evaluated once
        tr, va = validation_split(cfg, data.y_train, data.groups_train)
        _log(f"== final model: {len(tr)} train, {len(va)} validation patches")
        fit = fit_model(cfg, data.x_train[tr], data.y_train[tr], data.x_train[va], data.y_train[va],
                        data.n_classes, placement)
        model = fit.model
        if mixed or placement.kind == "data-parallel":
            # float32 twin with plain (unsharded) weights: bundles run on one CPU
            model = _float32_copy(cfg, model, data.n_classes)
    finally:
        if mixed:
            keras.mixed_precision.set_global_policy("float32")
    val_metrics, p_val = evaluate(model, data.x_train[va], data.y_train[va], data.classes, cfg.batch_size, n_boot=0)
    try:  # collapse guard: no bundle whose validation predictions are (near) constant / one class
        val_spread = check_not_collapsed(p_val, f"{cfg.bundle_name} validation predictions")
    except MammoError as err:
        if not (cfg.smoke or cfg.allow_collapsed):
            write_refused(cfg, data, fit.history, val_metrics, err, time.perf_counter() - t0)
        why = "smoke run" if cfg.smoke else "--allow-collapsed"
        _log(f"WARNING: {collapse_reason(err)}; bundle written anyway ({why}; the card records it)")
        val_spread = {"collapsed": str(err)}
    test_metrics, p_test = evaluate(model, data.x_test, data.y_test, data.classes, cfg.batch_size,
                                    n_boot=cfg.n_boot, seed=cfg.seed, groups=_test_groups(cfg, data))
    _log(f"held-out (public_test, n={test_metrics['n']}): accuracy {test_metrics['accuracy']:.4f}, "
         f"AUC {test_metrics['auc']:.4f}, F1 {test_metrics['f1_macro']:.4f}, ECE {test_metrics['ece']:.4f}")

    opts = dict(cfg.model_options)
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    mode = opts.get("mode")
    run = fit.run.as_dict() if fit.run is not None else {}
    protocol = {
        "optimizer": OPTIMIZER_CLASSES[cfg.optimizer], "learning_rate": run.get("learning_rate", cfg.learning_rate),
        "base_learning_rate": cfg.learning_rate, "lr_scaling": cfg.lr_scaling,
        "batch_size": cfg.batch_size, "global_batch_size": run.get("global_batch", cfg.batch_size),
        "max_epochs": cfg.epochs, "epochs_run": len(fit.history),
        "early_stopping": f"val_loss, patience {cfg.patience}, best weights restored",
        "class_weights": {data.classes[c]: w for c, w in fit.class_weights.items()},
        "class_weights_mode": cfg.class_weights, "output": output_protocol(opts),
        "augmentation": cfg.augmentation_spec.name,
        "augmentation_detail": cfg.augmentation_spec.description,
        "seed": cfg.seed, "reproducible": "same batches at any loader worker count (per-element seeds)",
        "smoke": cfg.smoke, "mixed_precision": mixed, "distribute": cfg.distribute,
        "backend": run.get("backend"), "replicas": run.get("replicas", 1),
        "loader_workers": run.get("workers"), "seconds": round(fit.seconds, 1),
        "preset": ({"task": cfg.preset, "settings": cfg.settings} if cfg.preset else None),
    }
    arch = {"model": cfg.model, "options": opts, "params": int(model.count_params()),
            "trainable_params": trainable}
    if cfg.is_transfer and Path(str(opts.get("weights", ""))).is_file():
        arch["initial_weights_sha256"] = sha256_file(opts["weights"])
    if cfg.is_transfer:
        n_aug = 0 if cfg.augmentation_spec.is_identity else cfg.fe_copies
        protocol["feature_cache"] = {"originals": True, "augmented_variants": n_aug,
                                     "size": f"{n_aug + 1}N"}
        if mode == "ft":
            protocol["fine_tuning"] = {"epochs": int(cfg.ft_epochs or cfg.epochs),
                                       "learning_rate": run.get("ft_learning_rate"),
                                       "unfreeze": cfg.ft_unfreeze,
                                       "trainable_layers": run.get("ft_trainable")}
    card = {
        "name": cfg.bundle_name,
        "task": data.task,
        "classes": list(data.classes),
        "architecture": arch,
        "training": {
            "data": data.provenance,
            "split": {"train": len(tr), "validation": len(va),
                      "validation_fraction": cfg.val_fraction,
                      "grouped_by": data.grouping, "held_out": "public_test", "seed": cfg.seed},
            "protocol": protocol,
            "validation_metrics": {k: val_metrics[k] for k in FOLD_COLUMNS},
            "validation_spread": val_spread,
            "folds": fold_rows, "grid": grid_rows,
            "command": cfg.command,
        },
        "metrics": {"split": "public_test", "measured": "once, after training",
                    **{k: test_metrics[k] for k in ("n", "accuracy", "auc", "auc_ci95", "auc_ci_method",
                                                    "auc_hard_labels", "f1_macro", "ece", "nll",
                                                    "confusion_matrix")},
                    **blind_fields(cfg.held_out_seen)},
        "gradcam_layer": gradcam_layer(cfg.model, **opts),
        "disclaimer": DISCLAIMER,
    }
    info = write_bundle(model, out, json_safe(card))
    files = [out / "model.keras", out / "card.json"]
    metrics_doc = {"task": data.task, "classes": list(data.classes), "public_test": test_metrics,
                   "validation": val_metrics, "folds": fold_rows, "grid": grid_rows,
                   "seconds_total": round(time.perf_counter() - t0, 1), "disclaimer": DISCLAIMER}
    write_json(out / "metrics.json", metrics_doc)
    write_csv(out / "history.csv", fit.history,
              ["epoch", "stage", "loss", "accuracy", "val_loss", "val_accuracy"])
    files += [out / "metrics.json", out / "history.csv"]
    title = f"{cfg.bundle_name} ({data.task})"
    files.append(plot_history(fit.history, out / "curves.png", title))
    files.append(plot_confusion(np.array(test_metrics["confusion_matrix"]), data.classes,
                                out / "confusion_matrix.png", title + " - public_test"))
    files.append(plot_roc(data.y_test, p_test, data.classes, out / "roc.png", title + " - public_test"))
    if fold_rows:
        files.append(out / "folds.csv")
    if grid_rows:
        files.append(out / "grid.csv")
    (out / REFUSED_MARK).unlink(missing_ok=True)  # an earlier refused run into this folder
    _log(f"wrote {out} ({', '.join(f.name for f in files)}) in {time.perf_counter() - t0:.0f} s")
    return TrainResult(out, info, test_metrics, fit.history, fold_rows, grid_rows, files)
