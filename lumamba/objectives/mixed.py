"""The three pre-training modes as one module whose forward returns the loss.

    reconstruction: L = L_rec + L_qs
    lejepa:         L = L_LeJEPA
    mixed:          L = L_rec + L_qs + lejepa_weight * L_LeJEPA      (the paper's headline)

Randomness (masks, crops, SIGReg directions) is drawn by `draw()` apart from `forward()`, so a
batch can be split across ranks with exactly the randomness of the single-process run, and a
resumed run draws exactly what the uninterrupted one did.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import nn

from .lejepa import lejepa_loss, sample_crop_starts
from .masking import expand_patch_mask, random_patch_mask
from .query_specialisation import query_specialisation_loss
from .reconstruction import masked_reconstruction_loss
from .sigreg import random_directions

MODES = ("mixed", "reconstruction", "lejepa")


@dataclass
class ObjectiveConfig:
    """Pre-training objective settings; defaults are the paper's."""

    mode: str = "mixed"
    mask_ratio: float = 0.6           # fraction of (channel, patch) cells hidden (public config: 0.5)
    visible_weight: float = 0.05      # weight of the SmoothL1 on visible cells
    smooth_l1_beta: float = 1.0
    qs_weight: float = 0.8            # query-specialisation coefficient
    n_global_views: int = 2
    global_patches: int = 16          # 2.5 s at 256 Hz
    n_local_views: int = 4
    local_patches: int = 4            # 0.625 s
    sigreg_directions: int = 128      # M (the paper's run used 300)
    sigreg_knots: int = 17
    sigreg_t_max: float = 5.0
    lejepa_lambda: float = 0.002
    lejepa_weight: float = 0.05       # weight of L_LeJEPA in mixed mode

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"objective.mode must be one of {MODES}, got {self.mode!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "mode" and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"objective.{f.name} must be a non-negative number, got {value!r}")
        if not self.mask_ratio <= 1:
            raise ValueError(f"objective.mask_ratio must be in [0, 1], got {self.mask_ratio}")

    @property
    def uses_reconstruction(self) -> bool:
        return self.mode in ("mixed", "reconstruction")

    @property
    def uses_lejepa(self) -> bool:
        return self.mode in ("mixed", "lejepa")


class PretrainDraw(NamedTuple):
    """The random choices of one step. Per-sample fields have the batch as dim 0 (mask) or 1
    (crop starts); `directions` is shared by the whole global batch."""

    patch_mask: torch.Tensor | None     # (B, C, S) bool
    global_starts: torch.Tensor | None  # (G, B)
    local_starts: torch.Tensor | None   # (L, B)
    directions: torch.Tensor | None     # (d_model, M)

    def shard(self, start: int, stop: int) -> "PretrainDraw":
        """The draw of samples start..stop-1 of the batch (what one rank sees)."""
        return PretrainDraw(
            None if self.patch_mask is None else self.patch_mask[start:stop],
            None if self.global_starts is None else self.global_starts[:, start:stop],
            None if self.local_starts is None else self.local_starts[:, start:stop],
            self.directions)


class PretrainObjective(nn.Module):
    """Wraps a pre-training LuMamba (n_classes=0); forward computes the configured loss, so the
    module can be wrapped in DistributedDataParallel as a whole."""

    def __init__(self, model: nn.Module, config: ObjectiveConfig | None = None):
        super().__init__()
        if getattr(model, "n_classes", 0):
            raise ValueError("pre-training needs LuMamba(config, n_classes=0)")
        self.model = model
        self.config = config or ObjectiveConfig()

    def draw(self, batch: int, channels: int, length: int, local: torch.Generator,
             shared: torch.Generator) -> PretrainDraw:
        """Masks and crops from `local` (per rank), SIGReg directions from `shared` (same on all ranks)."""
        c, P = self.config, self.model.config.patch_size
        mask = gstarts = lstarts = dirs = None
        if c.uses_reconstruction:
            mask = random_patch_mask(batch, channels, length // P, c.mask_ratio, local)
        if c.uses_lejepa:
            gstarts = sample_crop_starts(batch, length, c.global_patches * P, c.n_global_views, local)
            lstarts = sample_crop_starts(batch, length, c.local_patches * P, c.n_local_views, local)
            dirs = random_directions(self.model.config.d_model, c.sigreg_directions, shared)
        return PretrainDraw(mask, gstarts, lstarts, dirs)

    def forward(self, x: torch.Tensor, names, draw: PretrainDraw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the total loss and its detached parts (for logging)."""
        c, P = self.config, self.model.config.patch_size
        loss = x.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        if c.uses_reconstruction:
            patch_mask = draw.patch_mask.to(x.device)
            rec, attn = self.model.reconstruct(x, names, expand_patch_mask(patch_mask, P), return_attention=True)
            r = masked_reconstruction_loss(rec, x, patch_mask, visible_weight=c.visible_weight, beta=c.smooth_l1_beta)
            qs = query_specialisation_loss(attn, c.qs_weight)
            loss = loss + r.total + qs
            parts.update(rec=r.total, rec_masked=r.masked, rec_visible=r.visible, qs=qs)
        if c.uses_lejepa:
            j = lejepa_loss(self.model, x, names, draw.global_starts, draw.local_starts,
                            c.global_patches * P, c.local_patches * P, draw.directions,
                            lam=c.lejepa_lambda, knots=c.sigreg_knots, t_max=c.sigreg_t_max)
            loss = loss + (c.lejepa_weight if c.mode == "mixed" else 1.0) * j.total
            parts.update(lejepa=j.total, pred=j.prediction, sigreg=j.sigreg)
        return loss, {k: v.detach() for k, v in parts.items()}
