"""Electrode positions and their NeRF-style encoding, as fed to the electrode-position MLP.

Positions come from MNE's standard 10-05 montage in MNE's *head* frame, exactly as the
published code obtains them: set the montage on an Info, then read it back. set_montage moves
the montage from its native (MRI) frame into the head frame defined by its fiducials (nasion,
LPA, RPA): about 3 degrees of rotation and a few cm of translation. The raw
montage.get_positions() coordinates are in the native frame and would give the model
different normalised positions than it was trained on.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from lumamba.channels import ELECTRODE_ALIASES, ChannelError, parse_channel, standard_1005_montage

__all__ = ["electrode_positions", "normalise_positions", "nerf_encode"]


@lru_cache(maxsize=None)
def _electrode_position(electrode: str) -> tuple[float, float, float]:
    """Head-frame position (metres) of one upper-case 10-05 electrode name or alias."""
    import mne

    montage_name = ELECTRODE_ALIASES.get(electrode, electrode)
    info = mne.create_info([montage_name], sfreq=256.0, ch_types="eeg", verbose=False)
    # The head transform depends only on the montage's fiducials, not on which channels are
    # in the Info, so one electrode per Info gives the same numbers as the published code.
    info.set_montage(standard_1005_montage(), match_case=False, verbose=False)
    x, y, z = info.get_montage().get_positions()["ch_pos"][montage_name]
    return float(x), float(y), float(z)


def electrode_positions(names: Sequence[str]) -> np.ndarray:
    """(C, 3) float64 positions in metres, MNE head frame; a bipolar channel "A-B" sits midway.

    Accepts any 10-05 electrode (case-insensitive; T3/T4/T5/T6 are the old names of
    T7/T8/P7/P8). Raises ChannelError naming the first channel that cannot be placed.
    """
    if isinstance(names, str):
        raise ChannelError(f"expected a sequence of channel names, got the single string {names!r}")
    if len(names) == 0:
        raise ChannelError("no channels given; expected at least one channel name")
    rows = []
    for name in names:
        first, second = parse_channel(name)
        position = np.array(_electrode_position(first))
        if second is not None:
            position = (position + np.array(_electrode_position(second))) / 2.0
        rows.append(position)
    return np.stack(rows).astype(np.float64)


def normalise_positions(pos: torch.Tensor) -> torch.Tensor:
    """Min-max scale each axis to [0, 1] across the channels of each sample: (..., C, 3) -> same.

    (p - min) / (max - min + 1e-8); the epsilon keeps a degenerate axis (one channel, or all
    channels on a plane) finite, mapping it to 0.
    """
    if pos.ndim < 2 or pos.shape[-1] != 3:
        raise ValueError(f"positions must have shape (..., C, 3), got {tuple(pos.shape)}")
    low = pos.amin(dim=-2, keepdim=True)
    high = pos.amax(dim=-2, keepdim=True)
    return (pos - low) / (high - low + 1e-8)


def nerf_encode(pos: torch.Tensor, n_freqs: int = 10, dim: int = 64) -> torch.Tensor:
    """NeRF-style Fourier features of positions: (..., C, 3) -> (..., C, dim).

    Frequencies 2^k for k = 0..n_freqs-1 (no pi factor, as published). Feature index
    k*6 + axis*2 + (0 for sin, 1 for cos); the 6*n_freqs features are zero-padded to dim.
    """
    if pos.ndim < 2 or pos.shape[-1] != 3:
        raise ValueError(f"positions must have shape (..., C, 3), got {tuple(pos.shape)}")
    if 6 * n_freqs > dim:
        raise ValueError(f"{n_freqs} frequencies give {6 * n_freqs} features, more than dim={dim}")
    freqs = 2.0 ** torch.arange(n_freqs, dtype=pos.dtype, device=pos.device)
    angles = pos.unsqueeze(-2) * freqs.unsqueeze(-1)  # (..., C, K, 3)
    features = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (..., C, K, 3, 2)
    features = features.flatten(start_dim=-3)  # (..., C, K*6), index k*6 + axis*2 + sin/cos
    return torch.nn.functional.pad(features, (0, dim - features.shape[-1]))
