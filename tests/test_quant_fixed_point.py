"""Integer arithmetic of the int8 scheme against independent Python-integer references.

The references below use Python's arbitrary-precision integers and Fractions, one value at a
time, so they share no code (and no int64 overflow risk) with the vectorised numpy versions.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from lumamba.quant.fixed_point import (INT32_MAX, INT32_MIN, activation_params, dequantize_f32, inverse_scale,
                                       quantize_bias, quantize_f32, quantize_multiplier, quantize_weights,
                                       requantize)


def ref_requantize(acc: int, multiplier: int, shift: int) -> int:
    """TFLite Micro's MultiplyByQuantizedMultiplier on Python ints (left shift saturating to int32)."""
    left, right = max(shift, 0), max(-shift, 0)
    x = min(max(acc * 2 ** left, INT32_MIN), INT32_MAX)
    if x == INT32_MIN and multiplier == INT32_MIN:
        high = INT32_MAX
    else:
        ab = x * multiplier
        nudge = 2 ** 30 if ab >= 0 else 1 - 2 ** 30
        total = ab + nudge
        high = abs(total) // 2 ** 31 * (1 if total >= 0 else -1)     # C division truncates toward zero
    mask = 2 ** right - 1
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if remainder > threshold else 0)


def exact_round(acc: int, multiplier: int, shift: int) -> Fraction:
    return Fraction(acc * multiplier) * Fraction(2) ** (shift - 31)


EDGE_ACC = [0, 1, -1, 2, -2, 127, -128, 12345, -12345, 2 ** 20 + 1, -(2 ** 20) - 1, INT32_MAX, INT32_MIN,
            INT32_MAX - 1, INT32_MIN + 1, 2 ** 30, -(2 ** 30)]
EDGE_MULT = [0, 1, 2 ** 30, 2 ** 30 + 1, 2 ** 31 - 1, 2 ** 31 - 2, 1518500250, INT32_MIN]
EDGE_SHIFT = [0, -1, -2, -7, -15, -30, -31, 1, 2, 10, 30]


def test_requantize_edge_cases_equal_bigint_reference():
    acc, mult, shift = (np.array(v, np.int64) for v in zip(*[(a, m, s) for a in EDGE_ACC for m in EDGE_MULT
                                                              for s in EDGE_SHIFT]))
    got = requantize(acc, mult, shift)
    want = [ref_requantize(int(a), int(m), int(s)) for a, m, s in zip(acc, mult, shift)]
    assert got.tolist() == want
    assert got.min() >= INT32_MIN and got.max() <= INT32_MAX
    # saturation: the one product that overflows the doubling high multiply, and a saturating left shift
    assert requantize(np.int64(INT32_MIN), np.int64(INT32_MIN), np.int64(0)) == INT32_MAX
    assert requantize(np.int64(INT32_MAX), np.int64(2 ** 31 - 1), np.int64(5)) == ref_requantize(INT32_MAX, 2 ** 31 - 1, 5)


def test_requantize_random_equals_reference_and_is_within_one_of_exact_rounding():
    rng = np.random.default_rng(0)
    n = 20000
    acc = rng.integers(-(2 ** 24), 2 ** 24, n)          # the accumulator range of real layers
    mult = rng.integers(2 ** 30, 2 ** 31, n)
    shift = rng.integers(-31, 1, n)
    got = requantize(acc, mult, shift)
    assert got.tolist() == [ref_requantize(int(a), int(m), int(s)) for a, m, s in zip(acc, mult, shift)]
    # TFLM rounds twice (high multiply, then the shift): never more than one from exact rounding,
    # and rarely off at all (about 2^-(right shift + 1) of the outputs).
    exact = [exact_round(int(a), int(m), int(s)) for a, m, s in zip(acc, mult, shift)]
    off = [abs(Fraction(int(g)) - e) for g, e in zip(got, exact)]
    assert max(off) <= 1
    nearest = [int(math.floor(e + Fraction(1, 2))) for e in exact]
    assert np.mean([g != r for g, r in zip(got.tolist(), nearest)]) < 0.02


def test_quantize_multiplier_reproduces_the_real_multiplier():
    rng = np.random.default_rng(1)
    reals = np.concatenate([10 ** rng.uniform(-9, 1, 2000), [1.0, 0.5, 0.25, 1 - 2 ** -40, 2 ** -31, 1e-7]])
    for real in reals:
        m, s = quantize_multiplier(float(real))
        assert 2 ** 30 <= m < 2 ** 31 and -31 <= s <= 30
        exact = Fraction(float(real))
        assert abs(Fraction(m) * Fraction(2) ** (s - 31) - exact) <= exact * Fraction(2) ** -30
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1 - 2 ** -40) == (2 ** 30, 1)                    # rounds up to 2^31: renormalised
    assert quantize_multiplier(2.0 ** -70) == (0, 0)                             # underflows, as in TFLite
    for bad in (-1.0, float("nan"), float("inf"), 2.0 ** 40):
        with pytest.raises(ValueError, match="multiplier"):
            quantize_multiplier(bad)


def ref_quantize(x: float, inv_scale: float, zp: int) -> int:
    v = float(np.float32(x) * np.float32(inv_scale))                             # one float32 multiply
    r = math.copysign(math.floor(abs(v) + 0.5), v)                                # exact in float64
    return int(min(max(r, -128 - zp), 127 - zp)) + zp


def test_quantize_rounds_half_away_from_zero_and_saturates():
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 0.0, -0.0, 1e30, -1e30,
                  126.5, 127.5, -128.5, 3.4e38], np.float32)
    for zp in (0, -128, 5, 127):
        got = quantize_f32(x, np.float32(1.0), zp)
        assert got.dtype == np.int8
        assert got.tolist() == [ref_quantize(v, 1.0, zp) for v in x]
    assert quantize_f32(np.array([0.5, -0.5, 2.5], np.float32), np.float32(1.0), 0).tolist() == [1, -1, 3]
    assert quantize_f32(np.array([0.49999997], np.float32), np.float32(1.0), 0).tolist() == [0]


def test_quantize_random_against_reference_and_dequantize_inverts():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 3, 5000).astype(np.float32)
    scale, zp = activation_params(float(x.min()), float(x.max()))
    inv = inverse_scale(scale)
    q = quantize_f32(x, inv, zp)
    assert q.tolist() == [ref_quantize(v, float(inv), zp) for v in x]
    back = dequantize_f32(q, scale, zp)
    assert back.dtype == np.float32
    # inside the range the round trip is off by at most half a step (plus the 1/scale rounding)
    assert np.abs(back - x).max() <= 0.5 * scale * (1 + 1e-5)


def test_activation_params_keep_zero_exact_and_cover_the_range():
    for lo, hi in ((-1.0, 3.0), (0.2, 5.0), (-7.0, -0.5), (-2.5, 2.5)):
        scale, zp = activation_params(lo, hi)
        assert -128 <= zp <= 127
        assert quantize_f32(np.array([0.0], np.float32), inverse_scale(scale), zp)[0] == zp
        lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
        assert float(scale) == pytest.approx((hi0 - lo0) / 255, rel=1e-7)
        ends = quantize_f32(np.array([lo0, hi0], np.float32), inverse_scale(scale), zp)
        assert ends[0] <= -127 and ends[1] >= 126                       # the range uses the int8 span
    assert activation_params(0.0, 0.0) == (np.float32(1.0), 0)
    assert activation_params(0.5, 2.0)[1] == -128                        # non-negative: zero at the bottom
    with pytest.raises(ValueError, match="not finite"):
        activation_params(float("-inf"), 1.0)


def test_weights_are_symmetric_per_channel_and_bias_is_int32():
    rng = np.random.default_rng(3)
    w = rng.normal(0, 1, (6, 10)) * np.array([1e-3, 0.1, 1, 10, 0, 2])[:, None]
    q, scale = quantize_weights(w.astype(np.float32))
    assert q.dtype == np.int8 and scale.dtype == np.float32
    assert q.min() >= -127
    assert np.abs(q).max(axis=1).tolist() == [127, 127, 127, 127, 0, 127]
    assert scale[4] == 1.0                                              # all-zero channel
    err = np.abs(q * scale[:, None].astype(np.float64) - w.astype(np.float32))
    assert (err <= scale[:, None] / 2 * (1 + 1e-6)).all()
    b = rng.normal(0, 1, 6)
    bq = quantize_bias(b, np.float32(0.02), scale)
    assert bq.dtype == np.int32
    assert np.abs(bq * 0.02 * scale.astype(np.float64) - b).max() <= (0.02 * scale.max()) / 2 * (1 + 1e-9)
    assert quantize_bias(None, np.float32(0.02), scale).tolist() == [0] * 6
    with pytest.raises(ValueError, match="int32"):
        quantize_bias(np.array([1e6]), np.float32(1e-6), np.array([1e-6], np.float32))
