/* C port of lumamba/quant/fmath.py: same constants, same operations, same order.
 * exp, log1p, softplus and sigmoid are static inline in lumamba_fmath.h (called per element in the
 * kernels' inner loops, where a call would cost as much as the function). */
#include "lumamba_fmath.h"

#include <math.h>
#include <stdint.h>

#define LMB_ARRAY_LEN(a) ((int32_t)(sizeof(a) / sizeof((a)[0])))

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
