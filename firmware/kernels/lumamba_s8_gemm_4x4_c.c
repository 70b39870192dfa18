/*
 * Portable int8 GEMM micro-kernel, 4x4 register tile (see lumamba_kernels.h for the contract).
 *
 * Each step of the inner loop loads 4 activations (4 tokens) and 4 weights (4 output channels)
 * and does 16 multiply-accumulates in registers: 8 loads per 16 MACs instead of 2 per MAC in a
 * plain loop nest. The weights of each full group of 4 channels are interleaved at generation
 * time (kernels_layout.relayout_c4: w'[g][k][j] = w[4g + j][k]), so one pointer with constant
 * offsets reads all four: 16 accumulators + 4 activations + 1 weight + 5 pointers + the end fit
 * RV32's registers (with four weight pointers GCC spills). The last n % 4 channels stay in
 * natural order. Leftover tokens (m % 4, a matrix-vector product) take 1x4 tiles.
 */
#include "lumamba_kernels.h"
#include "lumamba_requant.h"

/* 16 MACs of the tile at index o of each pointer. */
#define MAC_4X4(o)                                                                                                     \
    do {                                                                                                               \
        const int32_t a0 = p0[o], a1 = p1[o], a2 = p2[o], a3 = p3[o];                                                  \
        int32_t b = q[4 * (o)];                                                                                        \
        c00 += a0 * b; c10 += a1 * b; c20 += a2 * b; c30 += a3 * b;                                                    \
        b = q[4 * (o) + 1];                                                                                            \
        c01 += a0 * b; c11 += a1 * b; c21 += a2 * b; c31 += a3 * b;                                                    \
        b = q[4 * (o) + 2];                                                                                            \
        c02 += a0 * b; c12 += a1 * b; c22 += a2 * b; c32 += a3 * b;                                                    \
        b = q[4 * (o) + 3];                                                                                            \
        c03 += a0 * b; c13 += a1 * b; c23 += a2 * b; c33 += a3 * b;                                                    \
    } while (0)

/* x . w over k elements, w a natural row (one of the last n % 4 channels). */
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
        int32_t c = 0;
        for (; c + 4 <= n; c += 4) {
            int32_t c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
            int32_t c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
            const int8_t *p0 = x0, *p1 = x0 + k, *p2 = x0 + 2 * k, *p3 = x0 + 3 * k;
            const int8_t *q = w + c * k;
            for (int32_t i = 0; i < k; i++) {
                MAC_4X4(0);
                p0++;
                p1++;
                p2++;
                p3++;
                q += 4;
            }
            const int32_t acc[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13},
                                       {c20, c21, c22, c23}, {c30, c31, c32, c33}};
            for (int32_t r = 0; r < 4; r++) {
                for (int32_t j = 0; j < 4; j++) {
                    y[(t + r) * n + c + j] = lumamba_requantize_s8(acc[r][j] + bias[c + j], multiplier[c + j],
                                                                   shift[c + j], y_zero_point);
                }
            }
        }
        for (; c < n; c++) { /* natural rows */
            for (int32_t r = 0; r < 4; r++) {
                const int32_t acc = dot_s8(x0 + r * k, w + c * k, k) + bias[c];
                y[(t + r) * n + c] = lumamba_requantize_s8(acc, multiplier[c], shift[c], y_zero_point);
            }
        }
    }
    for (; t < m; t++) { /* leftover tokens, or the only one of a matrix-vector product: 1x4 tiles */
        const int8_t *xt = x + t * k;
        int32_t c = 0;
        for (; c + 4 <= n; c += 4) {
            int32_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
            const int8_t *q = w + c * k;
            for (int32_t i = 0; i < k; i++) {
                const int32_t a = xt[i];
                d0 += a * q[0];
                d1 += a * q[1];
                d2 += a * q[2];
                d3 += a * q[3];
                q += 4;
            }
            const int32_t acc[4] = {d0, d1, d2, d3};
            for (int32_t j = 0; j < 4; j++) {
                y[t * n + c + j] = lumamba_requantize_s8(acc[j] + bias[c + j], multiplier[c + j], shift[c + j],
                                                         y_zero_point);
            }
        }
        for (; c < n; c++) {
            const int32_t acc = dot_s8(xt, w + c * k, k) + bias[c];
            y[t * n + c] = lumamba_requantize_s8(acc, multiplier[c], shift[c], y_zero_point);
        }
    }
}
