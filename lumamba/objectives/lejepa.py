"""LeJEPA views and loss: global and local temporal crops, prediction loss and SIGReg."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from .sigreg import sigreg


class LeJEPALoss(NamedTuple):
    total: torch.Tensor       # (1 - lambda) * prediction + lambda * sigreg
    prediction: torch.Tensor  # mean over local views of ||mean(global) - local||^2 (averaged over dims)
    sigreg: torch.Tensor      # SIGReg of each local view's embeddings, averaged over views


def sample_crop_starts(batch: int, length: int, crop: int, n_views: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """(n_views, B) start samples of random crops of `crop` samples inside a window of `length`,
    independent per view and per sample (any sample offset, as the published code does)."""
    if crop > length:
        raise ValueError(f"a crop of {crop} samples does not fit a window of {length} samples; "
                         "lower global_patches/local_patches or use longer windows")
    return torch.randint(0, length - crop + 1, (n_views, batch), generator=generator)


def crop_views(x: torch.Tensor, starts: torch.Tensor, crop: int) -> torch.Tensor:
    """Cut crops: x (B, C, T), starts (V, B) -> views (V, B, C, crop)."""
    V, B = starts.shape
    idx = starts.to(x.device)[:, :, None, None] + torch.arange(crop, device=x.device)   # (V, B, 1, crop)
    return x.unsqueeze(0).expand(V, -1, -1, -1).gather(-1, idx.expand(V, B, x.shape[1], crop))


def _repeat_names(names, n_views: int, batch: int):
    # One montage for the batch stays one; per-sample lists are repeated view-major like the crops.
    if isinstance(names[0], str):
        return names
    return [names[b] for _ in range(n_views) for b in range(batch)]


def embed_views(model, views: torch.Tensor, names) -> torch.Tensor:
    """Encode (V, B, C, L) views without masking and mean-pool over time -> (V, B, d_model)."""
    V, B, C, L = views.shape
    z = model.encode(views.reshape(V * B, C, L), _repeat_names(names, V, B))
    return z.float().mean(dim=1).view(V, B, -1)


def lejepa_loss(model, x: torch.Tensor, names: Sequence, global_starts: torch.Tensor,
                local_starts: torch.Tensor, global_len: int, local_len: int, directions: torch.Tensor, *,
                lam: float = 0.002, knots: int = 17, t_max: float = 5.0, sync_ranks: bool = True) -> LeJEPALoss:
    """L_LeJEPA = (1 - lam) * L_pred + lam * SIGReg for a batch x (B, C, T) and its crop starts."""
    g = embed_views(model, crop_views(x, global_starts, global_len), names)   # (G, B, D)
    loc = embed_views(model, crop_views(x, local_starts, local_len), names)   # (L, B, D)
    prediction = (g.mean(dim=0) - loc).square().mean()
    reg = torch.stack([sigreg(v, directions, knots, t_max, sync_ranks) for v in loc]).mean()
    return LeJEPALoss((1 - lam) * prediction + lam * reg, prediction, reg)
