"""PNG figures: training/validation loss curves and the ROC curve. Matplotlib's Agg canvas is used
directly, so no display and no global backend switch are needed."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    FigureCanvasAgg(fig)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:                      # a full disk leaves no orphan temporary file
        tmp.unlink(missing_ok=True)
    return path


def plot_loss_curves(history: list[dict], path: str | os.PathLike) -> Path:
    """Train and validation loss per epoch (from the loop's history.json), and the loss parts."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax, parts = fig.subplots(1, 2)
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if any(h.get("val_loss") is not None for h in history):
        ax.plot(epochs, [h.get("val_loss") for h in history], "s-", label="validation")
    ax.set(xlabel="epoch", ylabel="loss", title="loss")
    ax.legend()
    names = sorted({k for h in history for k in h.get("train", {}) if k != "loss"})
    for name in names:
        parts.plot(epochs, [h["train"].get(name) for h in history], ".-", label=name)
    parts.set(xlabel="epoch", title="train loss parts")
    if names:
        parts.legend(fontsize="small")
    return _save(fig, path)


def plot_roc_curve(labels, scores, path: str | os.PathLike, title: str = "ROC") -> Path:
    """ROC curve of positive-class scores with its area in the legend."""
    from sklearn.metrics import roc_auc_score
    fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores))
    auc = roc_auc_score(np.asarray(labels), np.asarray(scores))
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"AUROC {auc:.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _save(fig, path)
