/*
 * Test and benchmark application of the micro-kernels (lumamba/kernels_build.py builds it for
 * a board, with kernel_cases.h generated next to it).
 *
 * For each compiled-in case and each kernel form enabled with -DLUMAMBA_HARNESS_<FORM>, it runs
 * the kernel between two reads of the instruction counter and prints one line:
 *   Y <form> <case> <insns> <fnv1a-32 of y> [<y as hex bytes, for small outputs>]
 * then "DONE 0". Output goes through printf: semihosting under QEMU, stdout on the host.
 */
#include <stdint.h>
#include <stdio.h>

#include "kernel_cases.h"
#include "lumamba_kernels.h"
#include "lumamba_runtime.h"

#define HEX_LIMIT 4096 /* outputs up to this many bytes are printed in full */

static int8_t s_y[LUMAMBA_HARNESS_MAX_Y];
#ifdef LUMAMBA_HARNESS_SMLAD
static int32_t s_x_buf[LUMAMBA_HARNESS_MAX_BUF + 1];
#endif

static uint32_t fnv1a(const int8_t *p, int32_t n)
{
    uint32_t h = 2166136261u;
    for (int32_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    }
    return h;
}

static void report(const char *form, int32_t index, const struct lumamba_harness_case *c, uint64_t insns)
{
    const int32_t len = c->m * c->n;
    printf("Y %s %ld %llu %08lx", form, (long)index, (unsigned long long)insns, (unsigned long)fnv1a(s_y, len));
    if (len <= HEX_LIMIT) {
        printf(" ");
        for (int32_t i = 0; i < len; i++) {
            printf("%02x", (unsigned)(uint8_t)s_y[i]);
        }
    }
    printf("\n");
}

int main(void)
{
    for (int32_t i = 0; i < LUMAMBA_HARNESS_N_CASES; i++) {
        const struct lumamba_harness_case *c = &lumamba_harness_cases[i];
        uint64_t insns;
        (void)insns;
#ifdef LUMAMBA_HARNESS_C
        lumamba_counter_start();
        lumamba_s8_gemm_4x4_c(c->x, c->w_c4, c->bias, c->multiplier, c->shift, c->y_zero_point, s_y, c->m, c->n, c->k);
        insns = lumamba_counter_read();
        report("c_4x4", i, c, insns);
#endif
#ifdef LUMAMBA_HARNESS_SMLAD
        lumamba_counter_start();
        lumamba_s8_gemm_2x2_smlad(c->x, c->w_smlad, c->bias, c->multiplier, c->shift, c->y_zero_point, s_y, c->m,
                                  c->n, c->k, s_x_buf);
        insns = lumamba_counter_read();
        report("smlad_2x2", i, c, insns);
#endif
#ifdef LUMAMBA_HARNESS_MVE
        lumamba_counter_start();
        lumamba_s8_gemm_4x2_mve(c->x, c->w, c->bias, c->multiplier, c->shift, c->y_zero_point, s_y, c->m, c->n, c->k);
        insns = lumamba_counter_read();
        report("mve_4x2", i, c, insns);
#endif
    }
    printf("DONE 0\n");
    return 0;
}
