"""The published LuMamba forward pass, restated as plain functions over a state dict.

Used only by tests, to prove that `lumamba.model.LuMamba` computes what the published code
computes. Written from a reading of pulp-bio/BioFoundation (models/LuMamba.py, the LUNA model it
inherits from, models/FEMBA.py, models/modules/frequency_embedder.py), timm's `Mlp`, torch's
pre-norm Transformer layers and mamba_ssm's Mamba v1 (`Mamba.forward` slow path and
`selective_scan_ref`). Nothing here uses our modules: every layer is written out with
torch.nn.functional, in the published data layout, from the published parameter names. The only
import from lumamba is `electrode_positions` (the raw 3-D electrode positions, tested elsewhere).

Two places where the published code is knowingly not reproduced by default:
- position noise: the published `prepare_tokens` adds N(0, 0.02) to the normalised positions
  whenever a mask tensor is passed (also at test time). That is random, so it is left out.
- batch repeat: the published code tiles the per-sample position embedding (and, in the decoder,
  the channel-name embedding) with `.repeat(S, 1, 1)`, which gives token row b*S + t the embedding of
  sample (b*S + t) mod B. `batch_repeat_bug=True` reproduces that; the default gives every row its
  own sample's embedding, which is what the published code computes whenever all samples of a
  batch share a montage.

Precision: everything runs in the dtype of `x` (the published `selective_scan_ref` upcasts to
float32; in float32 that is the same computation, in float64 it lets a test see rounding errors).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lumamba.positions import electrode_positions

StateDict = Mapping[str, Tensor]
LN_EPS = 1e-5   # torch's LayerNorm / GroupNorm / Transformer-layer default, used by every published norm


# ---- generic layers --------------------------------------------------------------------------

def linear(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """nn.Linear `prefix` (bias optional, as in mamba_ssm's bias-free projections)."""
    return F.linear(x, sd[prefix + ".weight"], sd.get(prefix + ".bias"))


def layer_norm(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], LN_EPS)


def timm_mlp(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """timm.layers.Mlp: fc1 -> GELU -> [norm, when the checkpoint has one] -> fc2 (dropout off)."""
    h = F.gelu(linear(sd, prefix + ".fc1", x))
    if prefix + ".norm.weight" in sd:
        h = layer_norm(sd, prefix + ".norm", h)
    return linear(sd, prefix + ".fc2", h)


def attention(sd: StateDict, prefix: str, query: Tensor, key: Tensor, value: Tensor,
              num_heads: int) -> tuple[Tensor, Tensor]:
    """nn.MultiheadAttention(batch_first=True) in eval mode, written out.

    query (N, Lq, E), key/value (N, Lk, E). Returns the output (N, Lq, E) and the attention
    weights averaged over heads (N, Lq, Lk), the default `need_weights` result.
    """
    E = query.shape[-1]
    wq, wk, wv = sd[prefix + ".in_proj_weight"].chunk(3)
    bq, bk, bv = sd[prefix + ".in_proj_bias"].chunk(3)

    def heads(t: Tensor) -> Tensor:   # (N, L, E) -> (N, H, L, E/H)
        return t.unflatten(-1, (num_heads, E // num_heads)).transpose(1, 2)

    q = heads(F.linear(query, wq, bq)) / math.sqrt(E // num_heads)
    k, v = heads(F.linear(key, wk, bk)), heads(F.linear(value, wv, bv))
    weights = torch.softmax(q @ k.transpose(-1, -2), dim=-1)       # (N, H, Lq, Lk)
    out = (weights @ v).transpose(1, 2).flatten(-2)                 # (N, Lq, E)
    return linear(sd, prefix + ".out_proj", out), weights.mean(dim=1)


def encoder_layer_prenorm(sd: StateDict, prefix: str, x: Tensor, num_heads: int) -> Tensor:
    """nn.TransformerEncoderLayer(norm_first=True, activation='gelu'), eval mode."""
    h = layer_norm(sd, prefix + ".norm1", x)
    x = x + attention(sd, prefix + ".self_attn", h, h, h, num_heads)[0]
    h = layer_norm(sd, prefix + ".norm2", x)
    return x + linear(sd, prefix + ".linear2", F.gelu(linear(sd, prefix + ".linear1", h)))


def decoder_layer_prenorm(sd: StateDict, prefix: str, x: Tensor, memory: Tensor, num_heads: int) -> Tensor:
    """nn.TransformerDecoderLayer(norm_first=True, activation='gelu'), no masks: self-attention,
    cross-attention to the (un-normalised) memory, feed-forward."""
    h = layer_norm(sd, prefix + ".norm1", x)
    x = x + attention(sd, prefix + ".self_attn", h, h, h, num_heads)[0]
    h = layer_norm(sd, prefix + ".norm2", x)
    x = x + attention(sd, prefix + ".multihead_attn", h, memory, memory, num_heads)[0]
    h = layer_norm(sd, prefix + ".norm3", x)
    return x + linear(sd, prefix + ".linear2", F.gelu(linear(sd, prefix + ".linear1", h)))


def _count_layers(sd: StateDict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


# ---- LUNA front-end ----------------------------------------------------------------------------

def time_tokens(sd: StateDict, x: Tensor, patch_size: int) -> Tensor:
    """PatchEmbedNetwork: (B, C, T) -> (B, C*S, E), rows channel-major (row = c*S + s).

    The whole window is one (C*S, P) image with one input channel, so GroupNorm statistics span
    all patches and channels of a sample. Output features are position-major ('B E CS D -> B CS (D E)').
    """
    B, C, T = x.shape
    h = x.reshape(B, 1, C * (T // patch_size), patch_size)
    k = patch_size // 2
    p = "patch_embed.proj_in."
    h = F.conv2d(h, sd[p + "0.weight"], sd[p + "0.bias"], stride=(1, k // 2), padding=(0, k // 2 - 1))
    h = F.gelu(F.group_norm(h, 4, sd[p + "1.weight"], sd[p + "1.bias"], LN_EPS))
    for conv, norm in ((3, 4), (6, 7)):
        h = F.conv2d(h, sd[f"{p}{conv}.weight"], sd[f"{p}{conv}.bias"], padding=(0, 1))
        h = F.gelu(F.group_norm(h, 4, sd[f"{p}{norm}.weight"], sd[f"{p}{norm}.bias"], LN_EPS))
    # h: (B, E/4, C*S, 4) -> (B, C*S, 4 * E/4), feature index = position * (E/4) + conv channel
    return h.permute(0, 2, 3, 1).flatten(2)


def frequency_tokens(sd: StateDict, x: Tensor, patch_size: int) -> Tensor:
    """FrequencyFeatureEmbedder: |rfft| and angle(rfft) of each patch -> Mlp -> (B, C*S, E)."""
    B, C, T = x.shape
    spec = torch.fft.rfft(x.reshape(B, C, T // patch_size, patch_size), dim=-1)
    features = torch.cat([spec.abs(), spec.angle()], dim=-1)
    return timm_mlp(sd, "freq_embed.frequency_to_embed", features).flatten(1, 2)


def nerf_positional_encoding(coords: Tensor, embed_size: int) -> Tensor:
    """LUNA's encoding: (N, C, 3) -> (N, C, embed_size).

    embed_size // 6 frequencies 2^k (no pi); features ordered (frequency, axis, sin/cos);
    zero-padded to embed_size.
    """
    N, C, dim = coords.shape
    n_freqs = embed_size // (2 * dim)
    bands = 2.0 ** torch.arange(n_freqs, dtype=coords.dtype, device=coords.device)
    scaled = coords[..., None] * bands                                  # (N, C, axis, freq)
    enc = torch.stack([scaled.sin(), scaled.cos()], dim=-1)              # (N, C, axis, freq, 2)
    enc = enc.permute(0, 1, 3, 2, 4).reshape(N, C, n_freqs * dim * 2)
    return F.pad(enc, (0, embed_size - enc.shape[-1]))


def position_embedding(sd: StateDict, names: Sequence[Sequence[str]], dtype: torch.dtype) -> Tensor:
    """(B, C, E): per-sample min-max positions -> NeRF features -> channel_location_embedder."""
    pos = torch.as_tensor(np.stack([electrode_positions(n) for n in names]), dtype=dtype)
    low = pos.min(dim=1, keepdim=True).values
    high = pos.max(dim=1, keepdim=True).values
    pos = (pos - low) / (high - low + 1e-8)
    E = sd["mask_token"].shape[-1]
    return timm_mlp(sd, "channel_location_embedder.0", nerf_positional_encoding(pos, E))


def per_token_rows(per_sample: Tensor, n_patches: int, batch_repeat_bug: bool) -> Tensor:
    """(B, C, E) -> (B*S, C, E) aligned with token rows b*S + s.

    The published `.repeat(S, 1, 1)` gives row r the embedding of sample r mod B instead.
    """
    if batch_repeat_bug:
        return per_sample.repeat(n_patches, 1, 1)
    return per_sample.repeat_interleave(n_patches, dim=0)


def prepare_tokens(sd: StateDict, x: Tensor, names: Sequence[Sequence[str]], patch_size: int,
                   mask: Tensor | None = None, batch_repeat_bug: bool = False) -> tuple[Tensor, Tensor]:
    """LUNA.prepare_tokens without the position noise: tokens (B*S, C, E) and the position
    embedding rows (B*S, C, E). mask (B, C, T): a patch is masked when any of its samples is."""
    B, C, T = x.shape
    S = T // patch_size
    tokens = time_tokens(sd, x, patch_size) + frequency_tokens(sd, x, patch_size)   # (B, C*S, E)
    if mask is not None:
        hidden = mask.reshape(B, C * S, patch_size).sum(dim=-1) > 0
        tokens = torch.where(hidden[..., None], sd["mask_token"].to(tokens.dtype), tokens)
    pos_rows = per_token_rows(position_embedding(sd, names, x.dtype), S, batch_repeat_bug)
    tokens = tokens.reshape(B, C, S, -1).transpose(1, 2).flatten(0, 1)   # 'B (C t) D -> (B t) C D'
    return tokens + pos_rows, pos_rows


def channel_unification(sd: StateDict, tokens: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    """CrossAttentionBlock: (N, C, E) -> latents (N, Q, E), head-averaged attention (N, Q, C)."""
    p = "cross_attn."
    queries = layer_norm(sd, p + "queries_norm", sd[p + "query_embed"]).expand(tokens.shape[0], -1, -1)
    a, weights = attention(sd, p + "cross_attention", queries, layer_norm(sd, p + "keys_norm", tokens),
                           layer_norm(sd, p + "values_norm", tokens), num_heads)
    a = timm_mlp(sd, p + "ffn", a) + a
    layers = p + "query_self_attn.layers."
    for i in range(_count_layers(sd, layers)):
        a = encoder_layer_prenorm(sd, f"{layers}{i}", a, num_heads)
    return a, weights


# ---- Mamba v1 (mamba_ssm) ------------------------------------------------------------------------

def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                       z: Tensor) -> Tensor:
    """mamba_ssm's reference scan (delta already softplus'ed), one time step per loop iteration.

    u, delta, z: (B, d, L); A: (d, N); B, C: (B, N, L); D: (d,). Returns (B, d, L).
    """
    delta_A = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_B_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for i in range(u.shape[-1]):
        state = delta_A[:, :, i] * state + delta_B_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, i]))
    y = torch.stack(ys, dim=-1) + u * D[:, None]
    return y * F.silu(z)


def mamba(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """mamba_ssm.Mamba.forward (v1, the non-fused path): (B, L, d_model) -> (B, L, d_model)."""
    L = x.shape[1]
    w_conv = sd[prefix + ".conv1d.weight"]                       # (d_inner, 1, d_conv)
    d_inner, d_conv = w_conv.shape[0], w_conv.shape[-1]
    dt_rank = sd[prefix + ".dt_proj.weight"].shape[1]
    d_state = sd[prefix + ".A_log"].shape[1]
    u, z = linear(sd, prefix + ".in_proj", x).transpose(1, 2).chunk(2, dim=1)   # (B, d_inner, L) each
    u = F.silu(F.conv1d(u, w_conv, sd[prefix + ".conv1d.bias"], padding=d_conv - 1, groups=d_inner)[..., :L])
    dt, B, C = linear(sd, prefix + ".x_proj", u.transpose(1, 2)).split([dt_rank, d_state, d_state], dim=-1)
    delta = F.softplus((dt @ sd[prefix + ".dt_proj.weight"].T).transpose(1, 2)
                       + sd[prefix + ".dt_proj.bias"][:, None])
    A = -torch.exp(sd[prefix + ".A_log"])
    y = selective_scan_ref(u, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd[prefix + ".D"], z)
    return linear(sd, prefix + ".out_proj", y.transpose(1, 2))


def bidirectional_mamba(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """FEMBA MambaWrapper, strategy 'add'."""
    return mamba(sd, prefix + ".mamba_fwd", x) + mamba(sd, prefix + ".mamba_rev", x.flip(1)).flip(1)


# ---- whole model -------------------------------------------------------------------------------

def _per_sample(names: Sequence[str] | Sequence[Sequence[str]], batch: int) -> list[list[str]]:
    return [list(names)] * batch if isinstance(names[0], str) else [list(n) for n in names]


def encode(sd: StateDict, x: Tensor, names, *, num_heads: int, patch_size: int = 40,
           mask: Tensor | None = None, batch_repeat_bug: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """LuMamba.encode / the shared trunk of LuMamba.forward.

    Returns latents (B, S, Q*E), head-averaged channel attention (B*S, Q, C) and the position
    embedding rows (B*S, C, E) that the decoder reuses.
    """
    B = x.shape[0]
    tokens, pos_rows = prepare_tokens(sd, x, _per_sample(names, B), patch_size, mask, batch_repeat_bug)
    latents, weights = channel_unification(sd, tokens, num_heads)
    z = latents.reshape(B, -1, latents.shape[1] * latents.shape[2])    # '(B t) Q D -> B t (Q D)'
    for i in range(_count_layers(sd, "mamba_blocks.")):
        z = z + bidirectional_mamba(sd, f"mamba_blocks.{i}", layer_norm(sd, f"norm_layers.{i}", z))
    return z, weights, pos_rows


def classify(sd: StateDict, x: Tensor, names, *, num_heads: int, patch_size: int = 40,
             batch_repeat_bug: bool = False) -> Tensor:
    """Logits (B, n_classes) of the fine-tuning model with FEMBA's MambaClassifier ('bc')."""
    z = encode(sd, x, names, num_heads=num_heads, patch_size=patch_size, batch_repeat_bug=batch_repeat_bug)[0]
    h = mamba(sd, "classifier.mamba_1", F.gelu(linear(sd, "classifier.fc1", z)))
    return linear(sd, "classifier.fc3", h.mean(dim=1))


def reconstruct(sd: StateDict, x: Tensor, names, channel_index: Tensor, mask: Tensor, *, num_heads: int,
                patch_size: int = 40, batch_repeat_bug: bool = False) -> Tensor:
    """Pre-training forward: masked window -> reconstruction (B, C, T).

    channel_index (B, C): rows of the decoder's channel-name embedding, as the published code
    receives them. Decoder queries = position embedding + channel-name embedding, per token row.
    """
    B, C, T = x.shape
    z, _, pos_rows = encode(sd, x, names, num_heads=num_heads, patch_size=patch_size, mask=mask,
                            batch_repeat_bug=batch_repeat_bug)
    S, Q = z.shape[1], sd["cross_attn.query_embed"].shape[1]
    name_emb = F.embedding(channel_index, sd["channel_emb.embeddings.weight"])       # (B, C, E)
    queries = pos_rows + per_token_rows(name_emb, S, batch_repeat_bug)
    memory = z.reshape(B * S, Q, -1)                                                 # 'B t (Q D) -> (B t) Q D'
    out = decoder_layer_prenorm(sd, "decoder_head.decoder_pred.layers.0", queries, memory, num_heads)
    out = timm_mlp(sd, "decoder_head.decoder_linear", layer_norm(sd, "decoder_head.norm", out))  # (B*S, C, P)
    return out.reshape(B, S, C, patch_size).permute(0, 2, 1, 3).reshape(B, C, T)     # '(B t) C P -> B C (t P)'
