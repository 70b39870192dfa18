/*
 * int8 GEMM micro-kernel for Arm cores with the DSP extension (Cortex-M4, M7, M33, M55): a 2x2
 * tile (2 output channels x 2 tokens) of dual 16-bit multiply-accumulates, ACLE __smlad/__sxtb16
 * (see lumamba_kernels.h for the contract).
 *
 * Per group of 4 k: the two tokens' activations come as int16 pairs from x_buf (two 32-bit loads
 * each, widened once per token pair and reused for all N channels); each channel's 4 weights are
 * one 32-bit load that two SXTB16 split into int16 pairs; 8 SMLADs do the 16 MACs. That is
 * 4 + 2 * 3 + 8 = 18 instructions per 16 MACs before loop overhead.
 *
 * SXTB16 extracts bytes 0 and 2 (and, after a rotation by 8, bytes 1 and 3), so the weights are
 * stored with each full group of 4 permuted to (w0, w2, w1, w3) (kernels_layout.relayout_smlad):
 * then the two extracts give (w0, w1) and (w2, w3), matching the activation pairs in natural
 * order. The layout is chosen when the weights are generated; they stay int8 in flash.
 */
#include <arm_acle.h>
#include <string.h>

#include "lumamba_kernels.h"
#include "lumamba_requant.h"

#if !defined(__ARM_FEATURE_DSP) || __ARM_FEATURE_DSP != 1
#error "lumamba_s8_gemm_2x2_smlad needs the Arm DSP extension (-mcpu=cortex-m4, cortex-m33, cortex-m55, ...)"
#endif

/* A 32-bit load from any address (unaligned LDR is allowed on Armv7E-M and Armv8-M Mainline). */
static inline int32_t load_s32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline int32_t ror8(int32_t v)
{
    const uint32_t u = (uint32_t)v;
    return (int32_t)((u >> 8) | (u << 24));
}

static void widen_s8_s16(const int8_t *src, int16_t *dst, int32_t k)
{
    for (int32_t i = 0; i < k; i++) {
        dst[i] = src[i];
    }
}

/* One output: x16 (widened activations) . w (SMLAD layout). */
static int32_t dot_1x1(const int16_t *x16, const int8_t *w, int32_t k)
{
    int32_t acc = 0;
    int32_t i = 0;
    for (; i + 4 <= k; i += 4) {
        const int32_t wv = load_s32(w + i);
        acc = __smlad(load_s32(x16 + i), __sxtb16(wv), acc);
        acc = __smlad(load_s32(x16 + i + 2), __sxtb16(ror8(wv)), acc);
    }
    for (; i < k; i++) {
        acc += (int32_t)x16[i] * (int32_t)w[i];
    }
    return acc;
}

/* Two channels (w0, w1) x one token: out[0] = x.w0, out[1] = x.w1. */
static void dot_1x2(const int16_t *x16, const int8_t *w0, const int8_t *w1, int32_t k, int32_t out[2])
{
    int32_t acc0 = 0, acc1 = 0;
    int32_t i = 0;
    for (; i + 4 <= k; i += 4) {
        const int32_t xl = load_s32(x16 + i), xh = load_s32(x16 + i + 2);
        const int32_t wa = load_s32(w0 + i), wb = load_s32(w1 + i);
        acc0 = __smlad(xl, __sxtb16(wa), acc0);
        acc0 = __smlad(xh, __sxtb16(ror8(wa)), acc0);
        acc1 = __smlad(xl, __sxtb16(wb), acc1);
        acc1 = __smlad(xh, __sxtb16(ror8(wb)), acc1);
    }
    for (; i < k; i++) {
        acc0 += (int32_t)x16[i] * (int32_t)w0[i];
        acc1 += (int32_t)x16[i] * (int32_t)w1[i];
    }
    out[0] = acc0;
    out[1] = acc1;
}

/* The 2x2 tile: tokens (xa, xb) x channels (w0, w1); out = {xa.w0, xa.w1, xb.w0, xb.w1}. */
static void dot_2x2(const int16_t *xa, const int16_t *xb, const int8_t *w0, const int8_t *w1, int32_t k,
                    int32_t out[4])
{
    int32_t a0 = 0, a1 = 0, b0 = 0, b1 = 0;
    int32_t i = 0;
    /* 8 k per iteration: the loop branch and counter are paid once per 32 MACs */
    for (; i + 8 <= k; i += 8) {
        for (int32_t g = 0; g < 8; g += 4) {
            const int32_t wa = load_s32(w0 + i + g), wb = load_s32(w1 + i + g);
            const int32_t wal = __sxtb16(wa), wah = __sxtb16(ror8(wa));
            const int32_t wbl = __sxtb16(wb), wbh = __sxtb16(ror8(wb));
            const int32_t xal = load_s32(xa + i + g), xah = load_s32(xa + i + g + 2);
            const int32_t xbl = load_s32(xb + i + g), xbh = load_s32(xb + i + g + 2);
            a0 = __smlad(xal, wal, a0);
            a0 = __smlad(xah, wah, a0);
            a1 = __smlad(xal, wbl, a1);
            a1 = __smlad(xah, wbh, a1);
            b0 = __smlad(xbl, wal, b0);
            b0 = __smlad(xbh, wah, b0);
            b1 = __smlad(xbl, wbl, b1);
            b1 = __smlad(xbh, wbh, b1);
        }
    }
    for (; i + 4 <= k; i += 4) {
        const int32_t wa = load_s32(w0 + i), wb = load_s32(w1 + i);
        const int32_t wal = __sxtb16(wa), wah = __sxtb16(ror8(wa));
        const int32_t wbl = __sxtb16(wb), wbh = __sxtb16(ror8(wb));
        const int32_t xal = load_s32(xa + i), xah = load_s32(xa + i + 2);
        const int32_t xbl = load_s32(xb + i), xbh = load_s32(xb + i + 2);
        a0 = __smlad(xah, wah, __smlad(xal, wal, a0));
        a1 = __smlad(xah, wbh, __smlad(xal, wbl, a1));
        b0 = __smlad(xbh, wah, __smlad(xbl, wal, b0));
        b1 = __smlad(xbh, wbh, __smlad(xbl, wbl, b1));
    }
    for (; i < k; i++) {
        const int32_t va = xa[i], vb = xb[i], u0 = w0[i], u1 = w1[i];
        a0 += va * u0;
        a1 += va * u1;
        b0 += vb * u0;
        b1 += vb * u1;
    }
    out[0] = a0;
    out[1] = a1;
    out[2] = b0;
    out[3] = b1;
}

static inline void store(int8_t *y, int32_t c, int32_t acc, const int32_t *bias, const int32_t *multiplier,
                         const int32_t *shift, int32_t y_zero_point)
{
    y[c] = lumamba_requantize_s8(acc + bias[c], multiplier[c], shift[c], y_zero_point);
}

void lumamba_s8_gemm_2x2_smlad(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                               const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n,
                               int32_t k, int16_t *x_buf)
{
    const int32_t stride = (k + 3) & ~3; /* int16 row stride in x_buf: rows start word-aligned */
    int16_t *xa = x_buf;
    int16_t *xb = x_buf + stride;
    int32_t t = 0;
    for (; t + 2 <= m; t += 2) {
        widen_s8_s16(x + t * k, xa, k);
        widen_s8_s16(x + (t + 1) * k, xb, k);
        int8_t *ya = y + t * n;
        int8_t *yb = ya + n;
        int32_t c = 0;
        for (; c + 2 <= n; c += 2) {
            int32_t acc[4];
            dot_2x2(xa, xb, w + c * k, w + (c + 1) * k, k, acc);
            store(ya, c, acc[0], bias, multiplier, shift, y_zero_point);
            store(ya, c + 1, acc[1], bias, multiplier, shift, y_zero_point);
            store(yb, c, acc[2], bias, multiplier, shift, y_zero_point);
            store(yb, c + 1, acc[3], bias, multiplier, shift, y_zero_point);
        }
        if (c < n) {
            store(ya, c, dot_1x1(xa, w + c * k, k), bias, multiplier, shift, y_zero_point);
            store(yb, c, dot_1x1(xb, w + c * k, k), bias, multiplier, shift, y_zero_point);
        }
    }
    if (t < m) { /* the last token of an odd m, or the only one of a matrix-vector product */
        widen_s8_s16(x + t * k, xa, k);
        int8_t *ya = y + t * n;
        int32_t c = 0;
        for (; c + 2 <= n; c += 2) {
            int32_t acc[2];
            dot_1x2(xa, w + c * k, w + (c + 1) * k, k, acc);
            store(ya, c, acc[0], bias, multiplier, shift, y_zero_point);
            store(ya, c + 1, acc[1], bias, multiplier, shift, y_zero_point);
        }
        if (c < n) {
            store(ya, c, dot_1x1(xa, w + c * k, k), bias, multiplier, shift, y_zero_point);
        }
    }
}
