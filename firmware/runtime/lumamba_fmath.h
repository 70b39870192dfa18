/* float32 elementary functions of LuMamba int8, bit-exact with lumamba/quant/fmath.py.
 *
 * Same hex-float constants, same operation order (Horner from the highest coefficient down).
 * Bit-exactness needs IEEE float32 arithmetic (FLT_EVAL_METHOD 0), -ffp-contract=off, no
 * -ffast-math and no flush-to-zero. A NaN argument gives a NaN (payload unspecified).
 *
 * exp, log1p and the functions built on them are static inline: the generated kernels call
 * them once per element (the selective scan: d_inner x d_state exp per token), and inlined exp
 * costs about 30 instructions on the Cortex-M4F instead of ~90 (a call, a floorf() call and a
 * coefficient loop). */
#ifndef LUMAMBA_FMATH_H_
#define LUMAMBA_FMATH_H_

#include <math.h>
#include <stdint.h>
#include <string.h>

float lmb_erff(float x);
float lmb_atanf(float x);

/* roundf(v) as an int32 for |v| <= 256 (the quantizers round after clamping to the int8 range):
 * trunc(|v| + 0.49999997f) is exactly floor(|v| + 0.5) for every float32 in [0, 256] (checked
 * exhaustively, tests/test_quantize_rounding.py), so no libm call and no tie correction. The
 * constant is the float just below 0.5: with 0.5 itself, 0.49999997 + 0.5 would round up to 1. */
static inline int32_t lmb_round_clamped(float v)
{
    const int32_t t = (int32_t)(fabsf(v) + 0x1.fffffep-2f);
    return v < 0.0f ? -t : t;
}

/* exp(x): 0 below -86.5, +inf above 88. x = n ln2 + r (Cody-Waite, n rounded by adding and
 * subtracting 1.5 * 2^23), exp(r) by a degree-6 polynomial (Horner), times 2^n built from the
 * low bits of k = x log2(e) + 1.5 * 2^23 (see fmath.py). */
static inline float lmb_expf(float x)
{
  const float shifter = 0x1.8p+23f;
  float k, n, r, p, two_n;
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x42AD0000u) { /* |x| > 86.5, inf or NaN: one integer test in the common case */
    if (x != x) {
      return x;
    }
    if (x < -86.5f) {
      return 0.0f;
    }
    if (x > 88.0f) {
      return INFINITY;
    }
  }
  k = x * 0x1.715476p+0f + shifter; /* shifter + n, n in [-125, 127] */
  n = k - shifter;
  r = (x - n * 0x1.63p-1f) - n * -0x1.bd0106p-13f;
  p = 0x1.6daf52p-10f;
  p = p * r + 0x1.1276a8p-7f;
  p = p * r + 0x1.55545ap-5f;
  p = p * r + 0x1.5553f6p-3f;
  p = p * r + 0x1p-1f;
  p = p * r + 0x1p+0f;
  p = p * r + 0x1p+0f;
  memcpy(&bits, &k, sizeof bits);
  bits = (bits << 23) + 0x3F800000u; /* 2^n */
  memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

/* log(1 + u) for u in [0, 1]: s = u / (2 + u), log1p(u) = s * (2 + s^2 Q(s^2)) */
static inline float lmb_log1pf(float u)
{
  float s = u / (2.0f + u);
  float s2 = s * s;
  float q = 0x1.dbe572p-3f;
  q = q * s2 + 0x1.bc7e66p-3f;
  q = q * s2 + 0x1.24c9a2p-2f;
  q = q * s2 + 0x1.9998d2p-2f;
  q = q * s2 + 0x1.555556p-1f;
  return s * (2.0f + s2 * q);
}

/* log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)) */
static inline float lmb_softplusf(float x)
{
  float pos = x >= 0.0f ? x : 0.0f;
  return pos + lmb_log1pf(lmb_expf(-fabsf(x)));
}

/* 1 / (1 + exp(-x)) */
static inline float lmb_sigmoidf(float x)
{
  return 1.0f / (1.0f + lmb_expf(-x));
}

#endif /* LUMAMBA_FMATH_H_ */
