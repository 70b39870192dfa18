/*
 * Entry point of the emulated Cortex-M boards.
 *
 * At reset an M-profile core loads its stack pointer and first PC from the vector table at
 * VTOR's reset value, address 0 on both QEMU machines. Their memory at 0 is too small for a
 * model's weights (4 MiB on mps2-an386, 512 KiB ITCM on mps3-an547), so the profiles place the
 * image in a larger RAM instead and QEMU starts it with `-device loader,file=...,cpu-num=0`,
 * which jumps to the ELF entry, this function, with no valid stack. It sets the stack pointer
 * and VTOR (so that the SysTick interrupt finds picolibc's vector table) and continues in
 * picolibc's _start. On silicon the vector table sits where the core boots and this function
 * is never called.
 */
void lumamba_boot(void);

__attribute__((naked, noreturn)) void lumamba_boot(void)
{
    __asm__ volatile("ldr r0, =__stack\n"
                     "msr msp, r0\n"
                     "ldr r0, =__interrupt_vector\n"
                     "ldr r1, =0xE000ED08\n" /* SCB->VTOR */
                     "str r0, [r1]\n"
                     "dsb\n"
                     "isb\n"
                     "b _start\n"
                     ".ltorg\n");
}
