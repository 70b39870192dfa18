"""What the loop trains: a module whose forward(x, names, y, draw) returns (loss, parts), plus the
random draw of each step. Wrapping the whole loss in one module lets DDP see one forward per step,
however many encoder passes the objective makes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..objectives.mixed import ObjectiveConfig, PretrainDraw, PretrainObjective
from .rng import SHARED_DRAW, generator


class PretrainTask(nn.Module):
    """Self-supervised pre-training of a LuMamba with n_classes=0; labels are ignored."""

    def __init__(self, model: nn.Module, objective: ObjectiveConfig, seed: int = 0):
        super().__init__()
        self.objective = PretrainObjective(model, objective)
        self.seed = seed
        # Parameters a step may leave without gradient (DDP must be told).
        self.find_unused_parameters = objective.mode == "lejepa" or objective.mask_ratio == 0

    @property
    def model(self) -> nn.Module:
        return self.objective.model

    def draw(self, x: torch.Tensor, index: int, rank: int, purpose: int) -> PretrainDraw:
        """Masks and crops from a stream keyed by (seed, purpose, index, rank); SIGReg directions from
        one keyed without the rank, so every rank projects on the same directions."""
        B, C, T = x.shape
        return self.objective.draw(B, C, T, generator(self.seed, purpose, index, rank),
                                   generator(self.seed, SHARED_DRAW, purpose, index))

    def forward(self, x, names, y, draw: PretrainDraw):
        return self.objective(x, names, draw)


class FinetuneTask(nn.Module):
    """Supervised fine-tuning of a LuMamba classifier with cross-entropy."""

    find_unused_parameters = False

    def __init__(self, model: nn.Module):
        super().__init__()
        if not getattr(model, "n_classes", 0):
            raise ValueError("fine-tuning needs a classifier: LuMamba(config, n_classes=K) or load_pretrained(path, K)")
        self.model = model

    def draw(self, x, index, rank, purpose) -> None:
        return None

    def forward(self, x, names, y, draw=None):
        logits = self.model(x, names).float()
        loss = F.cross_entropy(logits, y)
        accuracy = (logits.argmax(-1) == y).float().mean()
        return loss, {"ce": loss.detach(), "acc": accuracy.detach()}
