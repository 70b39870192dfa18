/*
 * Host harness for tests/test_normalise_c.py: normalises a window of int16 counts read from
 * stdin with firmware/runtime/lumamba_normalise.c.
 *
 *   normalise_harness N_CHANNELS N_SAMPLES UV_PER_COUNT_BITS(hex) METHOD LAYOUT < counts
 *
 * counts: N_CHANNELS * N_SAMPLES little-endian int16, channel-major (LAYOUT "rows", normalised by
 * lumamba_normalise_window_s16) or instant-major (LAYOUT "instants", one
 * lumamba_normalise_row_s16 per channel with stride N_CHANNELS) or channel-major in the upper
 * half of the output's bytes (LAYOUT "in_place", as lumamba_counts_buffer()) or channel-major, a run of
 * PATCH samples of every channel at a time (LAYOUT "patches": lumamba_normalise_stats_s16 per channel,
 * then lumamba_normalise_apply_s16, as a streamed front end). Output: "STATUS <code>", then
 * "OUT <float32 bits...>" (channel-major) when the status is LUMAMBA_OK.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lumamba_normalise.h"
#include "lumamba_runtime.h"

#define MAX_VALUES (64u * 4096u)
#define MAX_CHANNELS 64u
#define PATCH 7u /* not a divisor of the test lengths: the last run is shorter */

static int16_t counts[MAX_VALUES];
static float out[MAX_VALUES];

int main(int argc, char **argv)
{
    unsigned long n_channels, n, bits, i;
    uint32_t u;
    float scale;
    int method;
    int status = LUMAMBA_OK;
    if (argc != 6) {
        fprintf(stderr, "usage: %s N_CHANNELS N_SAMPLES SCALE_BITS METHOD rows|instants\n", argv[0]);
        return 2;
    }
    n_channels = strtoul(argv[1], NULL, 10);
    n = strtoul(argv[2], NULL, 10);
    bits = strtoul(argv[3], NULL, 16);
    method = atoi(argv[4]);
    u = (uint32_t)bits;
    memcpy(&scale, &u, sizeof scale);
    if (n_channels * n > MAX_VALUES || fread(counts, sizeof counts[0], n_channels * n, stdin) != n_channels * n) {
        fprintf(stderr, "bad arguments or short input\n");
        return 2;
    }
    if (strcmp(argv[5], "rows") == 0) {
        status = lumamba_normalise_window_s16(counts, (uint32_t)n_channels, (uint32_t)n, scale, method, out);
    } else if (strcmp(argv[5], "in_place") == 0) {
        int16_t *upper = (int16_t *)out + n_channels * n;
        memcpy(upper, counts, n_channels * n * sizeof counts[0]);
        status = lumamba_normalise_window_s16(upper, (uint32_t)n_channels, (uint32_t)n, scale, method, out);
    } else if (strcmp(argv[5], "patches") == 0) {
        static lumamba_norm_row_t rows[MAX_CHANNELS];
        unsigned long t0;
        for (i = 0; i < n_channels && status == LUMAMBA_OK; ++i) {
            status = i < MAX_CHANNELS ? lumamba_normalise_stats_s16(counts + i * n, 1u, (uint32_t)n, scale, method, &rows[i])
                                      : LUMAMBA_ERR_BAD_ARGUMENT;
        }
        for (t0 = 0; t0 < n && status == LUMAMBA_OK; t0 += PATCH) {
            uint32_t run = (uint32_t)(n - t0 < PATCH ? n - t0 : PATCH);
            for (i = 0; i < n_channels; ++i) {
                lumamba_normalise_apply_s16(counts + i * n + t0, 1u, run, scale, &rows[i], out + i * n + t0);
            }
        }
    } else {
        for (i = 0; i < n_channels && status == LUMAMBA_OK; ++i) {
            status = lumamba_normalise_row_s16(counts + i, n_channels, (uint32_t)n, scale, method, out + i * n);
        }
    }
    printf("STATUS %d\n", status);
    if (status == LUMAMBA_OK) {
        printf("OUT");
        for (i = 0; i < n_channels * n; ++i) {
            memcpy(&u, &out[i], sizeof u);
            printf(" %08lx", (unsigned long)u);
        }
        printf("\n");
    }
    return 0;
}
