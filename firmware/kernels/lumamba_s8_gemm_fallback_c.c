/*
 * Portable definitions of the Arm-only kernel forms, for cores without their extension.
 *
 * A generated project calls the kernel form of the board it was generated for, with the weights
 * in that form's layout (kernel_layout.relayout). The same sources must still build and give the
 * same integers on every board (a Cortex-M4F project is checked bit for bit on the host, the
 * Cortex-M55 and RV32), so where the compiler lacks the Arm DSP extension this file defines
 * lumamba_s8_gemm_2x2_smlad, and where it lacks integer Helium lumamba_s8_gemm_4x2_mve, as plain
 * loops over the same weight layouts (see lumamba_kernels.h for the contract). They compute
 * exactly the integers of the tuned forms, only with more instructions. Where the extension is
 * present, the tuned file defines the symbol and this one defines nothing.
 */
#include "lumamba_kernels.h"
#include "lumamba_requant.h"


#if !defined(__ARM_FEATURE_DSP) || __ARM_FEATURE_DSP != 1 || !defined(__ARM_FEATURE_MVE) || (__ARM_FEATURE_MVE & 1) == 0

/* y[t][c] = requant(x_t . w_c + bias[c]) for the m tokens of x; `perm` (k bytes, or NULL) receives
 * each token with every full group of 4 reordered as the SMLAD layout stores weights,
 * (x0, x2, x1, x3), so that the dot product pairs each activation with its weight again. The
 * inner loop is a plain int8 dot product without index arithmetic, which host compilers
 * vectorise (scoring on the host runs the Cortex-M4F project's SMLAD form here). */
static void gemm_loops(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                       const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n, int32_t k,
                       int8_t *perm)
{
    for (int32_t t = 0; t < m; t++) {
        const int8_t *xt = x + t * k;
        if (perm != 0) {
            const int32_t full = k & ~3;
            int32_t i = 0;
            for (; i < full; i += 4) {
                perm[i] = xt[i];
                perm[i + 1] = xt[i + 2];
                perm[i + 2] = xt[i + 1];
                perm[i + 3] = xt[i + 3];
            }
            for (; i < k; i++) {
                perm[i] = xt[i];
            }
            xt = perm;
        }
        for (int32_t c = 0; c < n; c++) {
            const int8_t *row = w + c * k;
            int32_t acc = bias[c];
            for (int32_t i = 0; i < k; i++) {
                acc += (int32_t)xt[i] * (int32_t)row[i];
            }
            y[t * n + c] = lumamba_requantize_s8(acc, multiplier[c], shift[c], y_zero_point);
        }
    }
}

#endif

#if !defined(__ARM_FEATURE_DSP) || __ARM_FEATURE_DSP != 1
void lumamba_s8_gemm_2x2_smlad(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                               const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n,
                               int32_t k, int32_t *x_buf)
{
    /* The tuned form's scratch, LUMAMBA_S8_GEMM_SMLAD_BUF_WORDS(k) words, holds one reordered
     * token: 16 * ceil(k / 4) >= k bytes. */
    gemm_loops(x, w, bias, multiplier, shift, y_zero_point, y, m, n, k, (int8_t *)x_buf);
}
#endif

#if !defined(__ARM_FEATURE_MVE) || (__ARM_FEATURE_MVE & 1) == 0
void lumamba_s8_gemm_4x2_mve(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                             const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n,
                             int32_t k)
{
    gemm_loops(x, w, bias, multiplier, shift, y_zero_point, y, m, n, k, 0);
}
#endif
