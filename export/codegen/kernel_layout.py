"""Weight layouts and the NumPy reference of the int8 micro-kernels (firmware/kernels/).

Every kernel form computes y[M, N] = clamp(requantize(x[M, K] . w[N, K]^T + bias, multiplier,
shift) + y_zero_point, -128, 127) with the input zero point folded into ``bias``
(`fold_bias_zero_point`). Forms differ only in how the weights are stored; the functions here
produce each layout at generation time, so the weights stay int8 and the same size in flash.
"""
from __future__ import annotations

import numpy as np

from lumamba.quant.fixed_point import INT8_MAX, INT8_MIN, requantize

# form name -> C function, for the harness and the benchmark
KERNEL_FUNCTIONS: dict[str, str] = {
    "c_4x4": "lumamba_s8_gemm_4x4_c",
    "smlad_2x2": "lumamba_s8_gemm_2x2_smlad",
    "mve_4x2": "lumamba_s8_gemm_4x2_mve",
}


def relayout_smlad(w: np.ndarray) -> np.ndarray:
    """Weights (N, K) int8 in the layout of lumamba_s8_gemm_2x2_smlad.

    Within each row, every full group of 4 (k, k+1, k+2, k+3) is stored as (k, k+2, k+1, k+3), so
    that SXTB16 and SXTB16-after-ROR-8 of the group's 32-bit word give the int16 pairs (w[k], w[k+1])
    and (w[k+2], w[k+3]); the last K % 4 weights of a row stay in order.
    """
    w = _check(w, "relayout_smlad")
    n, k = w.shape
    full = k - k % 4
    out = w.copy()
    out[:, :full] = w[:, :full].reshape(n, full // 4, 4)[:, :, [0, 2, 1, 3]].reshape(n, full)
    return out


def smlad_scratch_words(k: int) -> int:
    """LUMAMBA_S8_GEMM_SMLAD_BUF_WORDS(k) of lumamba_kernels.h (at least 1: no zero-size buffer)."""
    return max(1, 4 * ((k + 3) // 4))


def relayout_c4(w: np.ndarray) -> np.ndarray:
    """Weights (N, K) int8 in the layout of lumamba_s8_gemm_4x4_c.

    Each full group of 4 channels g is stored interleaved, w'[g, k, j] = w[4g + j, k] (4K bytes
    per group), so one pointer with constant offsets reads the 4 weights of a k; the last N % 4
    channels follow in natural order. Channel c < 4 * (N // 4) thus starts at
    (c // 4) * 4K + c % 4 with stride 4, a later one at c * K with stride 1.
    """
    w = _check(w, "relayout_c4")
    n, k = w.shape
    full = n - n % 4
    head = w[:full].reshape(full // 4, 4, k).transpose(0, 2, 1).reshape(-1)
    return np.concatenate([head, w[full:].reshape(-1)]).reshape(n, k)


def _check(w: np.ndarray, what: str) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError(f"{what} needs (N, K) int8 weights, got {w.dtype} {w.shape}")
    return w


def relayout(form: str, w: np.ndarray) -> np.ndarray:
    """Weights (N, K) int8 in the layout that kernel form ``form`` reads."""
    if form not in KERNEL_FUNCTIONS:
        raise ValueError(f"unknown kernel form {form!r}; known forms: {', '.join(KERNEL_FUNCTIONS)}")
    if form == "smlad_2x2":
        return relayout_smlad(w)
    if form == "c_4x4":
        return relayout_c4(w)
    return np.ascontiguousarray(_check(w, "relayout"))


def fold_bias_zero_point(w: np.ndarray, bias: np.ndarray, x_zero_point: int) -> np.ndarray:
    """bias - x_zero_point * sum_k w[n, k] as int32 (the kernels' bias); ValueError if it leaves int32."""
    folded = np.asarray(bias, np.int64) - int(x_zero_point) * np.asarray(w, np.int64).sum(axis=1)
    if np.abs(folded).max(initial=0) > np.iinfo(np.int32).max:
        raise ValueError("folded bias does not fit int32; keep the zero point in the inner loop")
    return folded.astype(np.int32)


def gemm_reference(x: np.ndarray, w: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                   shift: np.ndarray, y_zero_point: int) -> np.ndarray:
    """What every kernel form computes, in NumPy + lumamba.quant.fixed_point: (M, N) int8."""
    acc = x.astype(np.int64) @ w.astype(np.int64).T + np.asarray(bias, np.int64)
    y = requantize(acc, np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)) + int(y_zero_point)
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)
