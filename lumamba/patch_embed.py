"""Front-end: each (channel, 40-sample patch) becomes an E-dim token, time path + frequency path."""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import Mlp


class TimePatchEmbed(nn.Module):
    """Three 1-D convolutions inside each patch (as Conv2d with 1xk kernels), GroupNorm, GELU.

    GroupNorm statistics span every patch and channel of a window (the conv input is one
    (C*S, P) image per window), exactly as in the published model: this part is not per-patch.
    """

    def __init__(self, embed_dim: int, patch_size: int):
        super().__init__()
        ch, k = embed_dim // 4, patch_size // 2
        self.patch_size = patch_size
        self.proj_in = nn.Sequential(
            nn.Conv2d(1, ch, kernel_size=(1, k - 1), stride=(1, k // 2), padding=(0, k // 2 - 1)),
            nn.GroupNorm(4, ch), nn.GELU(),
            nn.Conv2d(ch, ch, kernel_size=(1, 3), padding=(0, 1)),
            nn.GroupNorm(4, ch), nn.GELU(),
            nn.Conv2d(ch, ch, kernel_size=(1, 3), padding=(0, 1)),
            nn.GroupNorm(4, ch), nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, S, E), features flattened position-major (index = pos * ch + channel)."""
        B, C, T = x.shape
        S = T // self.patch_size
        h = self.proj_in(x.reshape(B, 1, C * S, self.patch_size))       # (B, ch, C*S, 4)
        return h.permute(0, 2, 3, 1).reshape(B, C, S, -1)


def dft_basis(n: int, dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-DFT matrices (n, n//2+1) so that x @ cos - i x @ sin == rfft(x).

    Built in float64 and rounded once to `dtype`; sin is exactly zero at the DC and Nyquist bins
    so the imaginary part there is exactly zero, as in torch.fft.rfft.
    """
    t = torch.arange(n, dtype=torch.float64)[:, None]
    f = torch.arange(n // 2 + 1, dtype=torch.float64)[None, :]
    ang = 2 * math.pi * ((t * f) % n) / n
    cos, sin = torch.cos(ang), torch.sin(ang)
    sin[:, 0] = 0.0
    if n % 2 == 0:
        sin[:, -1] = 0.0
    return cos.to(dtype=dtype, device=device), sin.to(dtype=dtype, device=device)


class FrequencyEmbed(nn.Module):
    """|rfft| and phase of each patch (21 + 21 features, no log), MLP 42 -> 168 -> E."""

    def __init__(self, embed_dim: int, patch_size: int):
        super().__init__()
        n_in = 2 * (patch_size // 2 + 1)
        self.patch_size = patch_size
        self.frequency_to_embed = Mlp(n_in, 4 * n_in, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, S, E)."""
        B, C, T = x.shape
        p = x.reshape(B, C, T // self.patch_size, self.patch_size)
        # The DFT is a fixed matmul (not torch.fft) so that ONNX, TVM and C compute the same thing.
        cos, sin = dft_basis(self.patch_size, x.dtype, x.device)
        re = p @ cos
        im = -(p @ sin)
        mag = torch.sqrt(re * re + im * im)
        phase = torch.atan2(im, re)
        # atan2 of a purely real bin is 0 or pi; taking it from the sign of the real part avoids the
        # -0.0 vs +0.0 ambiguity of a zero imaginary part (which flips pi to -pi between executors).
        real_bins = torch.zeros(re.shape[-1], dtype=torch.bool, device=x.device)
        real_bins[0] = True
        real_bins[-1] = self.patch_size % 2 == 0
        phase = torch.where(real_bins, (re < 0).to(re.dtype) * math.pi, phase)
        # A bin whose magnitude is at rounding level (e.g. in a flat or alternating patch) has no
        # meaningful phase: torch.fft returns exact zeros there (phase 0), a matmul DFT returns
        # rounding residues with arbitrary angles. Zero the phase below P * eps * sum|x|.
        floor = self.patch_size * torch.finfo(x.dtype).eps * p.abs().sum(-1, keepdim=True)
        phase = torch.where(mag <= floor, 0.0, phase)
        return self.frequency_to_embed(torch.cat([mag, phase], dim=-1))
