"""The window form of a Mamba: the projections over all S tokens at once, only the scan per token.

In a Mamba only the state update h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t is recurrent;
in_proj, the depthwise conv over tokens, x_proj, dt_proj and out_proj see the whole window, so
they run as matrix-matrix products (weight reuse over S tokens in the int8 GEMM micro-kernels)
instead of once per token as in `step_modules.MambaStep`. Three graphs per Mamba:

    EncoderPre / HeadPre    x (S, d)       -> u, delta, gate (S, d_inner), B, C (S, d_state)
    MambaScan               one row of each, h (1, d_inner, d_state) -> y_t (1, d_inner), h'
    EncoderPost             y, gate, residual (S, d) -> residual + out_proj(y * gate)
    HeadPost                y, gate -> logits = fc3(mean_t out_proj(y * gate))

The conv is written with ops the int8 pipeline runs as float (Slice, Mul, Add, Concat; no grouped
Conv, which the int8 pipeline does not run, and no zero padding stored in flash). A reverse
direction is not flipped: its conv is anti-causal (the zeros after the tokens) and its scan runs
t = S-1..0, which is Mamba on the flipped sequence, flipped back.
The taps are summed in the step form's order (tap 0 first), so both forms do the same float ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lumamba.heads import MambaHead
from lumamba.mamba import Mamba


class MambaWindowPre(nn.Module):
    """in_proj -> depthwise conv over the S tokens -> SiLU -> x_proj -> dt_proj -> softplus.

    `causal`: tap k of token t reads token t - (d_conv-1) + k (the forward direction); else
    token t + (d_conv-1) - k (the reverse direction in original order). Initializers: the
    projections' weights, conv_bias and one conv_tap<k> (d_inner,) per tap k of the conv weight
    (separate tensors, not slices of one: a slice would be folded into a computed constant, and
    then the exporter could not reuse one block's graph for the next).
    """

    def __init__(self, mamba: Mamba, causal: bool):
        super().__init__()
        if mamba.conv1d.bias is None:
            raise ValueError("export needs the Mamba conv1d bias (conv_bias=True, as in every LuMamba config)")
        self.in_proj, self.x_proj, self.dt_proj = mamba.in_proj, mamba.x_proj, mamba.dt_proj
        self.causal, self.d_conv = causal, mamba.d_conv
        self.splits = (mamba.dt_rank, mamba.d_state, mamba.d_state)
        with torch.no_grad():
            for k in range(mamba.d_conv):
                self.register_buffer(f"conv_tap{k}", mamba.conv1d.weight[:, 0, k].clone())
            self.register_buffer("conv_bias", mamba.conv1d.bias.clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        u, z = self.in_proj(x).chunk(2, dim=-1)                          # (S, d_inner) each
        u = F.silu(self._conv(u) + self.conv_bias)
        dt, B, C = self.x_proj(u).split(self.splits, dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        return u, delta, B, C, F.silu(z)

    def _conv(self, u: Tensor) -> Tensor:
        """The depthwise conv over tokens without its bias, zero-padded at the start (causal) or
        the end, but with no zeros stored or multiplied: tap k, shifted by K-1-k tokens, only
        touches the rows it reaches, and the rows it reaches first are joined on (Concat). Each
        row sums its taps in the step form's order (tap 0 first), where the padded taps add 0."""
        S, K = u.shape[0], self.d_conv
        acc, reached = None, 0                  # acc holds the `reached` rows nearest the far end
        for k in range(K):
            shift = K - 1 - k
            if shift >= S:                      # this tap reads only padding
                continue
            tap = (u[:S - shift] if self.causal else u[shift:]) * getattr(self, f"conv_tap{k}")   # S - shift rows
            new = S - shift - reached           # rows this tap reaches first
            if acc is None:
                acc = tap
            elif self.causal:                   # rows [shift, S): the new ones come first
                acc = torch.cat([tap[:new], acc + tap[new:]], dim=0)
            else:                               # rows [0, S - shift): the new ones come last
                acc = torch.cat([acc + tap[:reached], tap[reached:]], dim=0)
            reached = S - shift
        return acc


class MambaScan(nn.Module):
    """One token of the selective scan: h' = exp(delta A) h + delta u B; y = <h', C> + D u.
    Initializers: A = -exp(A_log) (d_inner, d_state) and D."""

    def __init__(self, mamba: Mamba):
        super().__init__()
        with torch.no_grad():
            self.register_buffer("A", -torch.exp(mamba.A_log))
            self.register_buffer("D", mamba.D.clone())

    def forward(self, u_t: Tensor, delta_t: Tensor, B_t: Tensor, C_t: Tensor, ssm_state: Tensor):
        delta = delta_t.unsqueeze(-1)                                    # (1, d_inner, 1)
        ssm_state = torch.exp(delta * self.A) * ssm_state + (delta * u_t.unsqueeze(-1)) * B_t.unsqueeze(1)
        y = (ssm_state * C_t.unsqueeze(1)).sum(-1) + self.D * u_t
        return y, ssm_state


class EncoderPre(nn.Module):
    """The window part before the scan of one direction of a pre-norm BiMamba block: LN, then `MambaWindowPre`."""

    def __init__(self, norm: nn.LayerNorm, mamba: Mamba, causal: bool):
        super().__init__()
        self.norm = norm
        self.mamba = MambaWindowPre(mamba, causal)

    def forward(self, x: Tensor):
        return self.mamba(self.norm(x))


class HeadPre(nn.Module):
    """The Mamba head's window part before the scan: GELU(fc1(z)), then `MambaWindowPre` (causal)."""

    def __init__(self, head: MambaHead):
        super().__init__()
        self.fc1, self.activation1 = head.fc1, head.activation1
        self.mamba = MambaWindowPre(head.mamba_1, causal=True)

    def forward(self, z: Tensor):
        return self.mamba(self.activation1(self.fc1(z)))


class ScanStep(nn.Module):
    """`MambaScan` under the name `mamba`, so its constants are named like the step form's."""

    def __init__(self, mamba: Mamba):
        super().__init__()
        self.mamba = MambaScan(mamba)

    def forward(self, u_t: Tensor, delta_t: Tensor, B_t: Tensor, C_t: Tensor, ssm_state: Tensor):
        return self.mamba(u_t, delta_t, B_t, C_t, ssm_state)


class _OutProj(nn.Module):
    def __init__(self, mamba: Mamba):
        super().__init__()
        self.out_proj = mamba.out_proj


class EncoderPost(nn.Module):
    """residual_out = residual + out_proj(y * gate) over the S tokens."""

    def __init__(self, mamba: Mamba):
        super().__init__()
        self.mamba = _OutProj(mamba)

    def forward(self, y: Tensor, gate: Tensor, residual: Tensor) -> Tensor:
        return residual + self.mamba.out_proj(y * gate)


class HeadPost(nn.Module):
    """logits = fc3(mean over the S tokens of out_proj(y * gate)): the head's Mamba output, its
    mean over time and the classifier (`MambaHead.forward`'s order)."""

    def __init__(self, head: MambaHead):
        super().__init__()
        self.mamba = _OutProj(head.mamba_1)
        self.fc3 = head.fc3

    def forward(self, y: Tensor, gate: Tensor) -> Tensor:
        return self.fc3(self.mamba.out_proj(y * gate).mean(dim=0, keepdim=True))
