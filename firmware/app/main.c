/*
 * Test application: runs the generated model on the windows of test_vectors.h and prints
 * the results in a line format that lumamba.export.qemu parses. The float32 windows go through
 * lumamba_infer(); then the int16 count windows (windows LUMAMBA_N_TEST_WINDOWS, ...) through
 * lumamba_infer_counts(), as firmware that owns its ADC samples calls it: copied into
 * lumamba_counts_buffer() (where an ADC driver or DMA would put them) and normalised there in
 * place, with the board profile's LUMAMBA_ADC_UV_PER_COUNT.
 *
 *   LUMAMBA <n_windows> <n_classes>     header (float and count windows together)
 *   LOGITS <window> <hex> ... <hex>     one IEEE-754 bit pattern per logit, so the host can
 *                                       compare exactly
 *   STATUS <window> <code> <name>       instead of LOGITS when lumamba_infer() failed
 *   INSNS <window> <count>              instructions of lumamba_infer() (boards with a counter)
 *   INIT <code> <name>                  only if lumamba_init() failed
 *   DONE <status>                       last line: 0 if every call succeeded, else the first
 *                                       failing status code; also the exit status
 *
 * Output goes through printf: semihosting under QEMU, stdout on the host.
 */
#include <stdio.h>
#include <string.h>

#include "lumamba_runtime.h"
#include "model.h"
#include "test_vectors.h"

#if LUMAMBA_N_TEST_COUNT_WINDOWS > 0 && !defined(LUMAMBA_ADC_UV_PER_COUNT)
#error "define LUMAMBA_ADC_UV_PER_COUNT (microvolts per int16 count): the board profile's adc.uv_per_count, which firmware/boards/<board>.mk passes"
#endif

static float logits[LUMAMBA_N_CLASSES];

static unsigned long float_bits(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return (unsigned long)bits;
}

static void print_logits(unsigned window)
{
    size_t c;
    printf("LOGITS %u", window);
    for (c = 0; c < LUMAMBA_N_CLASSES; ++c) {
        printf(" %08lx", float_bits(logits[c]));
    }
    printf("\n");
}

/* Print one window's result; returns its status. */
static int report(unsigned window, int status, uint64_t insns)
{
    if (status == LUMAMBA_OK) {
        print_logits(window);
    } else {
        printf("STATUS %u %d %s\n", window, status, lumamba_status_name(status));
    }
    if (LUMAMBA_HAVE_COUNTER) {
        printf("INSNS %u %llu\n", window, (unsigned long long)insns);
    }
    return status;
}

int main(void)
{
    int first_error = LUMAMBA_OK;
    unsigned w;
    int status;

    printf("LUMAMBA %u %u\n", (unsigned)(LUMAMBA_N_TEST_WINDOWS + LUMAMBA_N_TEST_COUNT_WINDOWS),
           (unsigned)LUMAMBA_N_CLASSES);
    status = lumamba_init();
    if (status != LUMAMBA_OK) {
        printf("INIT %d %s\nDONE %d\n", status, lumamba_status_name(status), status);
        return status;
    }
    for (w = 0; w < LUMAMBA_N_TEST_WINDOWS; ++w) {
        uint64_t insns;
        lumamba_counter_start();
        status = lumamba_infer(lumamba_test_windows[w], logits);
        insns = lumamba_counter_read();
        if (report(w, status, insns) != LUMAMBA_OK && first_error == LUMAMBA_OK) {
            first_error = status;
        }
    }
#if LUMAMBA_N_TEST_COUNT_WINDOWS > 0
    for (w = 0; w < LUMAMBA_N_TEST_COUNT_WINDOWS; ++w) {
        uint64_t insns;
        int16_t *counts = lumamba_counts_buffer();
        memcpy(counts, lumamba_test_windows_counts[w], LUMAMBA_COUNTS_BUFFER_BYTES);
        lumamba_counter_start();
        status = lumamba_infer_counts(counts, LUMAMBA_ADC_UV_PER_COUNT, logits);
        insns = lumamba_counter_read();
        if (report(LUMAMBA_N_TEST_WINDOWS + w, status, insns) != LUMAMBA_OK && first_error == LUMAMBA_OK) {
            first_error = status;
        }
    }
#endif
    printf("DONE %d\n", first_error);
    return first_error;
}
