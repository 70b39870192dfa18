"""Masked-reconstruction loss: SmoothL1 on hidden cells plus a small weight on visible ones."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class ReconstructionLoss(NamedTuple):
    total: torch.Tensor    # masked + visible_weight * visible
    masked: torch.Tensor   # mean SmoothL1 over samples of hidden patches
    visible: torch.Tensor  # mean SmoothL1 over samples of visible patches


def _mean_where(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    # An empty selection (ratio 0 or 1) contributes zero but keeps the graph connected.
    count = where.sum()
    return (values * where).sum() / count.clamp(min=1)


def masked_reconstruction_loss(rec: torch.Tensor, target: torch.Tensor, patch_mask: torch.Tensor, *,
                               visible_weight: float = 0.05, beta: float = 1.0) -> ReconstructionLoss:
    """rec, target: (B, C, T); patch_mask: bool (B, C, S), True = hidden, T = S * patch_size.

    L = SmoothL1(hidden) + visible_weight * SmoothL1(visible), each the mean over the samples of
    its cells; computed in float32 whatever the autocast dtype of `rec`."""
    if rec.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(rec.shape)} and target {tuple(target.shape)} differ in shape")
    B, C, T = target.shape
    if patch_mask.shape[:2] != (B, C) or T % patch_mask.shape[-1] != 0:
        raise ValueError(f"patch_mask {tuple(patch_mask.shape)} does not tile a (B, C, T) = {(B, C, T)} window")
    hidden = patch_mask.repeat_interleave(T // patch_mask.shape[-1], dim=-1).to(rec.device)
    err = F.smooth_l1_loss(rec.float(), target.float(), reduction="none", beta=beta)
    masked, visible = _mean_where(err, hidden), _mean_where(err, ~hidden)
    return ReconstructionLoss(masked + visible_weight * visible, masked, visible)
