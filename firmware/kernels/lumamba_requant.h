/*
 * Exact int8 requantisation for the micro-kernels: TFLite Micro's MultiplyByQuantizedMultiplier
 * followed by the output zero point and the int8 clamp, bit-exact with
 * lumamba.quant.fixed_point.requantize (the golden model's contract).
 *
 * MultiplyByQuantizedMultiplier(acc, m, s) with left = max(s, 0), right = max(-s, 0):
 *   x = saturate_int32(acc << left)
 *   h = SaturatingRoundingDoublingHighMul(x, m)   -- (x*m + nudge) / 2^31, truncated
 *   y = RoundingDivideByPOT(h, right)             -- round half away from zero
 *
 * Why the single-shift form below is exact: with ab = x * m (64 bits), gemmlowp's nudge is 2^30
 * for ab >= 0 and 1 - 2^30 otherwise, and the division truncates toward zero. For ab < 0,
 * trunc((ab + 1 - 2^30) / 2^31) = floor((ab + 1 - 2^30 + 2^31 - 1) / 2^31) = floor((ab + 2^30) / 2^31),
 * the same expression as for ab >= 0. So h = (ab + 2^30) >> 31 (arithmetic shift of the 64-bit
 * sum), which is SMULL + a 64-bit add + one funnel shift instead of a sign select and a C
 * division. The saturating case x = m = INT32_MIN cannot occur: quantised multipliers lie in
 * [2^30, 2^31) or are 0 (the code generator checks this).
 * RoundingDivideByPOT keeps gemmlowp's mask/threshold form (no branch, no 64-bit arithmetic).
 *
 * Plain C99; every function is static inline so each kernel gets its own copy in its epilogue.
 */
#ifndef LUMAMBA_REQUANT_H
#define LUMAMBA_REQUANT_H

#include <stdint.h>

#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT == 1
#include <arm_acle.h>
#endif

/* The right-shift case of lumamba_requantize (shift = -right <= 0) with mask = 2^right - 1 given:
 * a kernel computes the mask once per channel and reuses it for every token. */
static inline int32_t lumamba_requantize_right(int32_t x, int32_t multiplier, uint32_t right, int32_t mask)
{
    /* >> of a negative int64/int32 is implementation-defined in C99; every compiler this project
     * uses (gcc for Arm, RISC-V and the host) shifts arithmetically. */
    const int32_t h = (int32_t)(((int64_t)x * (int64_t)multiplier + ((int64_t)1 << 30)) >> 31);
    const int32_t threshold = (mask >> 1) + (h < 0 ? 1 : 0);
    return (h >> right) + ((h & mask) > threshold ? 1 : 0);
}

/* MultiplyByQuantizedMultiplier(acc, multiplier, shift); shift in [-31, 30]. Everything but the
 * rare left-shift branch stays in 32 bits, so the product is one SMULL (Arm) / MUL + MULH (RV32). */
static inline int32_t lumamba_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    if (shift > 0) {
        /* a multiplication, not a shift: a left shift of a negative value is undefined in C99 */
        const int64_t scaled = (int64_t)acc * ((int64_t)1 << shift);
        const int32_t x = scaled > INT32_MAX ? INT32_MAX : (scaled < INT32_MIN ? INT32_MIN : (int32_t)scaled);
        return lumamba_requantize_right(x, multiplier, 0u, 0);
    }
    const uint32_t right = (uint32_t)(-shift);
    return lumamba_requantize_right(acc, multiplier, right, (int32_t)((1u << right) - 1u)); /* right <= 31 */
}

/* y clamped to int8. */
static inline int8_t lumamba_clamp_s8(int32_t y)
{
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT == 1
    return (int8_t)__ssat(y, 8); /* one SSAT instead of two compares and moves */
#else
    return (int8_t)(y > 127 ? 127 : (y < -128 ? -128 : y));
#endif
}

/* acc (with the folded bias already added) -> int8: requantise, add the output zero point, clamp. */
static inline int8_t lumamba_requantize_s8(int32_t acc, int32_t multiplier, int32_t shift, int32_t y_zero_point)
{
    return lumamba_clamp_s8(lumamba_requantize(acc, multiplier, shift) + y_zero_point);
}

#endif /* LUMAMBA_REQUANT_H */
