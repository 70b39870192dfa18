"""AdamW parameter groups (weight decay, layer-wise lr decay) and the warm-up + cosine schedule."""
from __future__ import annotations

import math

import torch
from torch import nn


def decays(name: str, param: nn.Parameter) -> bool:
    """Weight decay applies to matrices and kernels only: not to biases, norm weights or other 1-D
    parameters, nor to parameters flagged `_no_weight_decay` (Mamba's A_log and D)."""
    return param.ndim > 1 and not getattr(param, "_no_weight_decay", False)


def layer_id(name: str, n_blocks: int) -> int:
    """Depth of a LuMamba parameter for layer-wise lr decay: 0 for everything before the Mamba
    stack (front-end, channel unification), i + 1 for Mamba block i and its pre-norm, n_blocks + 1
    for the heads (classifier, decoder)."""
    for prefix in ("mamba_blocks.", "norm_layers."):
        if name.startswith(prefix):
            return int(name[len(prefix):].split(".")[0]) + 1
    if name.startswith(("classifier.", "decoder_head.", "channel_emb.")):
        return n_blocks + 1
    return 0


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups keyed by (depth, decays); each carries `lr_scale` = layer_decay ** (depth from the top).
    Frozen parameters are left out."""
    n_blocks = len(getattr(model, "mamba_blocks", ()))
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth, wd = layer_id(name, n_blocks), decays(name, p)
        group = groups.setdefault((depth, wd), {
            "params": [], "names": [], "weight_decay": weight_decay if wd else 0.0,
            "lr_scale": layer_decay ** (n_blocks + 1 - depth)})
        group["params"].append(p)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, layer_decay: float = 1.0,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over `param_groups`; the per-step lr is set by `set_lr`."""
    groups = param_groups(model, weight_decay, layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Linear warm-up from lr/warmup_steps to lr over `warmup_steps`, then cosine down to min_lr at
    `total_steps`. `step` counts optimiser steps from 0."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply a base lr to every group, scaled by its layer-wise factor."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
