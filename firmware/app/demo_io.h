/*
 * Sample input of the demo application (demo_main.c): the hooks a real board fills in.
 *
 * Every function is weak. The defaults poll the UART of the emulated boards (QEMU's
 * mps2-an386 CMSDK UART0, mps3-an547 CMSDK UART0, virt's NS16550A); with LUMAMBA_REAL_CHIP
 * defined (the chip builds, `make demo-app CHIP=...`) they do nothing, and a board port
 * overrides them in its own source file:
 *
 *   - framed bytes from a UART (or USB CDC, BLE, ...): lumamba_board_read_byte(), from a
 *     DMA ring or the RX interrupt's FIFO;
 *   - samples straight from an ADC driver: lumamba_board_read_samples(), unframed.
 */
#ifndef LUMAMBA_DEMO_IO_H
#define LUMAMBA_DEMO_IO_H

#include <stddef.h>
#include <stdint.h>

/* Called once before the loop: clocks, pins, UART or ADC set-up. */
void lumamba_board_input_init(void);

/* One received byte of the framed stream into *byte: returns 1, or 0 if none is waiting. */
int lumamba_board_read_byte(uint8_t *byte);

/* Up to max_instants instants of n_channels int16 counts each, instant-major, straight from an
 * ADC (no framing); returns the number written, 0 if none. */
size_t lumamba_board_read_samples(int16_t *instants, size_t max_instants, size_t n_channels);

/* Bytes the input hardware lost so far (UART receive overruns); 0 if it cannot tell. */
uint32_t lumamba_board_input_overruns(void);

#endif /* LUMAMBA_DEMO_IO_H */
