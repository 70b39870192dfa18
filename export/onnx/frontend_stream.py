"""The streamed front end: the window's patch tokens computed one patch at a time, never held whole.

The time path's three GroupNorms take their statistics over every patch and channel of the window
(`TimePatchEmbed`), so the whole-window `Frontend` graph holds the window's activations at once.
Streamed, the same function is four passes over the patches of the window (each patch read from
the input window, C rows x P samples at column t*P):

    GroupNormStats k (k = 1..3)  patch t, the statistics of GroupNorms 1..k-1
                                 -> (mean, variance) of each group over patch t alone (row t of an (S, G, 2) buffer)
    CombineStats                 (S, G, 2) -> (1, G, 2) (mean, sqrt(var + eps)) of each group over the window
    FrontendPatch                patch t, the three statistics -> time path + frequency path + electrode
                                 position, then the channel unification: row t of z0

Combining equal-size blocks is exact GroupNorm arithmetic: the window's mean is the mean of the
patch means, its (biased) variance the mean of the patch variances plus the variance of the patch
means. Every sum is short (at most max(W, C, ch/G, S) terms) and every variance a mean of squared
deviations from a mean, never E[x^2] - E[x]^2: see `step_modules.blocked_group_norm` for why long
one-pass sums are not good enough on flat windows.

The passes above evaluate conv 1 four times per patch, conv 2 three times and conv 3 twice
(`deployed_macs`), and keep nothing but the statistics between passes: the least RAM. The
"stored" form (`plan_stored_frontend`, export option front_end="stored") evaluates each conv once
per patch and keeps its output for the whole window in a buffer h_k (S, ch, C, W) that the next
pass reads:

    StoredConv 1        patch t                     -> h1[t] = conv1(patch), its statistics row t
    CombineStats        gn1_rows -> gn1
    StoredConv k (2, 3) h_{k-1}[t], gn_{k-1}         -> h_k[t] = conv_k(GELU(GN_{k-1}(h_{k-1}[t]))), statistics
    CombineStats        gn_k_rows -> gn_k
    StoredFrontendPatch patch t, h3[t], gn3         -> GELU(GN3(h3[t])) + frequency path + position, unified: z0[t]

Each conv once, each GroupNorm-apply + GELU once, per patch; the statistics are taken from the very
values stored, so every pass sees what the next one reads. The cost is RAM: two of the h_k are
alive at once. In an int8 export each h_k holds conv k's int8 output codes (the quantiser makes the
buffers int8 at the qconv's output scale, `quant/buffer_storage.py`): 2 x S*C*E bytes, 45 KB for
the demo model; in a float export float32, four times that. The streamed passes stay the default
(least RAM); "stored" is the faster choice where that RAM is there (README "Memory").
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from lumamba.model import LuMamba

from .step_modules import Unify, _mean_of_means


class StagePlan(Protocol):
    """What the front end needs of the exporter's `_Plan` (named here, not imported: the exporter
    imports this module)."""

    def buffer(self, name: str, shape: tuple[int, ...], kind: str = "activation") -> None: ...

    def stage(self, name: str, module: nn.Module, sources: tuple[str, ...], loop: str,
              inputs: dict[str, str], outputs: dict[str, str], zero: tuple[str, ...] = (),
              kind: str | None = None) -> None: ...


def _time_layers(model: LuMamba) -> list[nn.Module]:
    return list(model.patch_embed.proj_in)


def _group_norms(model: LuMamba) -> list[nn.GroupNorm]:
    return [m for m in _time_layers(model) if isinstance(m, nn.GroupNorm)]


def _normalise(norm: nn.GroupNorm, h: Tensor, stats: Tensor) -> Tensor:
    """GroupNorm of one patch's (1, ch, C, W) activations with the window's statistics (1, G, 2)
    = (mean, sqrt(var + eps)) per group."""
    _, ch, C, W = h.shape
    G = norm.num_groups
    g = h.reshape(G, ch // G, C, W)
    mean, std = stats[0, :, 0].reshape(G, 1, 1, 1), stats[0, :, 1].reshape(G, 1, 1, 1)
    y = ((g - mean) / std).reshape(h.shape)
    if norm.affine:
        y = y * norm.weight[:, None, None] + norm.bias[:, None, None]
    return y


def _time_path(layers: list[nn.Module], patch: Tensor, stats: tuple[Tensor, ...]) -> Tensor:
    """The time path's layers on one patch (1, C, P) -> (1, ch, C, W); the k-th GroupNorm uses
    stats[k]. Stops after the last layer given."""
    _, C, P = patch.shape
    h = patch.reshape(1, 1, C, P)
    k = 0
    for layer in layers:
        if isinstance(layer, nn.GroupNorm):
            h = _normalise(layer, h, stats[k])
            k += 1
        else:
            h = layer(h)
    return h


def _norm_positions(model: LuMamba, k: int, who: str) -> tuple[list[nn.Module], list[int]]:
    """The time path's layers and the indices of its GroupNorms, after checking that GroupNorm k exists."""
    layers = _time_layers(model)
    norms = [i for i, m in enumerate(layers) if isinstance(m, nn.GroupNorm)]
    if not 1 <= k <= len(norms):
        raise ValueError(f"{who}: k must be in 1..{len(norms)}, got {k}")
    return layers, norms


class GroupNormStats(nn.Module):
    """Pass k of the streamed front end: patch (1, C, P) and the window statistics of GroupNorms
    1..k-1 -> (1, G, 2) per-group (mean, biased variance) of the input of GroupNorm k over this patch,
    each a mean of means (W, then C, then the group's channels) and two-pass."""

    def __init__(self, model: LuMamba, k: int):
        super().__init__()
        layers, norms = _norm_positions(model, k, "GroupNormStats")
        self.proj_in = nn.ModuleList(layers[:norms[k - 1]])   # up to and including the k-th conv
        self.groups = layers[norms[k - 1]].num_groups

    def forward(self, patch: Tensor, *stats: Tensor) -> Tensor:
        return _patch_stats(_time_path(list(self.proj_in), patch, stats), self.groups)


def _patch_stats(h: Tensor, groups: int) -> Tensor:
    """(1, G, 2) per-group (mean, biased variance) of one patch's (1, ch, C, W) activations, each a
    mean of means (W, then C, then the group's channels) and two-pass."""
    _, ch, C, W = h.shape
    g = h.reshape(groups, ch // groups, C, W)
    mean = _mean_of_means(g)
    d = g - mean
    var = _mean_of_means(d * d)
    return torch.cat([mean.reshape(1, -1, 1), var.reshape(1, -1, 1)], dim=-1)


class StoredConv(nn.Module):
    """Pass k of the stored front end: conv k of one patch, once. k = 1: patch (1, C, P) -> conv 1;
    k > 1: h_{k-1} (1, ch, C, W) and the window statistics of GroupNorm k-1 -> conv k of
    GELU(GroupNorm k-1). Returns (h_k, (1, G, 2) statistics of h_k over this patch)."""

    def __init__(self, model: LuMamba, k: int):
        super().__init__()
        layers, norms = _norm_positions(model, k, "StoredConv")
        # up to and including conv k: the layers keep their indices (proj_in.<i>), so the weights
        # keep the names of the other forms (the int8 precision rules name them)
        self.proj_in = nn.ModuleList(layers[:norms[k - 1]])
        self.first = 0 if k == 1 else norms[k - 2]     # GroupNorm k-1 (k > 1)
        self.k, self.groups = k, layers[norms[k - 1]].num_groups

    def forward(self, x: Tensor, *stats: Tensor) -> tuple[Tensor, Tensor]:
        layers = list(self.proj_in)
        if self.k == 1:
            _, C, P = x.shape
            h = layers[0](x.reshape(1, 1, C, P))
        else:
            h = _normalise(layers[self.first], x, stats[0])
            for layer in layers[self.first + 1:]:
                h = layer(h)
        return h, _patch_stats(h, self.groups)


class CombineStats(nn.Module):
    """(S, G, 2) per-patch (mean, variance) -> (1, G, 2) window (mean, sqrt(var + eps)): equal-size
    blocks, so mean = mean of the means, var = mean of the variances + variance of the means."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = float(eps)

    def forward(self, rows: Tensor) -> Tensor:
        means, variances = rows[:, :, 0], rows[:, :, 1]                  # (S, G)
        mean = means.mean(dim=0, keepdim=True)
        d = means - mean
        var = variances.mean(dim=0, keepdim=True) + (d * d).mean(dim=0, keepdim=True)
        return torch.stack([mean, torch.sqrt(var + self.eps)], dim=-1)     # (1, G, 2)


class FrontendPatch(Unify):
    """One patch (1, C, P) and the three GroupNorm statistics -> its latent (1, Q*E): the tokens of
    `Frontend` for this patch (time + frequency + electrode position), then `Unify`. The unification's
    weights keep `Unify`'s names; the front end's are `patch_embed.*` and `freq_embed.*`."""

    def __init__(self, model: LuMamba, position_embedding: Tensor):
        super().__init__(model.cross_attn)
        self.patch_embed = model.patch_embed
        self.freq_embed = model.freq_embed
        self.register_buffer("position_embedding", position_embedding.detach().clone())  # (C, E)

    def forward(self, patch: Tensor, gn1: Tensor, gn2: Tensor, gn3: Tensor) -> Tensor:
        return self._unify(patch, _time_path(list(self.patch_embed.proj_in), patch, (gn1, gn2, gn3)))

    def _unify(self, patch: Tensor, h: Tensor) -> Tensor:
        """The time path's output h (1, ch, C, W) of `patch` -> the patch's latent."""
        C = h.shape[2]
        time = h.permute(0, 2, 3, 1).reshape(C, -1)                              # (C, E), pos-major
        tokens = time + self.freq_embed(patch)[0, :, 0, :]
        return super().forward((tokens + self.position_embedding)[None])


def plan_streamed_frontend(plan: StagePlan, model: LuMamba, position_embedding: Tensor, n_samples: int) -> None:
    """Add the streamed front end's buffers and stages to an exporter `_Plan` whose input buffer is
    "window": writes z0 (S, d_model)."""
    c = model.config
    S, d = n_samples // c.patch_size, c.d_model
    norms = _group_norms(model)
    plan.buffer("z0", (S, d))
    finals = {}
    for k, norm in enumerate(norms, start=1):
        rows, final = f"gn{k}_rows", f"gn{k}"
        plan.buffer(rows, (S, norm.num_groups, 2))
        plan.buffer(final, (1, norm.num_groups, 2))
        plan.stage(f"frontend_stats{k}", GroupNormStats(model, k), ("patch_embed",), "forward",
                   {"patch": "window[patch t]", **finals}, {"rows_t": f"{rows}[t]"}, kind=f"frontend_stats{k}")
        plan.stage(f"frontend_gn{k}", CombineStats(norm.eps), (), "once", {"rows": rows}, {"stats": final},
                   kind="frontend_combine")
        finals[f"gn{k}"] = final
    plan.stage("frontend", FrontendPatch(model, position_embedding),
               ("patch_embed", "freq_embed", "channel_location_embedder", "cross_attn"), "forward",
               {"patch": "window[patch t]", **finals}, {"latent_t": "z0[t]"}, kind="frontend_patch")


class StoredFrontendPatch(FrontendPatch):
    """The last pass of the stored front end: patch (1, C, P), conv 3's output h3 (1, ch, C, W) and
    the statistics of GroupNorm 3 -> the patch's latent, as `FrontendPatch` without the convs."""

    def forward(self, patch: Tensor, h3: Tensor, gn3: Tensor) -> Tensor:
        layers = list(self.patch_embed.proj_in)
        last = [i for i, m in enumerate(layers) if isinstance(m, nn.GroupNorm)][-1]
        h = _normalise(layers[last], h3, gn3)
        for layer in layers[last + 1:]:
            h = layer(h)
        return self._unify(patch, h)


def plan_stored_frontend(plan: StagePlan, model: LuMamba, position_embedding: Tensor, n_samples: int) -> None:
    """The stored front end (module doc) into an exporter `_Plan` whose input buffer is "window":
    buffers h1..h3 (S, ch, C, W) of the conv outputs, writes z0 (S, d_model)."""
    c = model.config
    S, d = n_samples // c.patch_size, c.d_model
    C = position_embedding.shape[0]
    norms = _group_norms(model)
    plan.buffer("z0", (S, d))
    source: dict[str, str] = {"x": "window[patch t]"}
    for k, norm in enumerate(norms, start=1):
        h, rows, final = f"h{k}", f"gn{k}_rows", f"gn{k}"
        ch = norm.num_channels
        plan.buffer(h, (S, ch, C, c.embed_dim // ch))
        plan.buffer(rows, (S, norm.num_groups, 2))
        plan.buffer(final, (1, norm.num_groups, 2))
        plan.stage(f"frontend_conv{k}", StoredConv(model, k), ("patch_embed",), "forward",
                   source, {"h_t": f"{h}[t]", "rows_t": f"{rows}[t]"}, kind=f"frontend_conv{k}")
        plan.stage(f"frontend_gn{k}", CombineStats(norm.eps), (), "once", {"rows": rows}, {"stats": final},
                   kind="frontend_combine")
        source = {"x": f"{h}[t]", f"gn{k}": final}
    plan.stage("frontend", StoredFrontendPatch(model, position_embedding),
               ("patch_embed", "freq_embed", "channel_location_embedder", "cross_attn"), "forward",
               {"patch": "window[patch t]", "h3": f"h{len(norms)}[t]", "gn3": f"gn{len(norms)}"},
               {"latent_t": "z0[t]"}, kind="frontend_stored")
