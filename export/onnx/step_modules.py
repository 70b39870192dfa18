"""The small torch modules that define each exported ONNX graph (recurrent mode, batch 1).

Each module computes one stage of the schedule in `manifest.py` from the weights of a `LuMamba`,
in the form the exporter turns into a clean graph: 2-D activations (so every Linear becomes a
Gemm on its own named weight), input-independent work precomputed here (electrode-position
embedding, the cross-attention queries, A = -exp(A_log)) and no Python control flow.

    Frontend     window (1, C, T)                       -> tokens (S, C, E)   (GroupNorm: `blocked_group_norm`)
    Unify        tokens of one patch (1, C, E)          -> latent (1, Q*E)
    EncoderStep  x_t, acc (1, d), conv/ssm state        -> acc + Mamba(LN(x_t)), state'
    HeadStep     z_t (1, d), acc (1, H), conv/ssm state -> acc + Mamba(GELU(fc1(z_t))), state'
    MambaHeadOut acc (1, H)                             -> logits = fc3(acc / S)
    LinearHeadOut z (S, d)                              -> logits = fc1(mean_t z)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lumamba.channel_unification import ChannelUnification
from lumamba.heads import LinearHead, MambaHead
from lumamba.mamba import Mamba
from lumamba.model import LuMamba


class Frontend(nn.Module):
    """Patch tokens of a whole window plus the montage's (constant) electrode-position embedding.

    The whole window at once because the time path's GroupNorms take their statistics over every
    patch and channel of the window.
    """

    def __init__(self, model: LuMamba, position_embedding: Tensor):
        super().__init__()
        self.patch_embed = model.patch_embed
        self.freq_embed = model.freq_embed
        self.register_buffer("position_embedding", position_embedding.detach().clone())  # (C, E)

    def forward(self, window: Tensor) -> Tensor:
        tokens = self._time_path(window) + self.freq_embed(window)       # (1, C, S, E)
        return (tokens[0] + self.position_embedding[:, None, :]).transpose(0, 1)

    def _time_path(self, x: Tensor) -> Tensor:
        """`TimePatchEmbed.forward` with each GroupNorm as `blocked_group_norm` (same function)."""
        B, C, T = x.shape
        P = self.patch_embed.patch_size
        S = T // P
        h = x.reshape(B, 1, C * S, P)
        for layer in self.patch_embed.proj_in:
            h = blocked_group_norm(layer, h, C, S) if isinstance(layer, nn.GroupNorm) else layer(h)
        return h.permute(0, 2, 3, 1).reshape(B, C, S, -1)


def blocked_group_norm(norm: nn.GroupNorm, x: Tensor, n_channels: int, n_patches: int) -> Tensor:
    """`norm(x)` for the time path's (1, ch, C*S, W) activations, two-pass, each statistic a mean of
    means along one axis at a time (W, then S, then C, then the channels of a group).

    Why not ONNX InstanceNormalization: its statistics are one float32 sum over a whole group
    (2 * C * S * W = 5632 values for 22 channels x 5 s), which onnxruntime and TVM's legalised form
    (one pass, E[x^2] - E[x]^2) each accumulate differently. On a flat window every value of a
    group is one of two conv biases, so the rounding errors of a long sum all have the same sign and
    grow with its length: the tokens were off by 2.6e-5 (onnxruntime) and 2.5e-4 (TVM's C) where
    PyTorch float32 is off by 2e-6, and the model amplified that to 2.5e-3 / 1.4e-3 on the logits.
    Sums of at most max(W, S, C) terms, and x - mean before squaring, keep the error near
    PyTorch's on any window, and every back end runs the same ReduceMean / Sub / Mul / Div ops.
    Mathematically this is GroupNorm: equal-size blocks make the mean of means the mean.
    """
    _, ch, H, W = x.shape
    G = norm.num_groups
    if H != n_channels * n_patches or ch % G:
        raise ValueError(f"blocked_group_norm: activations {tuple(x.shape)} are not (1, ch, C*S, W) "
                         f"with C={n_channels}, S={n_patches} and {G} groups")
    g = x.reshape(G, ch // G, n_channels, n_patches, W)
    mean = _mean_of_means(g)
    d = g - mean
    y = (d / torch.sqrt(_mean_of_means(d * d) + norm.eps)).reshape(x.shape)
    if norm.affine:
        y = y * norm.weight[:, None, None] + norm.bias[:, None, None]
    return y


def _mean_of_means(g: Tensor) -> Tensor:
    """Mean over every axis but the first, one axis at a time, last first (keepdim)."""
    for dim in range(g.ndim - 1, 0, -1):
        g = g.mean(dim=dim, keepdim=True)
    return g


def attention(q: Tensor, k: Tensor, v: Tensor, n_heads: int) -> Tensor:
    """Softmax attention of pre-scaled queries q (L, E) over keys/values (N, E), heads split along E."""
    L, E = q.shape
    d = E // n_heads
    q = q.reshape(L, n_heads, d).transpose(0, 1)                     # (h, L, d)
    k = k.reshape(-1, n_heads, d).permute(1, 2, 0)                   # (h, d, N)
    v = v.reshape(-1, n_heads, d).transpose(0, 1)                    # (h, N, d)
    return (torch.softmax(q @ k, dim=-1) @ v).transpose(0, 1).reshape(L, E)


def _query_scale(mha: nn.MultiheadAttention) -> float:
    return math.sqrt(1.0 / (mha.embed_dim // mha.num_heads))         # the value torch's MHA uses


def _in_proj(mha: nn.MultiheadAttention, which: int) -> nn.Linear:
    """The q (0), k (1) or v (2) part of a packed MHA input projection, as its own Linear."""
    E = mha.embed_dim
    lin = nn.Linear(E, E, dtype=mha.in_proj_weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(mha.in_proj_weight[which * E:(which + 1) * E])
        lin.bias.copy_(mha.in_proj_bias[which * E:(which + 1) * E])
    return lin


class Unify(nn.Module):
    """ChannelUnification of one patch in eval mode: (1, C, E) -> (1, Q*E).

    The queries do not depend on the input, so their LayerNorm, projection and scaling are done
    here once; the packed in-projections become separate Linears so each weight is one initializer.
    """

    def __init__(self, cu: ChannelUnification):
        super().__init__()
        mha = cu.cross_attention
        self.n_heads = mha.num_heads
        with torch.no_grad():
            queries = _in_proj(mha, 0)(cu.queries_norm(cu.query_embed)[0]) * _query_scale(mha)
        self.register_buffer("queries", queries)                         # (Q, E)
        self.keys_norm, self.values_norm = cu.keys_norm, cu.values_norm
        self.k_proj, self.v_proj, self.out_proj = _in_proj(mha, 1), _in_proj(mha, 2), mha.out_proj
        self.ffn = cu.ffn
        self.layers = cu.query_self_attn.layers                          # pre-norm TransformerEncoderLayers

    def forward(self, tokens_t: Tensor) -> Tensor:
        x = tokens_t[0]                                                  # (C, E)
        a = self.out_proj(attention(self.queries, self.k_proj(self.keys_norm(x)),
                                    self.v_proj(self.values_norm(x)), self.n_heads))
        a = self.ffn(a) + a
        for layer in self.layers:
            a = self._self_attention_layer(layer, a)
        return a.reshape(1, -1)

    @staticmethod
    def _self_attention_layer(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
        """nn.TransformerEncoderLayer(norm_first=True) in eval mode on (Q, E)."""
        mha = layer.self_attn
        q, k, v = F.linear(layer.norm1(x), mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        x = x + mha.out_proj(attention(q * _query_scale(mha), k, v, mha.num_heads))
        return x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))


class MambaStep(nn.Module):
    """`Mamba.step` for one (1, d_model) token with the constants precomputed.

    Initializers: in_proj/x_proj/dt_proj/out_proj weights as in the checkpoint, conv_weight
    (d_inner, d_conv), conv_bias, A = -exp(A_log) (d_inner, d_state) and D.
    """

    def __init__(self, mamba: Mamba):
        super().__init__()
        if mamba.conv1d.bias is None:
            raise ValueError("export needs the Mamba conv1d bias (conv_bias=True, as in every LuMamba config)")
        self.in_proj, self.x_proj, self.dt_proj, self.out_proj = mamba.in_proj, mamba.x_proj, mamba.dt_proj, mamba.out_proj
        self.splits = (mamba.dt_rank, mamba.d_state, mamba.d_state)
        with torch.no_grad():
            self.register_buffer("conv_weight", mamba.conv1d.weight[:, 0, :].clone())
            self.register_buffer("conv_bias", mamba.conv1d.bias.clone())
            self.register_buffer("A", -torch.exp(mamba.A_log))
            self.register_buffer("D", mamba.D.clone())

    def forward(self, x: Tensor, conv_state: Tensor, ssm_state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        u, z = self.in_proj(x).chunk(2, dim=-1)                          # (1, d_inner) each
        conv_state = torch.cat([conv_state[..., 1:], u.unsqueeze(-1)], dim=-1)
        u = F.silu((conv_state * self.conv_weight).sum(-1) + self.conv_bias)
        dt, B, C = self.x_proj(u).split(self.splits, dim=-1)
        delta = F.softplus(self.dt_proj(dt)).unsqueeze(-1)               # (1, d_inner, 1)
        ssm_state = torch.exp(delta * self.A) * ssm_state + (delta * u.unsqueeze(-1)) * B.unsqueeze(1)
        y = (ssm_state * C.unsqueeze(1)).sum(-1) + self.D * u
        return self.out_proj(y * F.silu(z)), conv_state, ssm_state


class EncoderStep(nn.Module):
    """One token of one direction of a pre-norm BiMamba block: acc_out = acc_in + Mamba(LN(x_t))."""

    def __init__(self, norm: nn.LayerNorm, mamba: Mamba):
        super().__init__()
        self.norm = norm
        self.mamba = MambaStep(mamba)

    def forward(self, x_t: Tensor, acc_in: Tensor, conv_state: Tensor, ssm_state: Tensor):
        y, conv_state, ssm_state = self.mamba(self.norm(x_t), conv_state, ssm_state)
        return acc_in + y, conv_state, ssm_state


class HeadStep(nn.Module):
    """One token of the Mamba head: acc_out = acc_in + Mamba(GELU(fc1(z_t))) (a running sum for the mean)."""

    def __init__(self, head: MambaHead):
        super().__init__()
        self.fc1, self.activation1 = head.fc1, head.activation1
        self.mamba = MambaStep(head.mamba_1)

    def forward(self, z_t: Tensor, acc_in: Tensor, conv_state: Tensor, ssm_state: Tensor):
        y, conv_state, ssm_state = self.mamba(self.activation1(self.fc1(z_t)), conv_state, ssm_state)
        return acc_in + y, conv_state, ssm_state


class MambaHeadOut(nn.Module):
    """logits = fc3(acc / S): the mean over the S tokens, then the classifier."""

    def __init__(self, head: MambaHead, n_patches: int):
        super().__init__()
        self.fc3 = head.fc3
        self.n_patches = n_patches

    def forward(self, acc: Tensor) -> Tensor:
        return self.fc3(acc / self.n_patches)


class LinearHeadOut(nn.Module):
    """logits = fc1(mean over the S tokens of the encoder output z (S, d_model))."""

    def __init__(self, head: LinearHead):
        super().__init__()
        self.fc1 = head.fc1

    def forward(self, z: Tensor) -> Tensor:
        return self.fc1(z.mean(dim=0, keepdim=True))
