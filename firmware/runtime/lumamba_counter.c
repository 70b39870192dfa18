/*
 * Instruction counter, one implementation per architecture (see lumamba_runtime.h).
 *
 * Cortex-M (SysTick):
 *   QEMU models no cycles; with -icount shift=S it advances its virtual clock by exactly 2^S ns
 *   per executed instruction, and SysTick (clock source = core clock) counts that clock at the
 *   board's core frequency LUMAMBA_CPU_HZ. So SysTick ticks = insns * 2^S * HZ / 1e9, and
 *   insns = round(ticks * 1e9 / (HZ << S)). The two reads around a measurement each land on
 *   an instruction boundary but at an unknown phase of the tick clock, so the tick difference
 *   is off by less than one tick; rounding recovers the exact instruction count only if one
 *   instruction spans more than two ticks, hence the build check below (mps2-an386 at 25 MHz
 *   and mps3-an547 at 32 MHz use S = 7: 3.2 and 4.096 ticks per instruction).
 *   SysTick is 24 bits wide, about 5 M instructions per wrap at these rates, and inference runs
 *   for billions: its interrupt counts the wraps. The handler's 5 instructions per wrap are
 *   part of the count (a few per million), exactly as they would run on silicon.
 *   On silicon (LUMAMBA_QEMU_ICOUNT_SHIFT undefined) the same code returns core clock cycles.
 *
 * RISC-V (minstret):
 *   The retired-instruction CSR, read as two 32-bit halves. QEMU returns its virtual clock
 *   (2^S ns per instruction under -icount shift=S) there, hence the final shift; the riscv32
 *   profile uses S = 0. Without -icount QEMU returns host time instead: the profile always sets it.
 *
 * Host: no counter; lumamba_counter_read() returns 0.
 */
#include "lumamba_runtime.h"

#if defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u) /* SysTick control and status */
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u) /* SysTick reload value */
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u) /* SysTick current value, counts down */
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u) /* interrupt control and state */

#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CORE (1u << 2)
#define SCB_ICSR_PENDSTSET (1u << 26)

#define SYSTICK_PERIOD (1u << 24) /* ticks per wrap with the largest reload value */

#ifdef LUMAMBA_QEMU_ICOUNT_SHIFT
#ifndef LUMAMBA_CPU_HZ
#error "LUMAMBA_CPU_HZ (the emulated SysTick clock) must be defined with LUMAMBA_QEMU_ICOUNT_SHIFT"
#endif
/* D = HZ * 2^S, so that ticks = insns * D / 1e9. */
#define LUMAMBA_TICKS_DENOMINATOR ((uint64_t)(LUMAMBA_CPU_HZ) << (LUMAMBA_QEMU_ICOUNT_SHIFT))
/* Exact recovery needs more than 2 ticks per instruction (see above); the bound below it keeps
 * the 64-bit remainder product in ticks_to_insns() from overflowing. C99 has no static_assert. */
typedef char lumamba_check_ticks_per_insn_above_2[(LUMAMBA_TICKS_DENOMINATOR > 2000000000ull) ? 1 : -1];
typedef char lumamba_check_ticks_product_fits[(LUMAMBA_TICKS_DENOMINATOR < 18000000000ull) ? 1 : -1];
#endif

static volatile uint32_t s_wraps;
static uint64_t s_start_ticks;

/* SysTick exception handler; the name is the one in picolibc's vector table. */
void arm_systick_isr(void);
void arm_systick_isr(void)
{
    s_wraps = s_wraps + 1u;
}

static uint64_t systick_ticks(void)
{
    for (;;) {
        uint32_t wraps = s_wraps;
        uint32_t value = SYST_CVR;
        /* Consistent only if no wrap happened between the two reads of s_wraps and none is
         * pending (counted in hardware but not yet by the handler); otherwise read again once
         * the handler has run. */
        if ((SCB_ICSR & SCB_ICSR_PENDSTSET) == 0u && wraps == s_wraps) {
            return (uint64_t)wraps * SYSTICK_PERIOD + (SYSTICK_PERIOD - 1u - value);
        }
    }
}

void lumamba_counter_start(void)
{
    SYST_CSR = 0u;
    SYST_RVR = SYSTICK_PERIOD - 1u;
    SYST_CVR = 0u; /* any write clears the current value */
    s_wraps = 0u;
    SYST_CSR = SYST_CSR_CLKSOURCE_CORE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
    /* The counter reads 0 until its first tick loads the reload value. */
    while (SYST_CVR == 0u) {
    }
    s_start_ticks = systick_ticks();
}

uint64_t lumamba_counter_read(void)
{
    uint64_t ticks = systick_ticks() - s_start_ticks;
#ifdef LUMAMBA_QEMU_ICOUNT_SHIFT
    /* insns = round(ticks * 1e9 / D), split so that no product exceeds 64 bits. */
    const uint64_t ns_per_s = 1000000000u;
    const uint64_t d = LUMAMBA_TICKS_DENOMINATOR;
    return (ticks / d) * ns_per_s + ((ticks % d) * ns_per_s + d / 2u) / d;
#else
    return ticks;
#endif
}

#elif defined(__riscv)

#ifndef LUMAMBA_QEMU_ICOUNT_SHIFT
#define LUMAMBA_QEMU_ICOUNT_SHIFT 0
#endif

static uint64_t s_start_instret;

static uint64_t read_minstret(void)
{
    uint32_t hi;
    uint32_t lo;
    uint32_t hi_again;
    /* Read high, low, high: if the low half carried into the high half in between, retry.
     * ".option arch" enables Zicsr for these lines only: -march=..._zicsr would select no
     * picolibc multilib. */
    do {
        __asm__ volatile(".option push\n"
                         ".option arch, +zicsr\n"
                         "csrr %0, minstreth\n"
                         "csrr %1, minstret\n"
                         "csrr %2, minstreth\n"
                         ".option pop\n"
                         : "=r"(hi), "=r"(lo), "=r"(hi_again));
    } while (hi != hi_again);
    return ((uint64_t)hi << 32) | lo;
}

void lumamba_counter_start(void)
{
    s_start_instret = read_minstret();
}

uint64_t lumamba_counter_read(void)
{
    return (read_minstret() - s_start_instret) >> LUMAMBA_QEMU_ICOUNT_SHIFT;
}

#else /* host */

void lumamba_counter_start(void)
{
}

uint64_t lumamba_counter_read(void)
{
    return 0u;
}

#endif
