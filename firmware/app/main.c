/*
 * Test application: runs the generated model on the windows of test_vectors.h and prints
 * the results in a line format that lumamba.export.qemu parses:
 *
 *   LUMAMBA <n_windows> <n_classes>     header
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

int main(void)
{
    int first_error = LUMAMBA_OK;
    unsigned w;
    int status;

    printf("LUMAMBA %u %u\n", (unsigned)LUMAMBA_N_TEST_WINDOWS, (unsigned)LUMAMBA_N_CLASSES);
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
        if (status == LUMAMBA_OK) {
            print_logits(w);
        } else {
            printf("STATUS %u %d %s\n", w, status, lumamba_status_name(status));
            if (first_error == LUMAMBA_OK) {
                first_error = status;
            }
        }
        if (LUMAMBA_HAVE_COUNTER) {
            printf("INSNS %u %llu\n", w, (unsigned long long)insns);
        }
    }
    printf("DONE %d\n", first_error);
    return first_error;
}
