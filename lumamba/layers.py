"""Small building blocks shared by several modules."""
from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """fc1 -> GELU -> [LayerNorm] -> fc2, with the published parameter names (timm's Mlp layout)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(d_hidden) if norm else nn.Identity()
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(self.norm(x)))
