"""Analytic compute cost of one window.

What is counted: multiply-accumulates of every Linear, convolution, attention product
(Q.K^T and A.V), the patch DFT (as a real matmul), and the selective scan, whose recurrence is
counted as 3 MACs per state element per token (decay h*exp(dA), input (delta*x)*B, readout C.h).
Not counted: normalisations, activations, softmax, exp/softplus, biases and residual adds.
The position MLP runs once per window (it depends on the montage only).
"""
from __future__ import annotations

from .config import LuMambaConfig


def mamba_macs_per_token(d_model: int, d_state: int, d_conv: int, expand: int, dt_rank: int) -> int:
    """MACs of one Mamba v1 step."""
    di = expand * d_model
    return (d_model * 2 * di            # in_proj
            + di * d_conv               # depthwise causal conv
            + di * (dt_rank + 2 * d_state)  # x_proj
            + dt_rank * di              # dt_proj
            + 3 * di * d_state          # scan: decay, input, readout
            + di * d_model)             # out_proj


def _attention(n_q: int, n_kv: int, e: int) -> int:
    """nn.MultiheadAttention: Q, K, V and output projections plus the two attention products."""
    return n_q * e * e + 2 * n_kv * e * e + 2 * n_q * n_kv * e + n_q * e * e


def macs(config: LuMambaConfig, n_channels: int, n_samples: int, n_classes: int = 2) -> dict[str, int]:
    """MACs per window by part, plus 'total'. About 205 M for `tiny` at 22 x 1280 with the Mamba head."""
    c, C = config, n_channels
    if n_samples % c.patch_size:
        raise ValueError(f"n_samples={n_samples} must be a multiple of the patch size {c.patch_size}")
    S, P, E, Q = n_samples // c.patch_size, c.patch_size, c.embed_dim, c.num_queries
    ch, k = E // 4, P // 2 - 1
    width = 4
    ff = int(c.mlp_ratio * E)
    n_freq = c.n_freq_bins
    parts = {
        "time_patch_embed": C * S * width * (ch * k + 2 * ch * ch * 3),
        "freq_embed": C * S * (P * n_freq * 2 + 2 * n_freq * 4 * 2 * n_freq + 4 * 2 * n_freq * E),
        "position_embed": C * (E * 2 * E + 2 * E * E),
        "channel_unification": S * (_attention(Q, C, E) + Q * 2 * E * ff
                                    + c.n_query_layers * (_attention(Q, Q, E) + Q * 2 * E * ff)),
        "mamba_blocks": S * 2 * c.n_blocks * mamba_macs_per_token(c.d_model, c.d_state, c.d_conv, c.expand, c.dt_rank),
    }
    if c.head == "mamba":
        parts["head"] = S * (c.d_model * c.head_hidden + mamba_macs_per_token(
            c.head_hidden, c.d_state, c.d_conv, c.head_expand, c.head_dt_rank)) + c.head_hidden * n_classes
    else:
        parts["head"] = c.d_model * n_classes
    parts["total"] = sum(parts.values())
    return parts


def deployed_macs(config: LuMambaConfig, n_channels: int, n_samples: int, n_classes: int = 2,
                  front_end: str = "streamed") -> int:
    """MACs per window of an exported model: `macs` without the position embedding, which the
    export folds into a constant for the montage (it does not run per window). The streamed front
    end (the export's default) computes the time path's convolutions again in its GroupNorm
    statistics passes: conv 1 three more times, conv 2 twice more, conv 3 once more; the stored
    front end ("stored") and the whole-window one ("window") evaluate each conv once."""
    if front_end not in ("streamed", "stored", "window"):
        raise ValueError(f"front_end must be 'streamed', 'stored' or 'window', got {front_end!r}")
    parts = macs(config, n_channels, n_samples, n_classes)
    total = parts["total"] - parts["position_embed"]
    if front_end == "streamed":
        ch, k = config.embed_dim // 4, config.patch_size // 2 - 1
        total += n_channels * (n_samples // config.patch_size) * 4 * 3 * (ch * k + 3 * ch * ch)
    return total
