"""Electrode-position features: 3-D positions -> per-sample min-max -> [jitter] -> NeRF sin/cos."""
from __future__ import annotations

import torch

from .positions import nerf_encode, normalise_positions


def position_features(pos: torch.Tensor, embed_dim: int, noise_std: float = 0.0) -> torch.Tensor:
    """(B, C, 3) metres -> (B, C, embed_dim) NeRF features, the input of the position MLP.

    noise_std > 0 adds N(0, noise_std) jitter to the normalised positions: a training augmentation
    only (the published code also applied it at test time, which made its evaluation random).
    """
    p = normalise_positions(pos)
    if noise_std > 0:
        p = p + torch.randn_like(p) * noise_std
    return nerf_encode(p, n_freqs=embed_dim // 6, dim=embed_dim)
