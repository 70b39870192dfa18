"""Integer arithmetic of the int8 scheme: quantisation parameters, rounding, fixed-point requantisation.

Runtime operations (executed by the golden model and, identically, by the generated C):

- `quantize_f32(x, inv_scale, zp)`: float32 -> int8,
  q = clamp(roundf(x * inv_scale), -128 - zp, 127 - zp) + zp
  with one float32 multiply and C99 `roundf` (round half away from zero, exact on float32).
- `dequantize_f32(q, scale, zp)`: int8 -> float32, (float)(q - zp) * scale (one float32 multiply).
- `requantize(acc, multiplier, shift)`: int32 -> int32, TFLite Micro's
  MultiplyByQuantizedMultiplier: SaturatingRoundingDoublingHighMul(acc << left, multiplier), then
  RoundingDivideByPOT(right), with left = max(shift, 0), right = max(-shift, 0). The left shift
  saturates to int32 (TFLM leaves that overflow undefined; the quantiser keeps shift <= 0 in
  practice).

Offline helpers (Python floats, not part of the runtime contract) choose the parameters:
`activation_params`, `quantize_weights`, `quantize_bias`, `quantize_multiplier`.
"""
from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
WEIGHT_MAX = 127          # symmetric weights use [-127, 127], as TFLite and CMSIS-NN do


# ---- runtime ---------------------------------------------------------------------------------

def round_half_away_f32(v: np.ndarray) -> np.ndarray:
    """C99 roundf on float32: ties go away from zero. Exact: t = trunc(v) and v - t are exact in
    float32, so no `floor(v + 0.5)` double rounding (0.49999997 + 0.5 rounds up to 1.0)."""
    t = np.trunc(v)
    frac = v - t
    return t + np.where(frac >= np.float32(0.5), np.float32(1.0), np.where(frac <= np.float32(-0.5),
                                                                             np.float32(-1.0), np.float32(0.0)))


def quantize_f32(x: np.ndarray, inv_scale: np.float32, zero_point: int) -> np.ndarray:
    """float32 -> int8 (see the module docstring); the clamp happens on the float value, so no
    integer overflow for any finite x."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"quantize_f32 needs float32, got {x.dtype}")
    r = round_half_away_f32(x * np.float32(inv_scale))
    r = np.minimum(np.maximum(r, np.float32(INT8_MIN - zero_point)), np.float32(INT8_MAX - zero_point))
    return (r.astype(np.int32) + zero_point).astype(np.int8)


def dequantize_f32(q: np.ndarray, scale: np.float32, zero_point: int) -> np.ndarray:
    """int8 -> float32: (float)(q - zp) * scale."""
    return (q.astype(np.int32) - zero_point).astype(np.float32) * np.float32(scale)


def _trunc_div_pow2_31(v: np.ndarray) -> np.ndarray:
    """v / 2^31 rounded toward zero, as C's integer division (not numpy's floor division)."""
    mag = np.abs(v) >> 31
    return np.where(v < 0, -mag, mag)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values (held in int64):
    (a * b + nudge) / 2^31 truncated, nudge = 2^30 for a*b >= 0 else 1 - 2^30; INT32_MIN^2 saturates."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    out = _trunc_div_pow2_31(ab + nudge)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX), out)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero,
    with an arithmetic right shift; exponent in [0, 31]."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """MultiplyByQuantizedMultiplier(acc, multiplier, shift) (see the module docstring); returns int64
    holding int32 values. multiplier/shift broadcast against acc (per output channel)."""
    acc = np.asarray(acc, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.clip(acc << left, INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


# ---- offline parameter choice -----------------------------------------------------------------

def round_half_away(v: float) -> int:
    """Python-float rounding with ties away from zero (std::round), for offline parameters."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31).

    real == 0 gives (0, 0); a real below 2^-31 * 2^-31 underflows to (0, 0) as in TFLite. Raises on
    negative, non-finite or huge (shift > 30) values.
    """
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"requantisation multiplier must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)                  # real = q * 2^shift, q in [0.5, 1)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"requantisation multiplier {real} is too large (shift {shift} > 30)")
    return q_fixed, shift


def activation_params(lo: float, hi: float) -> tuple[np.float32, int]:
    """Asymmetric int8 (scale, zero_point) covering [min(lo, 0), max(hi, 0)], so 0.0 is exact.

    scale = (hi - lo) / 255 rounded to float32; zp = round(-128 - lo / scale) clamped to int8.
    A range of width 0 (an all-zero tensor) gets scale 1.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"calibration range [{lo}, {hi}] is not finite")
    if hi == lo:
        return np.float32(1.0), 0
    scale = np.float32((hi - lo) / (INT8_MAX - INT8_MIN))
    if scale == 0 or not np.isfinite(scale):
        raise ValueError(f"calibration range [{lo}, {hi}] gives an unusable int8 scale {scale}")
    zp = round_half_away(INT8_MIN - lo / float(scale))
    return scale, int(min(max(zp, INT8_MIN), INT8_MAX))


def inverse_scale(scale: np.float32) -> np.float32:
    """The float32 constant quantize_f32 multiplies by: 1/scale rounded once to float32."""
    return np.float32(1.0 / float(scale))


def quantize_weights(w: np.ndarray, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 weights of w (N, ...): scale_c = max|w_c| / 127 (float32;
    1 for an all-zero channel) unless `scale` (N,) is given, q = round(w / scale_c) in [-127, 127].
    Returns (q int8, scale float32 (N,))."""
    w = np.asarray(w, np.float64)
    if scale is None:
        absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        scale = np.where(absmax > 0, absmax / WEIGHT_MAX, 1.0)
    scale = np.asarray(scale, np.float32)
    s = scale.astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1))
    q = np.sign(w) * np.floor(np.abs(w) / s + 0.5)           # ties away from zero
    return np.clip(q, -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8), scale


def quantize_bias(b: np.ndarray | None, x_scale: np.float32, w_scale: np.ndarray) -> np.ndarray:
    """int32 bias in units of x_scale * w_scale_c (zeros when there is no bias). Raises if it overflows."""
    n = len(w_scale)
    if b is None:
        return np.zeros(n, np.int32)
    unit = float(x_scale) * w_scale.astype(np.float64)
    v = np.asarray(b, np.float64) / unit
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)
    if np.any(np.abs(q) > INT32_MAX):
        raise ValueError(f"bias does not fit int32 at scale x_scale*w_scale (max |b/unit| = {np.abs(v).max():.3g})")
    return q.astype(np.int32)
