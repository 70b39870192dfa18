# GreenWaves GAP9 (RISC-V, memory map only) (chips/gap9.json): the board profile whose compiler flags it shares, its pyOCD
# target (empty: pyOCD cannot flash it) and the probe `make flash` needs.
CHIP_BOARD := riscv32
PYOCD_TARGET := 
PROBE_NAME := the GAP SDK's gapy/OpenOCD with the GAP9 EVK's on-board FTDI probe; pyOCD does not support GAP9
# The EEG front end's scale (chips/gap9.json "adc"): LUMAMBA_ADC_UV_PER_COUNT of the chip build.
CHIP_ADC_UV_PER_COUNT := 0.08940696716308594f
