/*
 * Default (weak) sample input of the demo application: see demo_io.h.
 *
 * The emulated boards poll their first UART, which QEMU connects to the host with
 * `-serial stdio` (lumamba-stream does this). QEMU hands the guest a byte only once it has
 * taken the previous one, so on the emulator no byte is ever lost: while the model runs the
 * host's bytes wait in the pipe. On silicon a UART keeps receiving during inference; a board port
 * drains it from its RX interrupt or DMA into a FIFO that lumamba_board_read_byte() reads, and
 * sizes that FIFO for the inference time (README, "Streaming demo").
 */
#include "demo_io.h"

#define WEAK __attribute__((weak))

#if !defined(LUMAMBA_REAL_CHIP) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
/* CMSDK APB UART (Arm DDI 0479): mps2-an386 UART0 at 0x40004000; mps3-an547 (Armv8.1-M, boots
 * secure) UART0 at its secure alias 0x59303000. */
#if __ARM_ARCH >= 8 /* the Cortex-M55 profile */
#define UART_BASE 0x59303000u
#else
#define UART_BASE 0x40004000u
#endif
#define UART_DATA (*(volatile uint32_t *)(UART_BASE + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(UART_BASE + 0x04u))
#define UART_CTRL (*(volatile uint32_t *)(UART_BASE + 0x08u))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART_BASE + 0x10u))
#define UART_STATE_RXFULL (1u << 1)
#define UART_STATE_RXOVERRUN (1u << 3)
#define UART_CTRL_TXEN (1u << 0)
#define UART_CTRL_RXEN (1u << 1)

static uint32_t s_overruns;

WEAK void lumamba_board_input_init(void)
{
    UART_BAUDDIV = 16u; /* the smallest divisor the CMSDK UART accepts */
    UART_CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN;
}

WEAK int lumamba_board_read_byte(uint8_t *byte)
{
    uint32_t state = UART_STATE;
    if (state & UART_STATE_RXOVERRUN) {
        s_overruns++;
        UART_STATE = UART_STATE_RXOVERRUN; /* write one to clear */
    }
    if ((state & UART_STATE_RXFULL) == 0u) {
        return 0;
    }
    *byte = (uint8_t)UART_DATA;
    return 1;
}

WEAK uint32_t lumamba_board_input_overruns(void)
{
    return s_overruns;
}

#elif !defined(LUMAMBA_REAL_CHIP) && defined(__riscv)
/* QEMU virt: NS16550A at 0x10000000, byte-wide registers. */
#define UART_BASE 0x10000000u
#define UART_RBR (*(volatile uint8_t *)(UART_BASE + 0u))
#define UART_FCR (*(volatile uint8_t *)(UART_BASE + 2u))
#define UART_LSR (*(volatile uint8_t *)(UART_BASE + 5u))
#define UART_LSR_DR (1u << 0)
#define UART_LSR_OE (1u << 1)

static uint32_t s_overruns;

WEAK void lumamba_board_input_init(void)
{
    UART_FCR = 0x07u; /* enable and clear the FIFOs */
}

WEAK int lumamba_board_read_byte(uint8_t *byte)
{
    uint8_t lsr = UART_LSR; /* reading LSR clears OE */
    if (lsr & UART_LSR_OE) {
        s_overruns++;
    }
    if ((lsr & UART_LSR_DR) == 0u) {
        return 0;
    }
    *byte = UART_RBR;
    return 1;
}

WEAK uint32_t lumamba_board_input_overruns(void)
{
    return s_overruns;
}

#elif !defined(LUMAMBA_REAL_CHIP) && !defined(__arm__) && !defined(__riscv)
/* The host board: the framed stream on stdin (blocking reads; the stream ends with its
 * end-of-stream frame, an early EOF ends the program with status 3). */
#include <stdio.h>
#include <stdlib.h>

WEAK void lumamba_board_input_init(void)
{
}

WEAK int lumamba_board_read_byte(uint8_t *byte)
{
    int c = getchar();
    if (c == EOF) {
        printf("END eof=1\n");
        exit(3);
    }
    *byte = (uint8_t)c;
    return 1;
}

WEAK uint32_t lumamba_board_input_overruns(void)
{
    return 0u;
}

#else
/* A real chip: no input until a board port overrides these. */
WEAK void lumamba_board_input_init(void)
{
}

WEAK int lumamba_board_read_byte(uint8_t *byte)
{
    (void)byte;
    return 0;
}

WEAK uint32_t lumamba_board_input_overruns(void)
{
    return 0u;
}
#endif

WEAK size_t lumamba_board_read_samples(int16_t *instants, size_t max_instants, size_t n_channels)
{
    (void)instants;
    (void)max_instants;
    (void)n_channels;
    return 0u;
}
