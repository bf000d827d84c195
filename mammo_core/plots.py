"""Training plots as PNG: accuracy/loss curves, confusion matrix, ROC, the ensemble's comparison
bars (matplotlib Agg, lazy).

Shared by training and the ensemble helper. Every figure carries the research-use notice and
is written atomically.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mammo_core import DISCLAIMER
from mammo_core.atomic import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.text(0.99, 0.005, DISCLAIMER, ha="right", va="bottom", fontsize=6, color="0.4")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _plt().close(fig)
    return path


def plot_history(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Accuracy and loss per epoch (train and validation), stages (fe / ft) marked."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ep = [r["epoch"] for r in history]
    for ax, key in zip(axes, ("accuracy", "loss")):
        for k, style in ((key, "-"), ("val_" + key, "--")):
            vals = [r.get(k, np.nan) for r in history]
            if np.isfinite(np.asarray(vals, dtype=float)).any():
                ax.plot(ep, vals, style, marker="." if len(ep) < 30 else None, label=k)
        stages = [r.get("stage") for r in history]
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                ax.axvline(ep[i] - 0.5, color="0.6", lw=0.8)
                ax.text(ep[i] - 0.5, ax.get_ylim()[1], f" {stages[i]}", va="top", fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Confusion matrix (rows = truth) with counts and row percentages."""
    plt = _plt()
    cm = np.asarray(cm)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.6 * n + 2.5, 1.4 * n + 2))
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.0%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(n), classes, rotation=30, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_roc(y: np.ndarray, p: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """ROC curve (binary: positive = class 1; more classes: one-vs-rest per class)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 5))
    targets = [1] if p.shape[1] == 2 else list(range(p.shape[1]))
    for c in targets:
        pos = y == c
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve(pos, p[:, c])
        a = roc_auc_score(pos, p[:, c])
        label = f"{classes[c]} (AUC {a:.3f})" if len(targets) > 1 else f"AUC {a:.3f} (positive: {classes[c]})"
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], ":", color="0.5")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


ENSEMBLE_AUC_COLUMNS = ("auc_abnormal_vs_baseline", "auc_mass_vs_calcification", "auc_benign_vs_malignant")


def ensemble_comparison(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Grouped bars of the three comparison AUCs, one bar per model (members and ensemble).

    ``rows`` are the ensemble fit's table rows (``model``, ``task`` and the AUC columns); an AUC
    that is None or not finite (not estimable for that model) is drawn as a missing bar.
    """
    plt = _plt()
    cols = ENSEMBLE_AUC_COLUMNS
    fig, ax = plt.subplots(figsize=(11, 4.5))
    w = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        vals = [r[c] if r[c] is not None and math.isfinite(r[c]) else 0.0 for c in cols]
        ax.bar(np.arange(3) + i * w, vals, w, label=f"{r['model']} ({r['task']})")
    ax.set_xticks(np.arange(3) + w * (len(rows) - 1) / 2,
                  ["abnormal vs baseline", "mass vs calcification", "benign vs malignant"])
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_ylabel("ROC AUC (public_test; missing bar = not estimated)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _save(fig, path, dpi=120)
