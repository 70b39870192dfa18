"""Score a classifier on a split: metrics JSON and ROC curve PNG side by side."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..metrics import classification_metrics, write_json
from ..plots import plot_roc_curve
from .predict import predict


def evaluate_split(model: torch.nn.Module, dataset: Dataset, out_dir: str | os.PathLike, name: str = "test", *,
                   batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = False,
                   extra: dict | None = None) -> dict:
    """Write `<name>_metrics.json` (and `<name>_roc.png` for a binary task with both classes present)."""
    out_dir = Path(out_dir)
    labels, probs = predict(model, dataset, batch_size, device, progress)
    metrics = {"split": name, **classification_metrics(labels, probs), **(extra or {})}
    write_json(metrics, out_dir / f"{name}_metrics.json")
    if probs.shape[1] == 2 and metrics["auroc"] is not None:
        plot_roc_curve(labels, probs[:, 1], out_dir / f"{name}_roc.png", title=f"ROC ({name})")
    return metrics
