/*
 * Test harness: runs the generated model on windows read from a binary file, for the sanitizer
 * test (tests/test_sanitizers.py). The file holds n windows of LUMAMBA_N_CHANNELS x
 * LUMAMBA_N_SAMPLES float32 values each, native byte order. Prints one line per window:
 *
 *   <window> <status> <hex logit> ...     logits as IEEE-754 bit patterns
 *
 * Exits 0 when every window was read and run (whatever the model's status), 1 on I/O errors.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lumamba_runtime.h"
#include "model.h"

#define WINDOW_VALUES ((size_t)LUMAMBA_N_CHANNELS * LUMAMBA_N_SAMPLES)

static float window[WINDOW_VALUES];
static float logits[LUMAMBA_N_CLASSES];

int main(int argc, char **argv)
{
    FILE *in;
    unsigned long index = 0;

    if (argc != 2 || (in = fopen(argv[1], "rb")) == NULL) {
        fprintf(stderr, "usage: window_runner WINDOWS.f32\n");
        return 1;
    }
    if (lumamba_init() != LUMAMBA_OK) {
        fclose(in);
        return 1;
    }
    while (fread(window, sizeof window[0], WINDOW_VALUES, in) == WINDOW_VALUES) {
        size_t c;
        int status = lumamba_infer(window, logits);
        printf("%lu %d", index++, status);
        for (c = 0; c < LUMAMBA_N_CLASSES; ++c) {
            uint32_t bits;
            memcpy(&bits, &logits[c], sizeof bits);
            printf(" %08lx", (unsigned long)bits);
        }
        printf("\n");
    }
    fclose(in);
    return 0;
}
