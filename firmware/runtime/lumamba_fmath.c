/* C port of lumamba/quant/fmath.py: same constants, same operations, same order.
 * exp, log1p, softplus and sigmoid are static inline in lumamba_fmath.h (called per element in the
 * kernels' inner loops, where a call would cost as much as the function). */
#include "lumamba_fmath.h"

#include <math.h>
#include <stdint.h>

#define LMB_ARRAY_LEN(a) ((int32_t)(sizeof(a) / sizeof((a)[0])))

/* 2^(j/64), j = 0..63, rounded to float32: fmath.py's EXP2_TABLE, the same literals */
const float lmb_exp2_table[64] = {
  0x1.000000p+0f, 0x1.02c9a4p+0f, 0x1.059b0ep+0f, 0x1.087452p+0f, 0x1.0b5586p+0f, 0x1.0e3ec4p+0f,
  0x1.11301ep+0f, 0x1.1429aap+0f, 0x1.172b84p+0f, 0x1.1a35bep+0f, 0x1.1d4874p+0f, 0x1.2063b8p+0f,
  0x1.2387a6p+0f, 0x1.26b456p+0f, 0x1.29e9e0p+0f, 0x1.2d285ap+0f, 0x1.306fe0p+0f, 0x1.33c08cp+0f,
  0x1.371a74p+0f, 0x1.3a7db4p+0f, 0x1.3dea64p+0f, 0x1.4160a2p+0f, 0x1.44e086p+0f, 0x1.486a2cp+0f,
  0x1.4bfdaep+0f, 0x1.4f9b28p+0f, 0x1.5342b6p+0f, 0x1.56f474p+0f, 0x1.5ab07ep+0f, 0x1.5e76f2p+0f,
  0x1.6247ecp+0f, 0x1.662388p+0f, 0x1.6a09e6p+0f, 0x1.6dfb24p+0f, 0x1.71f75ep+0f, 0x1.75feb6p+0f,
  0x1.7a1148p+0f, 0x1.7e2f34p+0f, 0x1.82589ap+0f, 0x1.868d9ap+0f, 0x1.8ace54p+0f, 0x1.8f1aeap+0f,
  0x1.93737cp+0f, 0x1.97d82ap+0f, 0x1.9c4918p+0f, 0x1.a0c668p+0f, 0x1.a5503cp+0f, 0x1.a9e6b6p+0f,
  0x1.ae89fap+0f, 0x1.b33a2cp+0f, 0x1.b7f770p+0f, 0x1.bcc1eap+0f, 0x1.c199bep+0f, 0x1.c67f12p+0f,
  0x1.cb720ep+0f, 0x1.d072d4p+0f, 0x1.d5818ep+0f, 0x1.da9e60p+0f, 0x1.dfc974p+0f, 0x1.e502eep+0f,
  0x1.ea4afap+0f, 0x1.efa1bep+0f, 0x1.f50766p+0f, 0x1.fa7c18p+0f
};

static const float ATAN_POLY[5] = {-0x1.555554p-2f, 0x1.99973ep-3f, -0x1.2421a4p-3f,
                                   0x1.b82adcp-4f, -0x1.0892d6p-4f};
static const float PI_2 = 0x1.921fb6p+0f;
static const float PI_4 = 0x1.921fb6p-1f;
static const float TAN_PI_8 = 0x1.a8279ap-2f;

static const float ERF_POLY_0[6] = {0x1.20dd74p+0f, -0x1.812684p-2f, 0x1.ce0b32p-4f,
                                    -0x1.b5b8a4p-6f, 0x1.42a6e4p-8f, -0x1.287020p-11f};
static const float ERF_POLY_1[11] = {0x1.f92d08p-1f, 0x1.b05526p-5f, -0x1.7a4a6ap-4f,
                                     0x1.71496ap-4f, -0x1.8a12dcp-5f, 0x1.b1bf86p-8f,
                                     0x1.265312p-7f, -0x1.8b9fcap-8f, 0x1.5c14e4p-11f,
                                     0x1.c4149ep-11f, -0x1.5faaf6p-12f};
static const float ERF_POLY_2[9] = {0x1.ffff70p-1f, 0x1.e87324p-16f, -0x1.8de8c6p-14f,
                                    0x1.9e6ea4p-13f, -0x1.2c7228p-12f, 0x1.3ca206p-12f,
                                    -0x1.14564ep-12f, 0x1.a1e830p-13f, -0x1.59d470p-14f};
static const float ERF_CENTER_1 = 1.75f;
static const float ERF_CENTER_2 = 3.25f;

/* c[0] + c[1] t + ... + c[n-1] t^(n-1), from the highest coefficient down */
static float horner(const float *c, int32_t n, float t)
{
  float p = c[n - 1];
  int32_t i;
  for (i = n - 2; i >= 0; --i) {
    p = p * t + c[i];
  }
  return p;
}

float lmb_erff(float x)
{
  float a = fabsf(x);
  float y;
  if (a >= 4.0f) {
    y = 1.0f;
  } else if (a < 1.0f) {
    y = a * horner(ERF_POLY_0, LMB_ARRAY_LEN(ERF_POLY_0), a * a);
  } else if (a < 2.5f) {
    y = horner(ERF_POLY_1, LMB_ARRAY_LEN(ERF_POLY_1), a - ERF_CENTER_1);
  } else {
    y = horner(ERF_POLY_2, LMB_ARRAY_LEN(ERF_POLY_2), a - ERF_CENTER_2);
  }
  return x < 0.0f ? -y : y;
}

float lmb_atanf(float x)
{
  float a = fabsf(x);
  int inverted = a > 1.0f;
  int shifted;
  float t, t2, r;
  if (inverted) {
    a = 1.0f / a;
  }
  shifted = a > TAN_PI_8;
  t = shifted ? (a - 1.0f) / (a + 1.0f) : a;
  t2 = t * t;
  r = t + t * (t2 * horner(ATAN_POLY, LMB_ARRAY_LEN(ATAN_POLY), t2));
  if (shifted) {
    r = PI_4 + r;
  }
  if (inverted) {
    r = PI_2 - r;
  }
  return x < 0.0f ? -r : r;
}
