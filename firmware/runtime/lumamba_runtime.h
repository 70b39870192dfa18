/*
 * LuMamba firmware runtime: status codes, input validation and an instruction counter.
 *
 * Plain C99, no heap, no global state except the counter's. The generated model (model.c)
 * returns these status codes from lumamba_init() and lumamba_infer().
 */
#ifndef LUMAMBA_RUNTIME_H
#define LUMAMBA_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. 0 is success; every other value names one failure. */
#define LUMAMBA_OK 0
#define LUMAMBA_ERR_NONFINITE_INPUT 1 /* the input window holds a NaN or an infinity */
#define LUMAMBA_ERR_NOT_INITIALISED 2 /* lumamba_infer() called before lumamba_init() */
#define LUMAMBA_ERR_NULL_POINTER 3    /* a required pointer argument is NULL */
#define LUMAMBA_ERR_INTERNAL 4        /* a static buffer bound was exceeded (a code-generator bug) */
#define LUMAMBA_ERR_NONFINITE_OUTPUT 5 /* finite input, but a logit overflowed to infinity or NaN */
#define LUMAMBA_ERR_BAD_ARGUMENT 6     /* a scale that is not a positive finite number, or an unknown method */

/* Short upper-case name of a status code ("OK", "NONFINITE_INPUT", ...); "UNKNOWN" otherwise. */
const char *lumamba_status_name(int status);

/*
 * Returns LUMAMBA_OK if all n values are finite, LUMAMBA_ERR_NONFINITE_INPUT otherwise.
 * Tests the exponent bits, so it keeps working under -ffinite-math-only, where isfinite() may
 * be folded to "true".
 */
int lumamba_check_finite(const float *x, size_t n);

/*
 * Instruction counter.
 *
 * lumamba_counter_start() zeroes the counter; lumamba_counter_read() returns the number of
 * instructions executed since, including its own and those of the counter's interrupt
 * handler. What is counted depends on the build (lumamba_counter.c explains each):
 *   Cortex-M under QEMU -icount (LUMAMBA_QEMU_ICOUNT_SHIFT defined): exact instructions,
 *     derived from SysTick, which QEMU clocks from the instruction count.
 *   Cortex-M on silicon (no LUMAMBA_QEMU_ICOUNT_SHIFT): SysTick core clock cycles.
 *   RISC-V: minstret, retired instructions (QEMU needs -icount shift=0 for it to be exact).
 *   anything else (host): always 0, and LUMAMBA_HAVE_COUNTER is 0.
 * On Cortex-M the counter uses the SysTick interrupt: call it with interrupts enabled.
 */
#if (defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M') || defined(__riscv)
#define LUMAMBA_HAVE_COUNTER 1
#else
#define LUMAMBA_HAVE_COUNTER 0
#endif

void lumamba_counter_start(void);
uint64_t lumamba_counter_read(void);

#ifdef __cplusplus
}
#endif

#endif /* LUMAMBA_RUNTIME_H */
