/*
 * int8 GEMM micro-kernel for Arm cores with the DSP extension (Cortex-M4, M7, M33, M55): a 2x2
 * tile (2 output channels x 2 tokens) of dual 16-bit multiply-accumulates, ACLE __smlad/__sxtb16
 * (see lumamba_kernels.h for the contract).
 *
 * Per group of 4 k: each token's activations are two int16-pair words from x_buf (widened once
 * per token pair, the two tokens interleaved, then reused for all N channels); each channel's 4 weights are one 32-bit load
 * that two SXTB16 split into int16 pairs; 8 SMLADs do the 16 MACs: 4 + 2 * 3 + 8 = 18
 * instructions per 16 MACs before loop overhead, which unrolling by 2 groups halves.
 *
 * SXTB16 extracts bytes 0 and 2 (and, with its ROR #8 operand, bytes 1 and 3), so the weights
 * are stored with each full group of 4 permuted to (w0, w2, w1, w3) (kernels_layout.relayout_smlad):
 * the two extracts then give (w0, w1) and (w2, w3), matching the activation pairs in natural
 * order. The layout is chosen when the weights are generated; they stay int8 in flash. The last
 * k % 4 weights stay in natural order; their activations are widened into one more zero-filled
 * pair of words, so the tail costs one or two SMLADs per output instead of a scalar loop.
 */
#include "lumamba_kernels.h"

/* Without the DSP extension (host, RV32) lumamba_s8_gemm_fallback_c.c defines this function, so
 * that a project generated for a Cortex-M4 builds and gives the same integers on every board. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP == 1

#include <arm_acle.h>
#include <string.h>

#include "lumamba_requant.h"

/* A 32-bit load from any address (unaligned LDR is allowed on Armv7E-M and Armv8-M Mainline). */
static inline int32_t load_s32(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* SXTB16 with its rotate operand: bytes 1 and 3 sign-extended to two int16. ACLE has no rotate
 * form and GCC 12 does not fold a separate rotation into the instruction, hence the asm. */
static inline int32_t sxtb16_ror8(int32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* dst[step * g], dst[step * g + 1] <- int16 pairs (x[4g], x[4g+1]), (x[4g+2], x[4g+3]), g < k / 4.
 * step 4 interleaves two tokens (the 2x2 tile reads both through one pointer), step 2 packs one. */
static void widen_pairs(const int8_t *x, int32_t *dst, int32_t groups, int32_t step)
{
    for (int32_t g = 0; g < groups; g++) {
        const int32_t v = load_s32(x + 4 * g);
        const uint32_t even = (uint32_t)__sxtb16(v); /* (x0, x2) */
        const uint32_t odd = (uint32_t)sxtb16_ror8(v); /* (x1, x3) */
        dst[step * g] = (int32_t)((even & 0xFFFFu) | (odd << 16));
        dst[step * g + 1] = (int32_t)((even >> 16) | (odd & 0xFFFF0000u));
    }
}

/* Token x widened into dst (the words of group g at dst[step * g], dst[step * g + 1]): the
 * k / 4 full groups, then, if k % 4, one more group of the last activations, zero-filled. */
static void widen_token(const int8_t *x, int32_t *dst, int32_t k, int32_t step)
{
    const int32_t groups = k >> 2;
    widen_pairs(x, dst, groups, step);
    if (k & 3) {
        int8_t last[4] = {0, 0, 0, 0};
        memcpy(last, x + 4 * groups, (size_t)(k & 3));
        widen_pairs(last, dst + step * groups, 1, step);
    }
}

/* (a, b) as an int16 pair, a in the low half. */
static inline int32_t pack_s16(int32_t a, int32_t b)
{
    return (int32_t)(((uint32_t)a & 0xFFFFu) | ((uint32_t)b << 16));
}

/* acc + the last rem = k % 4 (1..3) products of one token (its zero-filled tail words xt[0],
 * xt[1]) with one channel's tail weights w[0..rem) (natural order). */
static inline int32_t tail_smlad(const int32_t *xt, const int8_t *w, int32_t rem, int32_t acc)
{
    acc = __smlad(xt[0], pack_s16(w[0], rem > 1 ? w[1] : 0), acc);
    return rem > 2 ? __smlad(xt[1], pack_s16(w[2], 0), acc) : acc;
}

/* One token (pairs xp) . two channels w0, w1. */
static void dot_1x2(const int32_t *xp, const int8_t *w0, const int8_t *w1, int32_t k, int32_t out[2])
{
    int32_t a0 = 0, a1 = 0;
    const int8_t *p0 = w0, *p1 = w1;
    for (int32_t g = k >> 2; g > 0; g--) {
        const int32_t xl = xp[0], xh = xp[1];
        const int32_t u = load_s32(p0), v = load_s32(p1);
        xp += 2;
        p0 += 4;
        p1 += 4;
        a0 = __smlad(xh, sxtb16_ror8(u), __smlad(xl, __sxtb16(u), a0));
        a1 = __smlad(xh, sxtb16_ror8(v), __smlad(xl, __sxtb16(v), a1));
    }
    const int32_t rem = k & 3;
    out[0] = rem ? tail_smlad(xp, p0, rem, a0) : a0;
    out[1] = rem ? tail_smlad(xp, p1, rem, a1) : a1;
}

/* One group of 4 k of one channel (pointer P, post-increment) into accumulator A, activations in
 * xl/xh: the weight word is split in place (u -> low pair in ul, high pair in u). */
#define SMLAD_1X4_ASM_CHANNEL(P, A)                                                                                    \
    "ldr %[u], [%[" P "]], #4\n"                                                                                      \
    "sxtb16 %[ul], %[u]\n"                                                                                            \
    "sxtb16 %[u], %[u], ror #8\n"                                                                                     \
    "smlad %[" A "], %[xl], %[ul], %[" A "]\n"                                                                        \
    "smlad %[" A "], %[xh], %[u], %[" A "]\n"

#define SMLAD_1X4_ASM_GROUP                                                                                            \
    "ldrd %[xl], %[xh], [%[px]], #8\n"                                                                                \
    SMLAD_1X4_ASM_CHANNEL("p0", "a0") SMLAD_1X4_ASM_CHANNEL("p1", "a1")                                                \
    SMLAD_1X4_ASM_CHANNEL("p2", "a2") SMLAD_1X4_ASM_CHANNEL("p3", "a3")

/* One token (pairs xp) x four channels w, w + k, w + 2k, w + 3k: the matrix-vector
 * path. Per group of 4 k: 1 LDRD + 4 LDR + 8 SXTB16 + 8 SMLAD for 16 MACs; no weight reuse, so
 * the weight loads and splits dominate. */
__attribute__((noinline)) static void dot_1x4(const int32_t *xp, const int8_t *w, int32_t k, int32_t out[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    const int8_t *p0 = w, *p1 = w + k, *p2 = w + 2 * k, *p3 = w + 3 * k;
    const int32_t *px = xp;
    int32_t pairs = k >> 3;
    int32_t u, ul, xl, xh;
    /* Two groups per iteration (the loop's SUBS + BNE once per 32 MACs), then an odd group. */
#define SMLAD_1X4_OPERANDS                                                                                             \
    : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [p0] "+r"(p0), [p1] "+r"(p1), [p2] "+r"(p2),         \
      [p3] "+r"(p3), [px] "+r"(px), [n] "+r"(pairs), [u] "=&r"(u), [ul] "=&r"(ul), [xl] "=&r"(xl), [xh] "=&r"(xh)     \
    :                                                                                                                  \
    : "cc", "memory"
    if (pairs > 0) {
        __asm__ volatile("1:\n" SMLAD_1X4_ASM_GROUP SMLAD_1X4_ASM_GROUP
                         "subs %[n], %[n], #1\n"
                         "bne 1b\n" SMLAD_1X4_OPERANDS);
    }
    if (k & 4) {
        __asm__ volatile(SMLAD_1X4_ASM_GROUP SMLAD_1X4_OPERANDS);
    }
#undef SMLAD_1X4_OPERANDS
    const int32_t rem = k & 3;
    out[0] = rem ? tail_smlad(px, p0, rem, a0) : a0;
    out[1] = rem ? tail_smlad(px, p1, rem, a1) : a1;
    out[2] = rem ? tail_smlad(px, p2, rem, a2) : a2;
    out[3] = rem ? tail_smlad(px, p3, rem, a3) : a3;
}

/* One step of the 2x2 tile, one group of 4 k; ordered so that few values are live at once
 * (4 accumulators, 4 weight pairs, 2 activation words, 2 pointers, k, the end). */
#define SMLAD_2X2_GROUP()                                                                                              \
    do {                                                                                                               \
        const int32_t u = load_s32(p), v = load_s32(p + k);                                                            \
        const int32_t ul = __sxtb16(u), uh = sxtb16_ror8(u), vl = __sxtb16(v), vh = sxtb16_ror8(v);                  \
        int32_t xl = px[0], xh = px[1];                                                                                \
        a0 = __smlad(xh, uh, __smlad(xl, ul, a0));                                                                     \
        a1 = __smlad(xh, vh, __smlad(xl, vl, a1));                                                                     \
        xl = px[2];                                                                                                    \
        xh = px[3];                                                                                                    \
        b0 = __smlad(xh, uh, __smlad(xl, ul, b0));                                                                     \
        b1 = __smlad(xh, vh, __smlad(xl, vl, b1));                                                                     \
        p += 4;                                                                                                        \
        px += 4;                                                                                                       \
    } while (0)

/* The same group in assembly: v = channel 1's group (p + k), u = channel 0's (p, post-increment);
 * SXTB16 splits each into low (bytes 0, 2) and high (bytes 1, 3, in place) int16 pairs. */
#define SMLAD_2X2_ASM_GROUP                                                                                            \
    "ldr %[v], [%[p], %[k]]\n"                                                                                        \
    "ldr %[u], [%[p]], #4\n"                                                                                          \
    "sxtb16 %[ul], %[u]\n"                                                                                            \
    "sxtb16 %[u], %[u], ror #8\n"                                                                                     \
    "sxtb16 %[vl], %[v]\n"                                                                                            \
    "sxtb16 %[v], %[v], ror #8\n"                                                                                     \
    "ldrd %[xl], %[xh], [%[px]], #8\n"                                                                                \
    "smlad %[a0], %[xl], %[ul], %[a0]\n"                                                                              \
    "smlad %[a0], %[xh], %[u], %[a0]\n"                                                                               \
    "smlad %[a1], %[xl], %[vl], %[a1]\n"                                                                              \
    "smlad %[a1], %[xh], %[v], %[a1]\n"                                                                               \
    "ldrd %[xl], %[xh], [%[px]], #8\n"                                                                                \
    "smlad %[b0], %[xl], %[ul], %[b0]\n"                                                                              \
    "smlad %[b0], %[xh], %[u], %[b0]\n"                                                                               \
    "smlad %[b1], %[xl], %[vl], %[b1]\n"                                                                              \
    "smlad %[b1], %[xh], %[v], %[b1]\n"

/* Tokens a, b (interleaved pairs xab) x channels w0 and w0 + k;
 * out = {a.w0, a.w1, b.w0, b.w1}. */
/* Not inlined: its 14-register loop and the requantisation epilogue each get the whole register
 * file (inlined, GCC spills around both; the call costs fewer instructions than the spills). */
__attribute__((noinline)) static void dot_2x2(const int32_t *xab, const int8_t *w0, int32_t k, int32_t out[4])
{
    int32_t a0 = 0, a1 = 0, b0 = 0, b1 = 0;
    const int8_t *p = w0;
    const int32_t *px = xab;
    int32_t pairs = k >> 3;
    if (pairs > 0) {
        /* Two groups (32 MACs) per iteration in GNU assembly: the loop needs 14 registers (4
         * accumulators, 4 weight pairs, 2 activation words, 2 pointers, k, the counter) and
         * GCC 12 spills and reloads in the C form of this loop (1.5 instructions per MAC
         * measured, against 17 instructions per 16 MACs here). */
        int32_t u, v, ul, vl, xl, xh;
        __asm__ volatile(
            "1:\n"
            SMLAD_2X2_ASM_GROUP
            SMLAD_2X2_ASM_GROUP
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [p] "+r"(p), [px] "+r"(px),
              [n] "+r"(pairs), [u] "=&r"(u), [v] "=&r"(v), [ul] "=&r"(ul), [vl] "=&r"(vl), [xl] "=&r"(xl),
              [xh] "=&r"(xh)
            : [k] "r"(k)
            : "cc", "memory");
    }
    if (k & 4) {
        SMLAD_2X2_GROUP();
    }
    const int32_t rem = k & 3;
    if (rem) {
        a0 = tail_smlad(px, p, rem, a0);
        a1 = tail_smlad(px, p + k, rem, a1);
        b0 = tail_smlad(px + 2, p, rem, b0);
        b1 = tail_smlad(px + 2, p + k, rem, b1);
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

/* Channel c of two tokens: its bias, multiplier and shift loaded once, and for the usual right
 * shift (shift <= 0) the rounding's mask computed once for both (lumamba_requantize_right). */
static inline void store_2(int8_t *ya, int8_t *yb, int32_t c, int32_t acc_a, int32_t acc_b, const int32_t *bias,
                           const int32_t *multiplier, const int32_t *shift, int32_t y_zero_point)
{
    const int32_t b = bias[c], mul = multiplier[c], sh = shift[c];
    int32_t ra, rb;
    if (sh <= 0) {
        const uint32_t right = (uint32_t)(-sh);
        const int32_t mask = (int32_t)((1u << right) - 1u);
        ra = lumamba_requantize_right(acc_a + b, mul, right, mask);
        rb = lumamba_requantize_right(acc_b + b, mul, right, mask);
    } else {
        ra = lumamba_requantize(acc_a + b, mul, sh);
        rb = lumamba_requantize(acc_b + b, mul, sh);
    }
    ya[c] = lumamba_clamp_s8(ra + y_zero_point);
    yb[c] = lumamba_clamp_s8(rb + y_zero_point);
}

void lumamba_s8_gemm_2x2_smlad(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *multiplier,
                               const int32_t *shift, int32_t y_zero_point, int8_t *y, int32_t m, int32_t n,
                               int32_t k, int32_t *x_buf)
{
    int32_t t = 0;
    for (; t + 2 <= m; t += 2) {
        const int8_t *xa8 = x + t * k;
        const int8_t *xb8 = xa8 + k;
        widen_token(xa8, x_buf, k, 4);
        widen_token(xb8, x_buf + 2, k, 4);
        int8_t *ya = y + t * n;
        int8_t *yb = ya + n;
        int32_t c = 0;
        for (; c + 2 <= n; c += 2) {
            int32_t acc[4];
            dot_2x2(x_buf, w + c * k, k, acc);
            store_2(ya, yb, c, acc[0], acc[2], bias, multiplier, shift, y_zero_point);
            store_2(ya, yb, c + 1, acc[1], acc[3], bias, multiplier, shift, y_zero_point);
        }
        if (c < n) { /* odd n: the last channel against both tokens */
            int32_t acc[2];
            widen_token(xa8, x_buf, k, 2);
            dot_1x2(x_buf, w + c * k, w + c * k, k, acc);
            store(ya, c, acc[0], bias, multiplier, shift, y_zero_point);
            widen_token(xb8, x_buf, k, 2);
            dot_1x2(x_buf, w + c * k, w + c * k, k, acc);
            store(yb, c, acc[0], bias, multiplier, shift, y_zero_point);
        }
    }
    if (t < m) { /* the last token of an odd m, or the only one of a matrix-vector product */
        const int8_t *xa8 = x + t * k;
        widen_token(xa8, x_buf, k, 2);
        int8_t *ya = y + t * n;
        int32_t c = 0;
        for (; c + 4 <= n; c += 4) {
            int32_t acc[4];
            dot_1x4(x_buf, w + c * k, k, acc);
            for (int32_t j = 0; j < 4; j++) {
                store(ya, c + j, acc[j], bias, multiplier, shift, y_zero_point);
            }
        }
        for (; c < n; c += 2) {
            int32_t acc[2];
            const int8_t *w1 = (c + 1 < n) ? w + (c + 1) * k : w + c * k;
            dot_1x2(x_buf, w + c * k, w1, k, acc);
            store(ya, c, acc[0], bias, multiplier, shift, y_zero_point);
            if (c + 1 < n) {
                store(ya, c + 1, acc[1], bias, multiplier, shift, y_zero_point);
            }
        }
    }
}

#endif /* __ARM_FEATURE_DSP */
