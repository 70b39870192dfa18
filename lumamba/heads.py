"""Classification heads on the (B, S, d_model) latent."""
from __future__ import annotations

import torch
from torch import nn

from .mamba import Mamba


class MambaHead(nn.Module):
    """The paper's head: Linear -> GELU -> Mamba -> mean over time -> Linear. No norm, no residual."""

    def __init__(self, d_model: int, hidden: int, n_classes: int, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.activation1 = nn.GELU()
        self.mamba_1 = Mamba(hidden, d_state=d_state, d_conv=d_conv, expand=expand)
        self.fc3 = nn.Linear(hidden, n_classes)

    def forward(self, z: torch.Tensor, scan: str = "parallel") -> torch.Tensor:
        h = self.activation1(self.fc1(z))
        h = self.mamba_1.forward_recurrent(h) if scan == "recurrent" else self.mamba_1(h, scan=scan)
        return self.fc3(h.mean(dim=1))


class LinearHead(nn.Module):
    """Mean over time, then one Linear (the published linear head also applied a GELU to the logits;
    we leave it out because a GELU on logits only clips negative scores)."""

    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, n_classes)

    def forward(self, z: torch.Tensor, scan: str = "parallel") -> torch.Tensor:
        return self.fc1(z.mean(dim=1))
