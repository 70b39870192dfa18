"""float32 elementary functions of the golden model, written so that C can reproduce them bit for bit.

Every function here is a fixed sequence of float32 operations (+, -, *, /, floor, comparisons,
selects and an exponent-field construction), each of them correctly rounded by IEEE 754 in numpy
and in C alike. A C port therefore matches bit for bit when it:

- performs the same operations in the same order on `float` (FLT_EVAL_METHOD 0; no -ffast-math),
- compiles with -ffp-contract=off (a fused multiply-add rounds once, not twice),
- keeps subnormals (no flush-to-zero), and
- writes the constants below with the same hex-float literals (`0x1.5553f6p-3f`).

numpy's own float32 `exp`/`log`/`erf` differ between platforms and SIMD paths, hence this module.
Accuracy (tests/test_quant_fmath.py measures it against float64): within 3 ulp everywhere on the
stated domains; that is irrelevant for bit-exactness but keeps the golden model close to float.

Coefficients: least-squares fits on Chebyshev nodes (float64), rounded once to float32.
Polynomials are evaluated by Horner's rule from the highest coefficient down:
`p = c[n]; p = p * t + c[n-1]; ...; p = p * t + c[0]`.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32


def _c(*hexes: str) -> tuple[np.float32, ...]:
    return tuple(F32(float.fromhex(h)) for h in hexes)


# exp: x = (64 n + j) ln2/64 + r with |r| <= ln2/128, exp(x) = 2^n * 2^(j/64) * exp(r).
# m = 64 n + j = round(x 64/ln2) by adding and subtracting 1.5 * 2^23 (EXP_SHIFTER): no floor() call,
# and the low bits of k = x 64/ln2 + EXP_SHIFTER hold m. Cody-Waite: LN2_64_HI has 9 significant
# bits, so m * LN2_64_HI is exact for |m| < 2^15 (|m| <= 8125 here). 2^(j/64) comes from a 64-entry
# table (EXP2_TABLE, float32 2^(j/64) correctly rounded); 2^n is added to its exponent field
# ((bits(k) >> 6) << 23: the shifter's bits below bit 22 are 0). exp(r) - 1 ~ r (c1 + c2 r) (a degree-2
# fit on |r| <= ln2/128: 1.2e-7 relative, 1.3 ulp over the whole range), y = t + t p.
# ~13 float operations instead of the 20 of a degree-6 polynomial on |r| <= ln2/2.
EXP_64_LN2, LN2_64_HI, LN2_64_LO = _c("0x1.715476p+6", "0x1.63p-7", "-0x1.bd0106p-19")
EXP_SHIFTER = F32(12582912.0)      # 0x1.8p+23
EXP_POLY = _c("0x1.00003ep+0", "0x1.000006p-1")      # c1, c2 of exp(r) - 1 ~ r (c1 + c2 r)
EXP2_TABLE = _c(
    "0x1.000000p+0", "0x1.02c9a4p+0", "0x1.059b0ep+0", "0x1.087452p+0", "0x1.0b5586p+0", "0x1.0e3ec4p+0",
    "0x1.11301ep+0", "0x1.1429aap+0", "0x1.172b84p+0", "0x1.1a35bep+0", "0x1.1d4874p+0", "0x1.2063b8p+0",
    "0x1.2387a6p+0", "0x1.26b456p+0", "0x1.29e9e0p+0", "0x1.2d285ap+0", "0x1.306fe0p+0", "0x1.33c08cp+0",
    "0x1.371a74p+0", "0x1.3a7db4p+0", "0x1.3dea64p+0", "0x1.4160a2p+0", "0x1.44e086p+0", "0x1.486a2cp+0",
    "0x1.4bfdaep+0", "0x1.4f9b28p+0", "0x1.5342b6p+0", "0x1.56f474p+0", "0x1.5ab07ep+0", "0x1.5e76f2p+0",
    "0x1.6247ecp+0", "0x1.662388p+0", "0x1.6a09e6p+0", "0x1.6dfb24p+0", "0x1.71f75ep+0", "0x1.75feb6p+0",
    "0x1.7a1148p+0", "0x1.7e2f34p+0", "0x1.82589ap+0", "0x1.868d9ap+0", "0x1.8ace54p+0", "0x1.8f1aeap+0",
    "0x1.93737cp+0", "0x1.97d82ap+0", "0x1.9c4918p+0", "0x1.a0c668p+0", "0x1.a5503cp+0", "0x1.a9e6b6p+0",
    "0x1.ae89fap+0", "0x1.b33a2cp+0", "0x1.b7f770p+0", "0x1.bcc1eap+0", "0x1.c199bep+0", "0x1.c67f12p+0",
    "0x1.cb720ep+0", "0x1.d072d4p+0", "0x1.d5818ep+0", "0x1.da9e60p+0", "0x1.dfc974p+0", "0x1.e502eep+0",
    "0x1.ea4afap+0", "0x1.efa1bep+0", "0x1.f50766p+0", "0x1.fa7c18p+0",
)
EXP_TABLE_BITS = 6                 # 64 entries
_EXP2_TABLE_BITS = np.array(EXP2_TABLE, F32).view(np.uint32)
EXP_MAX = F32(88.0)    # above: +inf (exp(88) = 1.65e38 is the largest result computed)
EXP_MIN = F32(-86.5)   # below: 0 (2^n stays >= 2^-125, so no subnormal intermediate)

# log1p(u) for u in [0, 1]: s = u / (2 + u) in [0, 1/3], log1p(u) = 2 atanh(s) = s * (2 + s^2 Q(s^2)).
LOG1P_POLY = _c("0x1.555556p-1", "0x1.9998d2p-2", "0x1.24c9a2p-2", "0x1.bc7e66p-3", "0x1.dbe572p-3")

# atan: |x| > 1 -> pi/2 - atan(1/|x|); then |t| > tan(pi/8) -> pi/4 + atan((t-1)/(t+1));
# on |t| <= tan(pi/8): atan(t) = t + t * (t^2 P(t^2)).
ATAN_POLY = _c("-0x1.555554p-2", "0x1.99973ep-3", "-0x1.2421a4p-3", "0x1.b82adcp-4", "-0x1.0892d6p-4")
PI_2, PI_4, TAN_PI_8 = _c("0x1.921fb6p+0", "0x1.921fb6p-1", "0x1.a8279ap-2")

# erf(a), a = |x|: [0, 1): a * P(a^2); [1, 2.5): P(a - 1.75); [2.5, 4): P(a - 3.25); [4, inf): 1.
ERF_POLY_0 = _c("0x1.20dd74p+0", "-0x1.812684p-2", "0x1.ce0b32p-4", "-0x1.b5b8a4p-6", "0x1.42a6e4p-8",
                "-0x1.287020p-11")
ERF_POLY_1 = _c("0x1.f92d08p-1", "0x1.b05526p-5", "-0x1.7a4a6ap-4", "0x1.71496ap-4", "-0x1.8a12dcp-5",
                "0x1.b1bf86p-8", "0x1.265312p-7", "-0x1.8b9fcap-8", "0x1.5c14e4p-11", "0x1.c4149ep-11",
                "-0x1.5faaf6p-12")
ERF_POLY_2 = _c("0x1.ffff70p-1", "0x1.e87324p-16", "-0x1.8de8c6p-14", "0x1.9e6ea4p-13", "-0x1.2c7228p-12",
                "0x1.3ca206p-12", "-0x1.14564ep-12", "0x1.a1e830p-13", "-0x1.59d470p-14")
ERF_CENTER_1, ERF_CENTER_2 = F32(1.75), F32(3.25)


def horner(coeffs: tuple[np.float32, ...], t: np.ndarray) -> np.ndarray:
    """c[0] + c[1] t + ... + c[n] t^n, evaluated from c[n] down (see the module docstring)."""
    p = np.full_like(t, coeffs[-1])
    for c in coeffs[-2::-1]:
        p = p * t + c
    return p


def _f32(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"fmath works on float32 arrays, got {x.dtype}")
    return x


def exp(x: np.ndarray) -> np.ndarray:
    """exp(x) for finite float32 x; 0 below -86.5, +inf above 88."""
    x = _f32(x)
    xc = np.minimum(np.maximum(x, EXP_MIN), EXP_MAX)
    k = xc * EXP_64_LN2 + EXP_SHIFTER                  # EXP_SHIFTER + m, m = 64 n + j in [-7987, 8125]
    m = k - EXP_SHIFTER
    r = (xc - m * LN2_64_HI) - m * LN2_64_LO
    p = (r * EXP_POLY[1] + EXP_POLY[0]) * r
    kb = k.view(np.uint32)
    with np.errstate(over="ignore"):      # uint32 wrap-around, as in C: adds n (< 0 too) to the exponent
        t_bits = _EXP2_TABLE_BITS[kb & np.uint32(63)] + ((kb >> np.uint32(EXP_TABLE_BITS)) << np.uint32(23))
    t = t_bits.view(np.float32)
    y = t + t * p
    y = np.where(x < EXP_MIN, F32(0.0), y)
    return np.where(x > EXP_MAX, F32(np.inf), y)


def log1p_unit(u: np.ndarray) -> np.ndarray:
    """log(1 + u) for u in [0, 1] (the only range softplus needs)."""
    u = _f32(u)
    s = u / (F32(2.0) + u)
    s2 = s * s
    return s * (F32(2.0) + s2 * horner(LOG1P_POLY, s2))


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))."""
    x = _f32(x)
    return np.maximum(x, F32(0.0)) + log1p_unit(exp(-np.abs(x)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x))."""
    x = _f32(x)
    return F32(1.0) / (F32(1.0) + exp(-x))


def erf(x: np.ndarray) -> np.ndarray:
    """erf(x), odd, piecewise polynomial in |x| (intervals in the constants above)."""
    x = _f32(x)
    a = np.abs(x)
    a2 = a * a
    y = np.where(a < F32(1.0), a * horner(ERF_POLY_0, a2),
                 np.where(a < F32(2.5), horner(ERF_POLY_1, a - ERF_CENTER_1), horner(ERF_POLY_2, a - ERF_CENTER_2)))
    y = np.where(a >= F32(4.0), F32(1.0), y)
    return np.where(x < F32(0.0), -y, y)


def atan(x: np.ndarray) -> np.ndarray:
    """atan(x), odd, with two argument reductions (constants above)."""
    x = _f32(x)
    a = np.abs(x)
    inverted = a > F32(1.0)
    a = np.where(inverted, F32(1.0) / np.maximum(a, F32(1.0)), a)
    shifted = a > TAN_PI_8
    t = np.where(shifted, (a - F32(1.0)) / (a + F32(1.0)), a)
    t2 = t * t
    r = t + t * (t2 * horner(ATAN_POLY, t2))
    r = np.where(shifted, PI_4 + r, r)
    r = np.where(inverted, PI_2 - r, r)
    return np.where(x < F32(0.0), -r, r)


def sqrt(x: np.ndarray) -> np.ndarray:
    """IEEE sqrt (correctly rounded: sqrtf in C)."""
    return np.sqrt(_f32(x))
