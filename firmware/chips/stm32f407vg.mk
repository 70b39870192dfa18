# STM32F407VG (Cortex-M4F, 168 MHz) (chips/stm32f407vg.json): the board profile whose compiler flags it shares, its pyOCD
# target (empty: pyOCD cannot flash it) and the probe `make flash` needs.
CHIP_BOARD := cortex-m4f
PYOCD_TARGET := stm32f407vg
PROBE_NAME := the STM32F4DISCOVERY's on-board ST-LINK/V2 (pyOCD supports it; install the target pack once with: pyocd pack install stm32f407vg)
# The EEG front end's scale (chips/stm32f407vg.json "adc"): LUMAMBA_ADC_UV_PER_COUNT of the chip build.
CHIP_ADC_UV_PER_COUNT := 0.08940696716308594f
# The demo's ring buffer goes to the 64 KiB CCM (chips/stm32f407vg.ld "ccm"), which caps its capacity:
# the model's arena needs the 128 KiB SRAM (app/demo_main.c: LUMAMBA_RING_SECTION, LUMAMBA_RING_MAX_BYTES).
CHIP_DEMO_DEFINES := -DLUMAMBA_RING_SECTION=\".ccm\" -DLUMAMBA_RING_MAX_BYTES=65536u
