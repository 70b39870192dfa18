/* float32 elementary functions of LuMamba int8, bit-exact with lumamba/quant/fmath.py.
 *
 * Same hex-float constants, same operation order (Horner from the highest coefficient down).
 * Bit-exactness needs IEEE float32 arithmetic (FLT_EVAL_METHOD 0), -ffp-contract=off, no
 * -ffast-math and no flush-to-zero. A NaN argument gives a NaN (payload unspecified).
 *
 * exp, log1p and the functions built on them are static inline: the generated kernels call
 * them once per element (the selective scan: d_inner x d_state exp per token), and inlined exp
 * costs about 25 instructions on the Cortex-M4F instead of ~90 (a call, a floorf() call and a
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

/* 2^(j/64), j = 0..63, float32 (fmath.py's EXP2_TABLE): lumamba_fmath.c */
extern const float lmb_exp2_table[64];

/* exp(x): 0 below -86.5, +inf above 88, NaN for NaN. x = m ln2/64 + r, m = 64 n + j rounded by
 * adding and subtracting 1.5 * 2^23 (Cody-Waite reduction); exp(x) = t + t p with t = 2^n 2^(j/64)
 * (the table entry's exponent field plus n, taken from the low bits of k = x 64/ln2 + 1.5 * 2^23)
 * and p = (c2 r + c1) r ~ exp(r) - 1 on |r| <= ln2/128 (see fmath.py). */
static inline float lmb_expf(float x)
{
  const float shifter = 0x1.8p+23f;
  float k, m, r, p, t;
  uint32_t bits, t_bits;
  /* |x| > 86.5, inf or NaN. A float test rather than one on x's bits: the compilers then keep x in
   * a float register (RV32: 4 fewer int <-> float moves per call in the scan loop). */
  if (!(fabsf(x) <= 86.5f)) {
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
  k = x * 0x1.715476p+6f + shifter; /* shifter + m, m = 64 n + j in [-7987, 8125] */
  m = k - shifter;
  r = (x - m * 0x1.63p-7f) - m * -0x1.bd0106p-19f;
  p = (r * 0x1.000006p-1f + 0x1.00003ep+0f) * r;
  memcpy(&bits, &k, sizeof bits);
  memcpy(&t_bits, &lmb_exp2_table[bits & 63u], sizeof t_bits);
  t_bits += (bits >> 6) << 23; /* times 2^n */
  memcpy(&t, &t_bits, sizeof t);
  return t + t * p;
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
