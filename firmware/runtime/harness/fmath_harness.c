/*
 * Test and benchmark application of lumamba_fmath (lumamba/export/project/fmath_harness.py
 * builds it for a board, with fmath_cases.h generated next to it: the inputs as float32 bit
 * patterns).
 *
 * For each function it evaluates every input between two reads of the instruction counter and
 * prints one line:
 *   F <function> <n inputs> <insns> <fnv1a-32 of the results' bytes>
 * then "DONE 0". Output goes through printf: semihosting under QEMU, stdout on the host.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fmath_cases.h"
#include "lumamba_fmath.h"
#include "lumamba_runtime.h"

static float s_x[LUMAMBA_FMATH_N];
static float s_y[LUMAMBA_FMATH_N];

static uint32_t fnv1a(const float *p, int32_t n)
{
    const uint8_t *b = (const uint8_t *)p;
    uint32_t h = 2166136261u;
    for (int32_t i = 0; i < 4 * n; i++) {
        h = (h ^ b[i]) * 16777619u;
    }
    return h;
}

/* NaN payloads are unspecified (lumamba_fmath.h): every NaN is hashed as the quiet NaN 0x7FC00000 */
static void canonical_nan(float *y, int32_t n)
{
    const uint32_t qnan = 0x7FC00000u;
    for (int32_t i = 0; i < n; i++) {
        if (y[i] != y[i]) {
            memcpy(&y[i], &qnan, sizeof qnan);
        }
    }
}

#define LUMAMBA_FMATH_RUN(fn)                                                                  \
    do {                                                                                       \
        uint64_t insns;                                                                        \
        lumamba_counter_start();                                                               \
        for (int32_t i = 0; i < LUMAMBA_FMATH_N; i++) {                                        \
            s_y[i] = fn(s_x[i]);                                                               \
        }                                                                                      \
        insns = lumamba_counter_read();                                                        \
        canonical_nan(s_y, LUMAMBA_FMATH_N);                                                   \
        printf("F %s %ld %llu %08lx\n", #fn, (long)LUMAMBA_FMATH_N, (unsigned long long)insns, \
               (unsigned long)fnv1a(s_y, LUMAMBA_FMATH_N));                                    \
    } while (0)

int main(void)
{
    memcpy(s_x, lumamba_fmath_inputs, sizeof s_x);
    LUMAMBA_FMATH_RUN(lmb_expf);
    LUMAMBA_FMATH_RUN(lmb_sigmoidf);
    LUMAMBA_FMATH_RUN(lmb_softplusf);
    LUMAMBA_FMATH_RUN(lmb_erff);
    LUMAMBA_FMATH_RUN(lmb_atanf);
    printf("DONE 0\n");
    return 0;
}
