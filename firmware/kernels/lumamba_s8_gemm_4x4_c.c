/*
 * Portable int8 GEMM micro-kernel, 4x4 register tile (see lumamba_kernels.h for the contract).
 *
 * Each step of the inner loop loads 4 weights (4 output channels) and 4 activations (4 tokens)
 * and does 16 multiply-accumulates in registers: 8 loads per 16 MACs instead of 2 per MAC in a
 * plain loop nest. RV32 has the 16 accumulators + 8 operands in registers; on cores with fewer
 * registers the compiler spills a few, the result stays exact. Leftover rows/tokens (n % 4,
 * m % 4) take a one-output dot product.
 */
#include "lumamba_kernels.h"
#include "lumamba_requant.h"

static int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t k)
{
    int32_t acc = 0;
    for (int32_t i = 0; i < k; i++) {
        acc += (int32_t)x[i] * (int32_t)w[i];
    }
    return acc;
}

void lumamba_s8_gemm_4x4_c(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                           const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n,
                           int32_t k)
{
    int32_t t = 0;
    for (; t + 4 <= m; t += 4) {
        const int8_t *x0 = x + t * k;
        const int8_t *x1 = x0 + k;
        const int8_t *x2 = x1 + k;
        const int8_t *x3 = x2 + k;
        int32_t c = 0;
        for (; c + 4 <= n; c += 4) {
            const int8_t *w0 = w + c * k;
            const int8_t *w1 = w0 + k;
            const int8_t *w2 = w1 + k;
            const int8_t *w3 = w2 + k;
            int32_t acc[4][4] = {{0}};
            for (int32_t i = 0; i < k; i++) {
                const int32_t a0 = x0[i], a1 = x1[i], a2 = x2[i], a3 = x3[i];
                const int32_t b0 = w0[i], b1 = w1[i], b2 = w2[i], b3 = w3[i];
                acc[0][0] += a0 * b0; acc[0][1] += a0 * b1; acc[0][2] += a0 * b2; acc[0][3] += a0 * b3;
                acc[1][0] += a1 * b0; acc[1][1] += a1 * b1; acc[1][2] += a1 * b2; acc[1][3] += a1 * b3;
                acc[2][0] += a2 * b0; acc[2][1] += a2 * b1; acc[2][2] += a2 * b2; acc[2][3] += a2 * b3;
                acc[3][0] += a3 * b0; acc[3][1] += a3 * b1; acc[3][2] += a3 * b2; acc[3][3] += a3 * b3;
            }
            for (int32_t r = 0; r < 4; r++) {
                for (int32_t j = 0; j < 4; j++) {
                    y[(t + r) * n + c + j] = lumamba_requantize_s8(acc[r][j] + bias[c + j], multiplier[c + j],
                                                                   shift[c + j], y_zero_point);
                }
            }
        }
        for (; c < n; c++) {
            for (int32_t r = 0; r < 4; r++) {
                const int32_t acc = dot_s8(x + (t + r) * k, w + c * k, k) + bias[c];
                y[(t + r) * n + c] = lumamba_requantize_s8(acc, multiplier[c], shift[c], y_zero_point);
            }
        }
    }
    for (; t < m; t++) {
        for (int32_t c = 0; c < n; c++) {
            const int32_t acc = dot_s8(x + t * k, w + c * k, k) + bias[c];
            y[t * n + c] = lumamba_requantize_s8(acc, multiplier[c], shift[c], y_zero_point);
        }
    }
}
