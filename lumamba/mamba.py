"""Mamba v1 (selective state-space) block in plain PyTorch, and its bidirectional wrapper.

Parameter names, shapes and initialisation follow `mamba_ssm.modules.mamba_simple.Mamba` (v1), so
published checkpoints load unchanged. Three ways to run the same maths:

- `selective_scan_sequential`: the obvious loop over time, the reference.
- `selective_scan_parallel`: the same recurrence as an odd-even parallel prefix scan
  (log2(L) levels, O(L) work), used for training and batch inference.
- `Mamba.step`: one token at a time with explicit state, the form exported to ONNX and C.

If `mamba_ssm` is installed and the input is on a GPU, `Mamba.forward` uses its fused CUDA kernel.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

try:  # optional fused CUDA kernel; never needed on CPU or for export
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
except (ImportError, OSError):
    selective_scan_fn = None

# scan modes of one Mamba block (the model adds "recurrent": token by token through step())
BLOCK_SCANS = ("parallel", "sequential")


class MambaState(NamedTuple):
    """Recurrent state of one Mamba module."""

    conv_state: Tensor  # (B, d_inner, d_conv): the last d_conv conv inputs, newest at the end
    ssm_state: Tensor  # (B, d_inner, d_state)


def _gate(y: Tensor, u: Tensor, D: Tensor, z: Tensor | None) -> Tensor:
    """Skip term and SiLU gate shared by both scans: (y + D u) * SiLU(z); tensors are (B, d, L)."""
    y = y + D.unsqueeze(-1) * u
    return y if z is None else y * F.silu(z)


def selective_scan_sequential(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
    z: Tensor | None = None, h0: Tensor | None = None, return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Reference selective scan, one token per loop iteration.

    h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = <h_t, C_t> + D u_t;  y *= SiLU(z).
    u, delta, z: (B, d, L); A: (d, N); B, C: (B, N, L); D: (d,); h0: (B, d, N) or None (zeros).
    delta is already softplus'ed. Returns y (B, d, L), and the final state (B, d, N) if asked.
    """
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1]) if h0 is None else h0
    ys = []
    for t in range(u.shape[-1]):
        d_t = delta[..., t].unsqueeze(-1)  # (B, d, 1)
        h = torch.exp(d_t * A) * h + (d_t * u[..., t].unsqueeze(-1)) * B[..., t].unsqueeze(1)
        ys.append((h * C[..., t].unsqueeze(1)).sum(-1))
    y = _gate(torch.stack(ys, dim=-1), u, D, z)
    return (y, h) if return_state else y


def _linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """All h_t of h_t = a_t h_{t-1} + b_t, h_{-1} = 0, along the last dim.

    Odd-even recursion: fold each pair (2k, 2k+1) into one step, scan the half-length sequence
    for the odd positions, then fill in the even ones. Only products and sums of a in [0, 1]
    appear, so large decays underflow to zero instead of overflowing.
    """
    L = a.shape[-1]
    if L == 1:
        return b
    if L % 2:  # pad with the identity step (a=1, b=0) so that positions pair up
        a, b = F.pad(a, (0, 1), value=1.0), F.pad(b, (0, 1))
    a_even, a_odd = a[..., 0::2], a[..., 1::2]
    b_even, b_odd = b[..., 0::2], b[..., 1::2]
    h_odd = _linear_scan(a_odd * a_even, a_odd * b_even + b_odd)
    h_even = a_even * F.pad(h_odd[..., :-1], (1, 0)) + b_even
    return torch.stack([h_even, h_odd], dim=-1).flatten(-2)[..., :L]


def selective_scan_parallel(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
    z: Tensor | None = None, h0: Tensor | None = None, return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as `selective_scan_sequential`, vectorised over time (log2(L) levels)."""
    decay = torch.exp(delta.unsqueeze(2) * A.unsqueeze(-1))  # (B, d, N, L), in [0, 1]
    drive = (delta * u).unsqueeze(2) * B.unsqueeze(1)  # (B, d, N, L)
    if h0 is not None:  # h_0 = decay_0 h0 + drive_0: fold the initial state into the first input
        drive = torch.cat([drive[..., :1] + decay[..., :1] * h0.unsqueeze(-1), drive[..., 1:]], -1)
    h = _linear_scan(decay, drive)
    y = _gate((h * C.unsqueeze(1)).sum(2), u, D, z)
    return (y, h[..., -1]) if return_state else y


class Mamba(nn.Module):
    """Mamba v1 mixer: in_proj -> causal depthwise conv -> SiLU -> selective scan -> gate -> out_proj."""

    def __init__(
        self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
        dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False,
    ):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)

        # mamba_ssm's init: small random dt_proj weights, and a bias whose softplus is a step
        # size drawn log-uniformly in [dt_min, dt_max] (so channels start at varied time scales)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

        # S4D-real init: A = -(1..N) for every channel, stored as log so A stays negative
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.A_log._no_weight_decay = True  # read by optimiser set-up, as in mamba_ssm
        self.D._no_weight_decay = True

        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _ssm_params(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """delta (softplus'ed), B, C from the conv output u (..., d_inner), each (..., features)."""
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def scan_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Everything the selective scan needs for x (B, L, d_model).

        Returns u, delta, A, B, C, z in the scan layout: u, delta, z (B, d_inner, L);
        A (d_inner, N); B, C (B, N, L).
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"Mamba expects x of shape (B, L, {self.d_model}), got {tuple(x.shape)}")
        L = x.shape[1]
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv1d(u.transpose(1, 2))[..., :L])  # causal: keep the first L outputs
        delta, B, C = self._ssm_params(u.transpose(1, 2))
        A = -torch.exp(self.A_log)
        return u, delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), z.transpose(1, 2)

    def forward(self, x: Tensor, scan: str = "parallel") -> Tensor:
        """x (B, L, d_model) -> (B, L, d_model); scan is "parallel" or "sequential"."""
        if scan not in BLOCK_SCANS:
            raise ValueError(f"scan must be one of {BLOCK_SCANS}, got {scan!r}")
        u, delta, A, B, C, z = self.scan_inputs(x)
        if scan == "parallel" and x.is_cuda and selective_scan_fn is not None:
            y = selective_scan_fn(u, delta, A.float(), B, C, self.D.float(), z=z)
        elif scan == "parallel":
            y = selective_scan_parallel(u, delta, A, B, C, self.D, z=z)
        else:
            y = selective_scan_sequential(u, delta, A, B, C, self.D, z=z)
        return self.out_proj(y.transpose(1, 2))

    def init_state(self, batch: int, dtype: torch.dtype | None = None,
                   device: torch.device | None = None) -> MambaState:
        """Zero state, by default in the parameters' dtype and device."""
        dtype = dtype or self.A_log.dtype
        device = device or self.A_log.device
        return MambaState(
            torch.zeros(batch, self.d_inner, self.d_conv, dtype=dtype, device=device),
            torch.zeros(batch, self.d_inner, self.d_state, dtype=dtype, device=device),
        )

    def step(self, x_t: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One token x_t (B, d_model) -> (output (B, d_model), new state); `state` is not modified."""
        u, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, d_inner) each
        conv_state = torch.cat([state.conv_state[..., 1:], u.unsqueeze(-1)], dim=-1)
        u = (conv_state * self.conv1d.weight.squeeze(1)).sum(-1)
        if self.conv1d.bias is not None:
            u = u + self.conv1d.bias
        u = F.silu(u)
        delta, B, C = self._ssm_params(u)
        # a length-1 scan from the carried state is exactly one recurrence step
        y, ssm_state = selective_scan_sequential(
            u.unsqueeze(-1), delta.unsqueeze(-1), -torch.exp(self.A_log), B.unsqueeze(-1),
            C.unsqueeze(-1), self.D, z=z.unsqueeze(-1), h0=state.ssm_state, return_state=True)
        return self.out_proj(y.squeeze(-1)), MambaState(conv_state, ssm_state)

    def forward_recurrent(self, x: Tensor) -> Tensor:
        """x (B, L, d_model) run token by token through `step` from a zero state."""
        state = self.init_state(x.shape[0], dtype=x.dtype, device=x.device)
        ys = []
        for t in range(x.shape[1]):
            y_t, state = self.step(x[:, t], state)
            ys.append(y_t)
        return torch.stack(ys, dim=1)


class BiMamba(nn.Module):
    """Two unshared Mamba modules, one reading the sequence forwards and one backwards, summed."""

    def __init__(self, d_model: int, **mamba_kwargs):
        super().__init__()
        self.mamba_fwd = Mamba(d_model, **mamba_kwargs)
        self.mamba_rev = Mamba(d_model, **mamba_kwargs)

    def forward(self, x: Tensor, scan: str = "parallel") -> Tensor:
        """x (B, L, d_model) -> (B, L, d_model)."""
        return self.mamba_fwd(x, scan) + self.mamba_rev(x.flip(1), scan).flip(1)

    def forward_recurrent(self, x: Tensor) -> Tensor:
        """Same result by stepping: mamba_fwd over t = 0..L-1, mamba_rev over t = L-1..0."""
        return self.mamba_fwd.forward_recurrent(x) + self.mamba_rev.forward_recurrent(x.flip(1)).flip(1)
