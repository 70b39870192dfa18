/*
 * Standard output of the demo on a real chip (LUMAMBA_REAL_CHIP): the emulated boards print
 * through semihosting, which stops a chip that has no debugger attached, so the chip builds link
 * without it and picolibc's stdout calls lumamba_board_putc() instead. The default drops the
 * characters; a board port overrides it to write its UART's TX register, SEGGER RTT or USB CDC.
 */
#ifdef LUMAMBA_REAL_CHIP
#include <stdio.h>
#include <stdlib.h>

void lumamba_board_putc(char c);
__attribute__((weak)) void lumamba_board_putc(char c)
{
    (void)c;
}

static int board_putc(char c, FILE *file)
{
    (void)file;
    lumamba_board_putc(c);
    return (unsigned char)c;
}

static FILE s_board_stdout = FDEV_SETUP_STREAM(board_putc, NULL, NULL, _FDEV_SETUP_WRITE);
FILE *const stdout = &s_board_stdout;
FILE *const stderr = &s_board_stdout;
FILE *const stdin = NULL;

/* main() returned (the stream ended): stop here; a watchdog or the user resets the chip. */
void _exit(int status);
void _exit(int status)
{
    (void)status;
    for (;;) {
    }
}
#else
typedef int lumamba_demo_stdio_unused; /* semihosting or the host C library prints */
#endif
