/*
 * LuMamba int8 micro-kernels: Y[M][N] = requant(W[N][K] . X[M][K]^T + bias), int8 in, int8 out.
 *
 * All forms compute the same integers (bit-exact with lumamba.quant.golden's qlinear):
 *   acc[m][n] = sum_k x[m][k] * w[n][k] + bias[n]            (int32; exact, the quantiser bounds it)
 *   y[m][n]   = clamp(MultiplyByQuantizedMultiplier(acc, multiplier[n], shift[n]) + y_zero_point,
 *                     -128, 127)                             (lumamba_requant.h)
 * The input zero point is folded into the bias, as CMSIS-NN does:
 *   bias[n] = b[n] - x_zero_point * sum_k w[n][k]   (lumamba.export.int8_te.fold_bias)
 * so the inner loops multiply raw int8 values.
 *
 * Arguments: x (M, K) row-major int8 activations, M tokens (the weights are reused across them);
 * w (N, K) int8 weights in the kernel's layout (lumamba/kernels_layout.py); bias, multiplier,
 * shift (N,) int32 per output channel; y (M, N) row-major int8. Any m, n >= 1 and k >= 1 (odd
 * sizes and k not a multiple of the tile are handled); no allocation, no global state.
 *
 * Forms (one file each):
 *   lumamba_s8_gemm_4x4_c      portable C99, 4x4 register tile (host, RV32, any core)
 *   lumamba_s8_gemm_2x2_smlad  ACLE __smlad/__sxtb16 2x2 tile (Cortex-M4/M33/M55; DSP extension);
 *                              weights in the SMLAD layout, activations widened to int16 pairs in x_buf
 *   lumamba_s8_gemm_4x2_mve    Helium (MVE) 4x2 tile, vmladavaq (Cortex-M55)
 */
#ifndef LUMAMBA_KERNELS_H
#define LUMAMBA_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void lumamba_s8_gemm_4x4_c(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                           const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n,
                           int32_t k);

/* Scratch of lumamba_s8_gemm_2x2_smlad, in int32 words: two tokens' activations in groups of 4
 * (the last one zero-filled when k % 4 != 0), widened to int16 pairs (2 words per group). */
#define LUMAMBA_S8_GEMM_SMLAD_BUF_WORDS(k) (4 * (((k) + 3) / 4))

/* w in the SMLAD layout (kernels_layout.relayout_smlad): within each row, every full group of
 * 4 weights k..k+3 is stored as (w[k], w[k+2], w[k+1], w[k+3]); the last k % 4 stay in order. */
void lumamba_s8_gemm_2x2_smlad(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                               const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n,
                               int32_t k, int32_t *x_buf);

void lumamba_s8_gemm_4x2_mve(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                             const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n,
                             int32_t k);

#ifdef __cplusplus
}
#endif

#endif /* LUMAMBA_KERNELS_H */
