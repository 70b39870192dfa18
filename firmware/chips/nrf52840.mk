# Nordic nRF52840 (Cortex-M4F, 64 MHz) (chips/nrf52840.json): the board profile whose compiler flags it shares, its pyOCD
# target (empty: pyOCD cannot flash it) and the probe `make flash` needs.
CHIP_BOARD := cortex-m4f
PYOCD_TARGET := nrf52840
PROBE_NAME := the nRF52840 DK's on-board interface MCU (J-Link OB: pyOCD needs pylink-square) or any CMSIS-DAP probe on its SWD header
# The EEG front end's scale (chips/nrf52840.json "adc"): LUMAMBA_ADC_UV_PER_COUNT of the chip build.
CHIP_ADC_UV_PER_COUNT := 0.08940696716308594f
