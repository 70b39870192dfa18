/*
 * int8 GEMM micro-kernel for Helium (MVE, Cortex-M55/M85): a 4x2 tile (4 output channels x
 * 2 tokens) of VMLADAVA, which multiplies 16 int8 lanes and adds all 16 products to a scalar
 * int32 accumulator (see lumamba_kernels.h for the contract). Per 16 k: 6 vector loads and
 * 8 VMLADAVA for 128 MACs. Weights stay in natural (N, K) int8 layout. The k % 16 tail uses a
 * tail predicate (VCTP): inactive lanes load as zero and are not read from memory.
 */
#include "lumamba_kernels.h"

/* Without integer Helium (Cortex-M4F, host, RV32) lumamba_s8_gemm_fallback_c.c defines this
 * function, so that a project generated for a Cortex-M55 builds and gives the same integers on
 * every board. */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)

#include <arm_mve.h>

#include "lumamba_requant.h"

static int32_t dot_1x1(const int8_t *x, const int8_t *w, int32_t k)
{
    int32_t acc = 0;
    int32_t i = 0;
    for (; i + 16 <= k; i += 16) {
        acc = vmladavaq_s8(acc, vldrbq_s8(x + i), vldrbq_s8(w + i));
    }
    if (i < k) {
        const mve_pred16_t p = vctp8q((uint32_t)(k - i));
        acc = vmladavaq_p_s8(acc, vldrbq_z_s8(x + i, p), vldrbq_z_s8(w + i, p), p);
    }
    return acc;
}

/* Tokens (xa, xb) x channels w[0..3] (rows k apart); out[r * 4 + j] = x_r . w_j. */
static void dot_4x2(const int8_t *xa, const int8_t *xb, const int8_t *w, int32_t k, int32_t out[8])
{
    const int8_t *w0 = w, *w1 = w + k, *w2 = w + 2 * k, *w3 = w + 3 * k;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    int32_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const int8x16_t va = vldrbq_s8(xa + i), vb = vldrbq_s8(xb + i);
        const int8x16_t u0 = vldrbq_s8(w0 + i), u1 = vldrbq_s8(w1 + i);
        const int8x16_t u2 = vldrbq_s8(w2 + i), u3 = vldrbq_s8(w3 + i);
        a0 = vmladavaq_s8(a0, va, u0);
        a1 = vmladavaq_s8(a1, va, u1);
        a2 = vmladavaq_s8(a2, va, u2);
        a3 = vmladavaq_s8(a3, va, u3);
        b0 = vmladavaq_s8(b0, vb, u0);
        b1 = vmladavaq_s8(b1, vb, u1);
        b2 = vmladavaq_s8(b2, vb, u2);
        b3 = vmladavaq_s8(b3, vb, u3);
    }
    if (i < k) {
        const mve_pred16_t p = vctp8q((uint32_t)(k - i));
        const int8x16_t va = vldrbq_z_s8(xa + i, p), vb = vldrbq_z_s8(xb + i, p);
        const int8x16_t u0 = vldrbq_z_s8(w0 + i, p), u1 = vldrbq_z_s8(w1 + i, p);
        const int8x16_t u2 = vldrbq_z_s8(w2 + i, p), u3 = vldrbq_z_s8(w3 + i, p);
        a0 = vmladavaq_s8(a0, va, u0); /* zeroed lanes add 0 */
        a1 = vmladavaq_s8(a1, va, u1);
        a2 = vmladavaq_s8(a2, va, u2);
        a3 = vmladavaq_s8(a3, va, u3);
        b0 = vmladavaq_s8(b0, vb, u0);
        b1 = vmladavaq_s8(b1, vb, u1);
        b2 = vmladavaq_s8(b2, vb, u2);
        b3 = vmladavaq_s8(b3, vb, u3);
    }
    out[0] = a0; out[1] = a1; out[2] = a2; out[3] = a3;
    out[4] = b0; out[5] = b1; out[6] = b2; out[7] = b3;
}

void lumamba_s8_gemm_4x2_mve(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                             const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n,
                             int32_t k)
{
    int32_t t = 0;
    for (; t + 2 <= m; t += 2) {
        const int8_t *xa = x + t * k;
        const int8_t *xb = xa + k;
        int8_t *ya = y + t * n;
        int8_t *yb = ya + n;
        int32_t c = 0;
        for (; c + 4 <= n; c += 4) {
            int32_t acc[8];
            dot_4x2(xa, xb, w + c * k, k, acc);
            for (int32_t j = 0; j < 4; j++) {
                ya[c + j] = lumamba_requantize_s8(acc[j] + bias[c + j], multiplier[c + j], shift[c + j], y_zero_point);
                yb[c + j] = lumamba_requantize_s8(acc[4 + j] + bias[c + j], multiplier[c + j], shift[c + j],
                                                  y_zero_point);
            }
        }
        for (; c < n; c++) {
            ya[c] = lumamba_requantize_s8(dot_1x1(xa, w + c * k, k) + bias[c], multiplier[c], shift[c], y_zero_point);
            yb[c] = lumamba_requantize_s8(dot_1x1(xb, w + c * k, k) + bias[c], multiplier[c], shift[c], y_zero_point);
        }
    }
    for (; t < m; t++) { /* odd m, or a matrix-vector product */
        const int8_t *xa = x + t * k;
        int8_t *ya = y + t * n;
        for (int32_t c = 0; c < n; c++) {
            ya[c] = lumamba_requantize_s8(dot_1x1(xa, w + c * k, k) + bias[c], multiplier[c], shift[c], y_zero_point);
        }
    }
}

#endif /* __ARM_FEATURE_MVE */
