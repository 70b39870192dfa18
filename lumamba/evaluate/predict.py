"""Run a classifier over a dataset and collect labels and class probabilities."""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..train.data import collate


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Dataset, batch_size: int = 64, device: str | torch.device = "cpu",
            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and softmax probabilities (N, K) of `model` (eval mode, fp32) on every window."""
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=partial(collate, channel_names=getattr(dataset, "channel_names", None)))
    labels, probs = [], []
    for x, y, names in tqdm(loader, disable=not progress, unit="batch", desc="predict"):
        probs.append(torch.softmax(model(x.to(device), names).float(), dim=-1).cpu())
        labels.append(y)
    return torch.cat(labels).numpy(), torch.cat(probs).numpy()
