"""TE definitions of the integer ops of LuMamba int8 (`quantize`, `dequantize`, `qlinear`, `qconv`).

Each function builds the exact arithmetic of `lumamba.quant.golden` (its docstring is the
contract) as a TVM tensor expression, so the C that TVM generates from it is bit-identical to
the golden model:

- accumulation in int32 (exact: the quantiser checks the bound offline); with a folded bias
  (`fold_bias`) the inner loop sums x * w and the bias carries - x_zp * sum(w), as CMSIS-NN does:
  the same integer, one instruction less per MAC;
- requantisation as TFLite Micro's MultiplyByQuantizedMultiplier: the 32 x 32 -> 64-bit product
  of SaturatingRoundingDoublingHighMul in int64, its division by 2^31 as a C division (toward
  zero), RoundingDivideByPOT in int32 with an arithmetic right shift;
- `acc << left` is written as a multiplication by 2^left in int64 (a left shift of a negative
  value is undefined in C99; the product is exact since |acc| < 2^31 and left <= 30).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from tvm import te, tirx

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _i64(v: int):
    return tirx.const(v, "int64")


def _i32(v: int):
    return tirx.const(v, "int32")


def requantize_value(acc, multiplier, shift, y_zero_point: int, left_shift: bool = True):
    """int32 accumulator -> int8 output value (a TIR expression; see the module docstring).

    Written as one expression: TIR `Let`s trip TVM's bound analysis, so shared subexpressions
    repeat in the C text and the C compiler's CSE merges them. The saturating case of
    SaturatingRoundingDoublingHighMul (x == multiplier == INT32_MIN) is rejected when compiling
    (`check_multipliers`): quantised multipliers lie in [2^30, 2^31) or are 0. `left_shift=False`
    when no channel's shift is positive (the quantiser's usual case): then left = 0, `acc << 0`
    is acc and its int32 saturation a no-op, so both are left out of the C.
    """
    right = tirx.max(-shift, _i32(0))
    if left_shift:
        left = tirx.max(shift, _i32(0))
        scaled = acc.astype("int64") * tirx.shift_left(_i64(1), left.astype("int64"))
        x = tirx.min(tirx.max(scaled, _i64(INT32_MIN)), _i64(INT32_MAX))
    else:
        x = acc.astype("int64")
    ab = x * multiplier.astype("int64")
    nudge = tirx.Select(ab >= _i64(0), _i64(1 << 30), _i64(1 - (1 << 30)))
    h = tirx.truncdiv(ab + nudge, _i64(1 << 31)).astype("int32")
    # 2^right - 1 in int64 first: right may be 31, and 1 << 31 overflows int32
    mask = (tirx.shift_left(_i64(1), right.astype("int64")) - _i64(1)).astype("int32")
    threshold = tirx.shift_right(mask, _i32(1)) + (h < _i32(0)).astype("int32")
    y = tirx.shift_right(h, right) + (tirx.bitwise_and(h, mask) > threshold).astype("int32")
    y = y + _i32(y_zero_point)
    return tirx.min(tirx.max(y, _i32(-128)), _i32(127)).astype("int8")


def check_multipliers(node_name: str, multiplier: np.ndarray, shift: np.ndarray) -> None:
    """The requantisation parameters `requantize_value` supports, or an error naming the channel."""
    bad = np.flatnonzero(multiplier == INT32_MIN)
    if bad.size:
        raise ValueError(f"node {node_name}: multiplier of channel {bad[0]} is INT32_MIN "
                         "(not a QuantizeMultiplier result)")
    bad = np.flatnonzero((shift < -31) | (shift > 30))
    if bad.size:
        raise ValueError(f"node {node_name}: shift {shift[bad[0]]} of channel {bad[0]} is outside [-31, 30]")


def fold_bias(weight: np.ndarray, bias: np.ndarray, x_zero_point: int) -> np.ndarray | None:
    """bias - x_zp * (sum of each output channel's weights), for `folded=True`; None when that
    form could leave int32 (then the zero point stays in the inner loop).

    sum((x - zp) w) + b == sum(x w) + (b - zp sum(w)) for integers; |sum(x w)| <= 128 * sum|w|."""
    w = weight.reshape(len(weight), -1).astype(np.int64)
    folded = bias.astype(np.int64) - int(x_zero_point) * w.sum(axis=1)
    worst = np.abs(folded) + 128 * np.abs(w).sum(axis=1)
    if worst.max(initial=0) > INT32_MAX:
        return None
    return folded.astype(np.int32)


def _centred(x, x_zero_point: int, folded: bool):
    """An int8 input value as the inner loop multiplies it: x, or x - zp without a folded bias."""
    return x.astype("int32") if folded else x.astype("int32") - _i32(x_zero_point)


def qlinear(xq: te.Tensor, weight: te.Tensor, bias: te.Tensor, multiplier: te.Tensor,
            shift: te.Tensor, x_zero_point: int, y_zero_point: int, folded: bool = False,
            left_shift: bool = True, acc_attrs: Mapping | None = None) -> te.Tensor:
    """xq (..., K) int8, weight (N, K) int8, bias/multiplier/shift (N,) int32 -> (..., N) int8.
    `folded`: `bias` is `fold_bias(weight, bias, x_zero_point)`; `left_shift=False`: no shift
    is positive (requantize_value); `acc_attrs`: annotations of the accumulation block (the
    micro-kernel rewrite finds its blocks by them, micro_kernel_tir)."""
    *lead, k_dim = (int(d) for d in xq.shape)
    n_dim = int(weight.shape[0])
    k = te.reduce_axis((0, k_dim), name="k")

    def acc(*idx):
        *i, n = idx
        x = _centred(xq[(*i, k)], x_zero_point, folded)
        return te.sum(x * weight[n, k].astype("int32"), axis=k)

    dot = te.compute((*lead, n_dim), acc, name="qlinear_acc", attrs=None if acc_attrs is None else dict(acc_attrs))
    return te.compute((*lead, n_dim),
                      lambda *idx: requantize_value(dot[idx] + bias[idx[-1]], multiplier[idx[-1]],
                                                    shift[idx[-1]], y_zero_point, left_shift),
                      name="qlinear_out")


def qconv(xq: te.Tensor, weight: te.Tensor, bias: te.Tensor, multiplier: te.Tensor,
          shift: te.Tensor, x_zero_point: int, y_zero_point: int, pads: Sequence[int],
          strides: Sequence[int], folded: bool = False, left_shift: bool = True) -> te.Tensor:
    """xq (1, Cin, H, W) int8, weight (Cout, Cin, kh, kw), group 1, pads (top, left, bottom,
    right) -> (1, Cout, Ho, Wo) int8; taps in the padding contribute 0. `folded`: as qlinear
    (padding holds the zero point, so the folded bias cancels it there too)."""
    n, c_in, h, w = (int(d) for d in xq.shape)
    c_out, _, kh, kw = (int(d) for d in weight.shape)
    pt, pl, pb, pr = (int(p) for p in pads)
    sh, sw = (int(s) for s in strides)
    ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    # Padding holds the zero point, so a padded tap contributes (zp - zp) * w = 0. The pad is pure
    # data movement (int8), which the MCU schedule inlines into the reduction instead of keeping
    # an int32 copy of the whole input.
    padded = te.compute(
        (n, c_in, h + pt + pb, w + pl + pr),
        lambda b, c, i, j: tirx.if_then_else(
            tirx.all(i >= pt, i < pt + h, j >= pl, j < pl + w), xq[b, c, i - pt, j - pl],
            tirx.const(x_zero_point, "int8")),
        name="qconv_pad")
    rc = te.reduce_axis((0, c_in), name="rc")
    ri = te.reduce_axis((0, kh), name="ri")
    rj = te.reduce_axis((0, kw), name="rj")
    dot = te.compute(
        (n, c_out, ho, wo),
        lambda b, co, i, j: te.sum(_centred(padded[b, rc, i * sh + ri, j * sw + rj], x_zero_point, folded)
                                   * weight[co, rc, ri, rj].astype("int32"), axis=[rc, ri, rj]),
        name="qconv_acc")
    return te.compute((n, c_out, ho, wo),
                      lambda b, co, i, j: requantize_value(dot[b, co, i, j] + bias[co], multiplier[co],
                                                           shift[co], y_zero_point, left_shift),
                      name="qconv_out")


def quantize(x: te.Tensor, inv_scale: float, zero_point: int) -> te.Tensor:
    """float32 -> int8: roundf(x * inv_scale) (C99 roundf, ties away from zero; TVM's own round
    is nearbyint), clamped to [-128 - zp, 127 - zp], then + zp. The clamp comes first here: its
    bounds are integers, so clamp(round(v)) == round(clamp(v)), and a value within +-256 rounds
    with lumamba_fmath.h's lmb_round_clamped (a few instructions, no libm call)."""
    inv = tirx.const(np.float32(inv_scale), "float32")
    lo = tirx.const(np.float32(-128 - zero_point), "float32")
    hi = tirx.const(np.float32(127 - zero_point), "float32")

    def one(*i):
        v = tirx.min(tirx.max(x[i] * inv, lo), hi)
        r = tirx.call_pure_extern("int32", "lmb_round_clamped", v)
        return (r + _i32(zero_point)).astype("int8")

    return te.compute(x.shape, one, name="quantize")


def dequantize(q: te.Tensor, scale: float, zero_point: int) -> te.Tensor:
    """int8 -> float32: (float)(q - zp) * scale."""
    s = tirx.const(np.float32(scale), "float32")
    return te.compute(q.shape, lambda *i: (q[i].astype("int32") - _i32(zero_point)).astype("float32") * s,
                      name="dequantize")
