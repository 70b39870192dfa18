"""Per-output-channel weight scales: max-abs (the default) or MSE-optimal clipping.

max-abs maps each channel's largest |w| to 127. One outlier weight then stretches the step for the
whole channel; the MSE-optimal scale instead searches the clip ratio r in (0, 1] per channel that
minimises sum (w - s q(w / s))^2 with s = r max|w| / 127 (the rounding/clipping trade-off of
OCTAV / Banner et al. ACIQ, here by a grid search). Either way the chosen float32 scale is stored
with the int8 weights, so golden model and C use the same numbers: bit-exactness is unaffected.
"""
from __future__ import annotations

import numpy as np

from .fixed_point import WEIGHT_MAX

WEIGHT_METHODS = ("absmax", "mse")
CLIP_GRID = np.linspace(0.5, 1.0, 51)      # clip ratios searched (step 0.01)


def _fake_quant(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    q = np.clip(np.sign(w) * np.floor(np.abs(w) / s + 0.5), -WEIGHT_MAX, WEIGHT_MAX)
    return q * s


def weight_scales(w: np.ndarray, method: str = "absmax") -> np.ndarray:
    """float32 scale per output channel of w (N, ...); 1 for an all-zero channel."""
    if method not in WEIGHT_METHODS:
        raise ValueError(f"weight scale method must be one of {list(WEIGHT_METHODS)}, got {method!r}")
    w2 = np.asarray(w, np.float64).reshape(len(w), -1)
    absmax = np.abs(w2).max(axis=1)
    if method == "absmax":
        return np.where(absmax > 0, absmax / WEIGHT_MAX, 1.0).astype(np.float32)
    best = np.full(len(w2), np.inf)
    scale = np.ones(len(w2), np.float32)
    for r in CLIP_GRID:
        s = np.where(absmax > 0, r * absmax / WEIGHT_MAX, 1.0).astype(np.float32)
        err = ((w2 - _fake_quant(w2, s.astype(np.float64)[:, None])) ** 2).sum(axis=1)
        better = err < best
        best[better], scale[better] = err[better], s[better]
    return scale
