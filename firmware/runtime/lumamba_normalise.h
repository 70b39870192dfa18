/*
 * LuMamba input normalisation on the device: int16 ADC counts -> the float32 window the model
 * was trained on, by the method recorded with the model (lumamba/normalise.py, manifest.json's
 * "preprocess", model.h's LUMAMBA_NORMALISATION).
 *
 * x = count * uv_per_count microvolts; per channel over the window's n samples:
 *
 *   LUMAMBA_NORM_ZSCORE  (x - mean) / (unbiased std + 1e-8)
 *   LUMAMBA_NORM_ROBUST  (x - median) / (IQR / 1.349 + 1e-8), quantiles as np.percentile's
 *                        default (linear interpolation between order statistics)
 *   LUMAMBA_NORM_FIXED   x / 50
 *
 * Statistics are computed on the integer counts, exactly (int64 sums; order statistics found by
 * a two-pass radix selection with a 256-entry histogram on the stack, so no copy of the row and
 * no scratch that grows with n); only the final arithmetic is float32. The host mirror
 * lumamba.stream.reference.device_normalise repeats it bit for bit.
 *
 * Plain C99, no heap, no global state.
 */
#ifndef LUMAMBA_NORMALISE_H
#define LUMAMBA_NORMALISE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LUMAMBA_NORM_ZSCORE 0
#define LUMAMBA_NORM_ROBUST 1
#define LUMAMBA_NORM_FIXED 2

/* The constants of lumamba/normalise.py (EPS, IQR_TO_STD, FIXED_SCALE_UV). */
#define LUMAMBA_NORM_EPS 1e-8f
#define LUMAMBA_NORM_IQR_TO_STD 1.349f
#define LUMAMBA_NORM_FIXED_SCALE_UV 50.0f

/* Longest row the selection's uint16 histogram can count. */
#define LUMAMBA_NORM_MAX_SAMPLES 65535u

/*
 * One channel's statistics, so that a window can be normalised a piece at a time (a streamed
 * front end normalises one patch of every channel at a time and never holds the float window):
 * sample c becomes ((float)(k * c - offset) / (float)k * uv_per_count) / den, with k * c - offset
 * an exact integer (z-score: k = n, offset = the sum of the row; robust: k = 4, offset = 4 x the
 * median; fixed: k = 1, offset = 0, den = 50), the very arithmetic of lumamba_normalise_row_s16.
 */
typedef struct {
    int64_t offset;
    uint32_t k;
    float den;
} lumamba_norm_row_t;

/*
 * The statistics of one channel of n counts at counts[0], counts[stride], ...; returns as
 * lumamba_normalise_row_s16 (row in place of out).
 */
int lumamba_normalise_stats_s16(const int16_t *counts, size_t stride, uint32_t n, float uv_per_count,
                                int method, lumamba_norm_row_t *row);

/*
 * Normalise n counts of a channel (any run of its samples) with its statistics `row`
 * (from lumamba_normalise_stats_s16 with the same uv_per_count) into out[0..n-1]; bit for bit the
 * values lumamba_normalise_row_s16 gives those samples. No checks: the caller passes valid
 * pointers and the row lumamba_normalise_stats_s16 accepted.
 */
void lumamba_normalise_apply_s16(const int16_t *counts, size_t stride, uint32_t n, float uv_per_count,
                                 const lumamba_norm_row_t *row, float *out);

/*
 * Normalise one channel: n counts at counts[0], counts[stride], ..., counts[(n-1)*stride]
 * (stride 1: a channel-major row; stride n_channels: an instant-major block) into out[0..n-1].
 * Returns LUMAMBA_OK, LUMAMBA_ERR_NULL_POINTER, or LUMAMBA_ERR_BAD_ARGUMENT (unknown method,
 * uv_per_count not a positive finite number, stride 0, n < 2 or n > LUMAMBA_NORM_MAX_SAMPLES).
 */
int lumamba_normalise_row_s16(const int16_t *counts, size_t stride, uint32_t n, float uv_per_count,
                              int method, float *out);

/*
 * Normalise a window of n_channels rows of n counts, channel-major (the layout lumamba_infer()
 * takes), into out (n_channels * n floats). Returns as lumamba_normalise_row_s16.
 *
 * In place: counts may occupy the upper half of out's bytes, counts == (int16_t *)out +
 * n_channels * n (the model's lumamba_counts_buffer()), so the window needs no RAM of its own.
 * Rows go in order and a row's counts are all read for its statistics first; then float t of
 * row ch, bytes [4(ch*n + t), +4), overwrites only counts of rows before ch, or, in the last
 * row, its counts 2t - n and 2t - n + 1, both <= t and so already read.
 */
int lumamba_normalise_window_s16(const int16_t *counts, uint32_t n_channels, uint32_t n, float uv_per_count,
                                 int method, float *out);

#ifdef __cplusplus
}
#endif

#endif /* LUMAMBA_NORMALISE_H */
