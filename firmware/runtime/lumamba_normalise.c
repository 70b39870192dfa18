/*
 * Input normalisation on the device: int16 counts -> float32 model input (see lumamba_normalise.h).
 */
#include "lumamba_normalise.h"

#include <math.h>
#include <string.h>

#include "lumamba_runtime.h"

/* Count t of a row. Read through memcpy (an access that may alias anything), so that the
 * compiler keeps every read before the float stores that follow it: the in-place case of
 * lumamba_normalise.h writes floats over counts that have been read. */
static int16_t count_at(const int16_t *counts, size_t stride, uint32_t t)
{
    int16_t c;
    memcpy(&c, &counts[(size_t)t * stride], sizeof c);
    return c;
}

/* int16 -> uint16 in the same order, for the radix selection. */
static uint16_t biased(int16_t c)
{
    return (uint16_t)((int32_t)c + 32768);
}

static int16_t unbiased(uint32_t u)
{
    return (int16_t)((int32_t)u - 32768);
}

/* The bin holding the *rank-th smallest value (0-based) of a histogram; *rank becomes the rank
 * inside that bin. The caller guarantees *rank < the histogram's total. */
static unsigned find_bin(const uint16_t hist[256], uint32_t *rank)
{
    unsigned bin = 0u;
    while (*rank >= hist[bin]) {
        *rank -= hist[bin];
        ++bin;
    }
    return bin;
}

/*
 * Order statistics of one row by radix selection: a histogram of the high bytes (built once),
 * then, per rank, a histogram of the low bytes of the values in the rank's high-byte bin (kept
 * while the next rank falls in the same bin, as neighbouring ranks usually do).
 */
typedef struct {
    const int16_t *counts;
    size_t stride;
    uint32_t n;
    uint16_t high[256];
    uint16_t low[256];
    int low_of; /* high byte whose low-byte histogram `low` holds; -1: none */
} selector_t;

static void selector_init(selector_t *s, const int16_t *counts, size_t stride, uint32_t n)
{
    uint32_t t;
    unsigned b;
    s->counts = counts;
    s->stride = stride;
    s->n = n;
    s->low_of = -1;
    for (b = 0; b < 256u; ++b) {
        s->high[b] = 0u;
    }
    for (t = 0; t < n; ++t) {
        s->high[biased(counts[(size_t)t * stride]) >> 8]++;
    }
}

/* The rank-th smallest count (0 <= rank < n). */
static int16_t selector_rank(selector_t *s, uint32_t rank)
{
    unsigned high = find_bin(s->high, &rank);
    unsigned low;
    if (s->low_of != (int)high) {
        uint32_t t;
        unsigned b;
        for (b = 0; b < 256u; ++b) {
            s->low[b] = 0u;
        }
        for (t = 0; t < s->n; ++t) {
            uint16_t u = biased(s->counts[(size_t)t * s->stride]);
            if ((unsigned)(u >> 8) == high) {
                s->low[u & 0xFFu]++;
            }
        }
        s->low_of = (int)high;
    }
    low = find_bin(s->low, &rank);
    return unbiased(((uint32_t)high << 8) | low);
}

/* Four times the quarter-th quantile (quarter 1, 2, 3) as np.percentile's linear interpolation
 * defines it: position q*(n-1) = lo + frac with frac in {0, 1/4, 1/2, 3/4}; the value
 * x[lo] + (x[lo+1] - x[lo]) * frac is a multiple of 1/4, so four times it is an exact integer. */
static int32_t quantile_x4(selector_t *s, uint32_t quarter)
{
    uint32_t pos_x4 = quarter * (s->n - 1u);
    uint32_t lo = pos_x4 / 4u;
    int32_t frac_x4 = (int32_t)(pos_x4 % 4u);
    int32_t a = selector_rank(s, lo);
    int32_t b = frac_x4 != 0 ? selector_rank(s, lo + 1u) : a;
    return 4 * a + (b - a) * frac_x4;
}

/* The statistics of each method, as lumamba_norm_row_t: centred = (k * count - offset) / k with
 * k * count - offset an exact integer, then out = (centred * scale) / den. */
static void zscore_stats(const int16_t *counts, size_t stride, uint32_t n, float scale, lumamba_norm_row_t *row)
{
    int64_t s1 = 0;
    int64_t s2 = 0;
    float var;
    uint32_t t;
    for (t = 0; t < n; ++t) {
        int32_t c = counts[(size_t)t * stride];
        s1 += c;
        s2 += (int64_t)c * c;
    }
    /* n^2 var and n (x - mean) are exact integers: one rounding each, however large the DC level. */
    var = (float)((int64_t)n * s2 - s1 * s1) / (float)((int64_t)n * (int64_t)(n - 1u));
    row->k = n;
    row->offset = s1;
    row->den = sqrtf(var) * scale + LUMAMBA_NORM_EPS;
}

static void robust_stats(const int16_t *counts, size_t stride, uint32_t n, float scale, lumamba_norm_row_t *row)
{
    selector_t s;
    int32_t q1;
    int32_t q3;
    selector_init(&s, counts, stride, n);
    q1 = quantile_x4(&s, 1u);
    row->offset = quantile_x4(&s, 2u);   /* 4 * median: (4 c - 4 median) / 4 = c - median, exact */
    q3 = quantile_x4(&s, 3u);
    row->k = 4u;
    row->den = (((float)(q3 - q1) * 0.25f) * scale) / LUMAMBA_NORM_IQR_TO_STD + LUMAMBA_NORM_EPS;
}

static int check_arguments(const void *counts, const void *out, size_t stride, uint32_t n, float uv_per_count)
{
    if (counts == NULL || out == NULL) {
        return LUMAMBA_ERR_NULL_POINTER;
    }
    if (stride == 0u || n < 2u || n > LUMAMBA_NORM_MAX_SAMPLES ||
        lumamba_check_finite(&uv_per_count, 1u) != LUMAMBA_OK || !(uv_per_count > 0.0f)) {
        return LUMAMBA_ERR_BAD_ARGUMENT;
    }
    return LUMAMBA_OK;
}

int lumamba_normalise_stats_s16(const int16_t *counts, size_t stride, uint32_t n, float uv_per_count,
                                int method, lumamba_norm_row_t *row)
{
    int status = check_arguments(counts, row, stride, n, uv_per_count);
    if (status != LUMAMBA_OK) {
        return status;
    }
    switch (method) {
    case LUMAMBA_NORM_ZSCORE: zscore_stats(counts, stride, n, uv_per_count, row); return LUMAMBA_OK;
    case LUMAMBA_NORM_ROBUST: robust_stats(counts, stride, n, uv_per_count, row); return LUMAMBA_OK;
    case LUMAMBA_NORM_FIXED:
        row->k = 1u;
        row->offset = 0;
        row->den = LUMAMBA_NORM_FIXED_SCALE_UV;
        return LUMAMBA_OK;
    default: return LUMAMBA_ERR_BAD_ARGUMENT;
    }
}

void lumamba_normalise_apply_s16(const int16_t *counts, size_t stride, uint32_t n, float uv_per_count,
                                 const lumamba_norm_row_t *row, float *out)
{
    uint32_t t;
    for (t = 0; t < n; ++t) {
        float centred = (float)((int64_t)row->k * count_at(counts, stride, t) - row->offset) / (float)row->k;
        out[t] = (centred * uv_per_count) / row->den;
    }
}

int lumamba_normalise_row_s16(const int16_t *counts, size_t stride, uint32_t n, float uv_per_count,
                              int method, float *out)
{
    lumamba_norm_row_t row;
    int status = check_arguments(counts, out, stride, n, uv_per_count);
    if (status != LUMAMBA_OK) {
        return status;
    }
    status = lumamba_normalise_stats_s16(counts, stride, n, uv_per_count, method, &row);
    if (status == LUMAMBA_OK) {
        lumamba_normalise_apply_s16(counts, stride, n, uv_per_count, &row, out);
    }
    return status;
}

int lumamba_normalise_window_s16(const int16_t *counts, uint32_t n_channels, uint32_t n, float uv_per_count,
                                 int method, float *out)
{
    uint32_t ch;
    if (counts == NULL || out == NULL) {
        return LUMAMBA_ERR_NULL_POINTER;
    }
    for (ch = 0; ch < n_channels; ++ch) {
        int status = lumamba_normalise_row_s16(counts + (size_t)ch * n, 1u, n, uv_per_count, method,
                                               out + (size_t)ch * n);
        if (status != LUMAMBA_OK) {
            return status;
        }
    }
    return LUMAMBA_OK;
}
