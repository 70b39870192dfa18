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

/* Where weight k of a row is stored: in the SMLAD layout (kernel_layout.relayout_smlad) every full
 * group of 4 is (w0, w2, w1, w3), i.e. bits 0 and 1 of the index swapped; the last k % 4 stay. */
static int32_t smlad_position(int32_t i, int32_t full)
{
    return i < full ? ((i & ~3) | ((i & 1) << 1) | ((i >> 1) & 1)) : i;
}

/* y = requant(x . w^T + bias), one output at a time; `smlad_layout` selects the weight layout. */
static void gemm_loops(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                       const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n, int32_t k,
                       int32_t smlad_layout)
{
    const int32_t full = k & ~3;
    for (int32_t t = 0; t < m; t++) {
        for (int32_t c = 0; c < n; c++) {
            const int8_t *row = w + c * k;
            int32_t acc = bias[c];
            for (int32_t i = 0; i < k; i++) {
                const int32_t at = smlad_layout ? smlad_position(i, full) : i;
                acc += (int32_t)x[t * k + i] * (int32_t)row[at];
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
    (void)x_buf; /* the tuned form's widened activations; not needed here */
    gemm_loops(x, w, bias, multiplier, shift, y_zero_point, y, m, n, k, 1);
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
