/* float32 elementary functions of LuMamba int8, bit-exact with lumamba/quant/fmath.py.
 *
 * Same hex-float constants, same operation order (Horner from the highest coefficient down).
 * Bit-exactness needs IEEE float32 arithmetic (FLT_EVAL_METHOD 0), -ffp-contract=off, no
 * -ffast-math and no flush-to-zero. A NaN argument gives a NaN (payload unspecified). */
#ifndef LUMAMBA_FMATH_H_
#define LUMAMBA_FMATH_H_

float lmb_expf(float x);      /* 0 below -86.5, +inf above 88 */
float lmb_log1pf(float u);    /* u in [0, 1] */
float lmb_softplusf(float x); /* max(x, 0) + log1p(exp(-|x|)) */
float lmb_sigmoidf(float x);  /* 1 / (1 + exp(-x)) */
float lmb_erff(float x);
float lmb_atanf(float x);

#endif /* LUMAMBA_FMATH_H_ */
