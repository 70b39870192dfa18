"""Random masks over (channel, patch) cells for masked-reconstruction pre-training."""
from __future__ import annotations

import math

import torch


def masked_cell_count(channels: int, patches: int, ratio: float) -> int:
    """Cells hidden per sample: ratio * C * S rounded to the nearest integer (halves up)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {ratio}")
    return math.floor(ratio * channels * patches + 0.5)


def random_patch_mask(batch: int, channels: int, patches: int, ratio: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool (B, C, S), True = hidden. Every sample hides exactly `masked_cell_count` cells,
    chosen uniformly at random and independently per sample (on the CPU, from `generator`)."""
    k = masked_cell_count(channels, patches, ratio)
    order = torch.rand(batch, channels * patches, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, channels * patches, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask.view(batch, channels, patches)


def expand_patch_mask(patch_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, S) patch mask -> (B, C, S * patch_size) sample mask, the form `LuMamba.reconstruct` takes."""
    return patch_mask.repeat_interleave(patch_size, dim=-1)
