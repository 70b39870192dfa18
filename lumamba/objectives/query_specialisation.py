"""Query-specialisation loss: pushes the channel-unification queries to attend to different channels."""
from __future__ import annotations

import torch


def query_specialisation_loss(attn: torch.Tensor, weight: float = 0.8) -> torch.Tensor:
    """weight * mean((A A^T with its diagonal zeroed)^2) over all Q x Q entries.

    attn: head-averaged attention (..., Q, C), e.g. (B, S, Q, C) from `LuMamba.reconstruct`, seen as
    A of shape (B*S, Q, C). As in the published criterion the mean runs over all Q*Q entries, the
    zeroed diagonal included, so it equals (Q-1)/Q times the mean over off-diagonal entries alone."""
    Q, C = attn.shape[-2:]
    a = attn.reshape(-1, Q, C).float()
    similarity = a @ a.transpose(1, 2)
    off_diagonal = similarity * (1.0 - torch.eye(Q, device=a.device))
    return weight * off_diagonal.square().mean()
