# Build rules of a generated LuMamba firmware project.
#
# The project's Makefile sets LUMAMBA_FW (the folder holding this file) and a default BOARD,
# then includes this file. The project root holds the generated model (model.c, model.h,
# kernels.c, weights.c, ...) and test_vectors.h; every *.c there is part of the build.
#
#   make [BOARD=cortex-m4f|cortex-m55|riscv32|host]   build build/$(BOARD)/lumamba.elf
#   make run                                          run it (QEMU, or natively for host)
#   make clean
#   make demo-app [BOARD=...]                         build build/$(BOARD)/lumamba-demo.elf, the
#                                                     streaming demo (app/demo_main.c)
#   make run-demo                                     run it in QEMU with its UART on stdin
#                                                     (lumamba-stream drives it)
#   make demo-app CHIP=nrf52840|stm32f407vg|alif-e7-m55|gap9
#                                                     the demo for a real chip: its linker script
#                                                     chips/$(CHIP).ld, no semihosting, SysTick
#                                                     cycles; build/chip-$(CHIP)/lumamba-demo.elf
#   make flash CHIP=... [PROBE=<uid>]                 flash that image with pyOCD
#   DEMO_DEFINES="-DLUMAMBA_STREAM_HOP=128 ..."       demo build-time settings (app/demo_main.c)
#
# The board files boards/$(BOARD).mk are rendered from lumamba's board profiles (JSON) by
# lumamba.export.project.build; they set CC, ARCH_CFLAGS, BOARD_DEFINES, BOARD_LDFLAGS, BOARD_LDLIBS,
# BOARD_SRCS (relative to LUMAMBA_FW) and RUN_CMD (which uses $(ELF)).

ifdef CHIP
# A real chip: chips/$(CHIP).mk names the board profile whose compiler flags it shares
# (CHIP_BOARD), its pyOCD target (PYOCD_TARGET) and probe (PROBE_NAME).
CHIP_MK := $(LUMAMBA_FW)/chips/$(CHIP).mk
ifeq ($(wildcard $(CHIP_MK)),)
$(error CHIP=$(CHIP): no $(CHIP_MK); chips with a demo build: $(patsubst $(LUMAMBA_FW)/chips/%.mk,%,$(wildcard $(LUMAMBA_FW)/chips/*.mk)))
endif
include $(CHIP_MK)
override BOARD := $(CHIP_BOARD)
endif

comma := ,
BOARD ?= cortex-m4f
BOARD_MK := $(LUMAMBA_FW)/boards/$(BOARD).mk
include $(BOARD_MK)

ifdef CHIP
# No QEMU counter calibration, no semihosting (it would stop a chip without a debugger), and
# the chip's memory map instead of the emulated machine's.
# The chip's EEG front end sets the ADC scale (chips/$(CHIP).json "adc").
BOARD_DEFINES := $(filter-out -DLUMAMBA_QEMU_ICOUNT_SHIFT=% -DLUMAMBA_CPU_HZ=% -DLUMAMBA_ADC_UV_PER_COUNT=%,$(BOARD_DEFINES)) \
                 -DLUMAMBA_REAL_CHIP=1 -DLUMAMBA_ADC_UV_PER_COUNT=$(CHIP_ADC_UV_PER_COUNT)
BOARD_LDFLAGS := $(filter-out -Wl$(comma)--defsym=% --crt0=% --oslib=%,$(BOARD_LDFLAGS)) \
                 -T$(LUMAMBA_FW)/chips/$(CHIP).ld
BUILD := build/chip-$(CHIP)
else
BUILD := build/$(BOARD)
# Weights placed in the board's external flash (lumamba.export.project.flash_regions): a linker
# script of the project's own, which includes picolibc's.
REGIONS_LD := $(wildcard flash_regions.$(BOARD).ld)
BOARD_LDFLAGS += $(if $(REGIONS_LD),-T$(REGIONS_LD))
endif
ELF := $(BUILD)/lumamba.elf

# -ffp-contract=off: no fused multiply-add, so every board rounds after each multiply and
# each add, like the host reference (GCC's default with -std=c99, made explicit here).
# -fstack-usage / -fcallgraph-info=su: per-function stack frames and call edges, which the
# memory report combines into the worst call chain.
CFLAGS := -std=c99 -Wall -Wextra -Werror -O2 -ffp-contract=off \
          -ffunction-sections -fdata-sections -fstack-usage -fcallgraph-info=su \
          $(ARCH_CFLAGS) $(BOARD_DEFINES) -I. -I$(LUMAMBA_FW)/runtime -I$(LUMAMBA_FW)/kernels
LDFLAGS := $(ARCH_CFLAGS) $(BOARD_LDFLAGS) -Wl,--gc-sections -Wl,-Map=$(BUILD)/lumamba.map

MODEL_SRCS := $(wildcard *.c)
# lumamba_fmath.c: the bit-exact transcendentals the int8 kernels call; kernels/: the int8 GEMM
# micro-kernels they call (each tuned form compiles only where its extension is there, the
# fallback file defines the others). Images that call none drop them with --gc-sections.
# lumamba_normalise.c: int16 counts -> the model's input, for lumamba_infer_counts().
KERNEL_SRCS := $(patsubst $(LUMAMBA_FW)/%,%,$(wildcard $(LUMAMBA_FW)/kernels/*.c))
FW_SRCS := runtime/lumamba_runtime.c runtime/lumamba_fmath.c runtime/lumamba_normalise.c runtime/lumamba_counter.c \
           $(KERNEL_SRCS) app/main.c $(BOARD_SRCS)
MODEL_OBJS := $(MODEL_SRCS:%.c=$(BUILD)/%.o)
FW_OBJS := $(FW_SRCS:%.c=$(BUILD)/fw/%.o)

DEMO_ELF := $(BUILD)/lumamba-demo.elf
DEMO_DEFINES ?=
DEMO_SRCS := runtime/lumamba_runtime.c runtime/lumamba_fmath.c runtime/lumamba_normalise.c runtime/lumamba_counter.c \
             runtime/lumamba_stream.c $(KERNEL_SRCS) \
             app/demo_main.c app/demo_io.c app/demo_stdio.c $(BOARD_SRCS)
DEMO_OBJS := $(DEMO_SRCS:%.c=$(BUILD)/demo/%.o)

.PHONY: all run clean demo-app run-demo flash
all: $(ELF)

# Objects depend on the make files too, so that changed flags rebuild them.
$(BUILD)/%.o: %.c $(BOARD_MK) $(LUMAMBA_FW)/project.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/fw/%.o: $(LUMAMBA_FW)/%.c $(BOARD_MK) $(LUMAMBA_FW)/project.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(ELF): $(MODEL_OBJS) $(FW_OBJS) $(BOARD_MK) $(REGIONS_LD)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(BOARD_LDLIBS) -o $@

run: $(ELF)
	$(RUN_CMD)

# The streaming demo: the model objects plus the demo's own (DEMO_DEFINES apply to these only;
# a LUMAMBA_ADC_UV_PER_COUNT there replaces the board profile's). The demo objects depend on a
# stamp holding DEMO_DEFINES, rewritten only when they change, so new settings rebuild them.
# A chip may add settings of its own (CHIP_DEMO_DEFINES, e.g. where the ring buffer goes).
DEMO_CFLAGS := $(if $(filter -DLUMAMBA_ADC_UV_PER_COUNT=%,$(DEMO_DEFINES)),$(filter-out -DLUMAMBA_ADC_UV_PER_COUNT=%,$(CFLAGS)),$(CFLAGS)) \
               $(CHIP_DEMO_DEFINES) $(DEMO_DEFINES)
DEMO_STAMP := $(BUILD)/demo/defines.stamp
ifneq ($(filter demo-app run-demo flash,$(MAKECMDGOALS)),)
$(shell mkdir -p $(BUILD)/demo && (echo '$(DEMO_DEFINES)' | cmp -s - $(DEMO_STAMP) || echo '$(DEMO_DEFINES)' > $(DEMO_STAMP)))
endif

$(BUILD)/demo/%.o: $(LUMAMBA_FW)/%.c $(BOARD_MK) $(CHIP_MK) $(LUMAMBA_FW)/project.mk $(DEMO_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(DEMO_CFLAGS) -MMD -MP -c $< -o $@

$(DEMO_ELF): $(MODEL_OBJS) $(DEMO_OBJS) $(BOARD_MK) $(REGIONS_LD)
	$(CC) $(filter-out -Wl$(comma)-Map=%,$(LDFLAGS)) -Wl,-Map=$(BUILD)/lumamba-demo.map $(filter %.o,$^) $(BOARD_LDLIBS) -o $@

demo-app: $(DEMO_ELF)

# Samples come in on the first UART (stdin), decisions go out through semihosting (stdout/stderr).
run-demo: ELF = $(DEMO_ELF)
run-demo: $(DEMO_ELF)
	$(subst -serial none,-serial stdio,$(RUN_CMD))

flash: $(DEMO_ELF)
ifndef CHIP
	@echo "make flash: name the chip, e.g. make flash CHIP=nrf52840 (chips: $(patsubst $(LUMAMBA_FW)/chips/%.mk,%,$(wildcard $(LUMAMBA_FW)/chips/*.mk)))" >&2; exit 2
else
	@command -v pyocd >/dev/null 2>&1 || { echo "make flash: pyocd is not installed; install it with: pip install 'lumamba[flash]' (or pip install pyocd), or flash $(DEMO_ELF) with OpenOCD" >&2; exit 2; }
	@test -n "$(PYOCD_TARGET)" || { echo "make flash: $(CHIP) has no pyOCD target; flash $(DEMO_ELF) with the vendor's tool ($(PROBE_NAME))" >&2; exit 2; }
	@pyocd list --probes 2>/dev/null | grep -q '^ *[0-9]' || { echo "make flash: no debug probe found; connect $(PROBE_NAME) to $(CHIP) over USB and try again" >&2; exit 2; }
	pyocd load --target $(PYOCD_TARGET) $(if $(PROBE),--uid $(PROBE)) $(DEMO_ELF)
endif

clean:
	rm -rf build

-include $(MODEL_OBJS:.o=.d) $(FW_OBJS:.o=.d) $(DEMO_OBJS:.o=.d)
