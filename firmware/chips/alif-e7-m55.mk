# Alif Ensemble E7, Cortex-M55 HP core (400 MHz) (chips/alif-e7-m55.json): the board profile whose compiler flags it shares, its pyOCD
# target (empty: pyOCD cannot flash it) and the probe `make flash` needs.
CHIP_BOARD := cortex-m55
PYOCD_TARGET := 
PROBE_NAME := Alif's Secure Enclave tools (SETOOLS app-write-mram over the board's USB/UART), or a J-Link; pyOCD has no Ensemble target
# The EEG front end's scale (chips/alif-e7-m55.json "adc"): LUMAMBA_ADC_UV_PER_COUNT of the chip build.
CHIP_ADC_UV_PER_COUNT := 0.08940696716308594f
