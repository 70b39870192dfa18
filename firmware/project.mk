# Build rules of a generated LuMamba firmware project.
#
# The project's Makefile sets LUMAMBA_FW (the folder holding this file) and a default BOARD,
# then includes this file. The project root holds the generated model (model.c, model.h,
# kernels.c, weights.c, ...) and test_vectors.h; every *.c there is part of the build.
#
#   make [BOARD=cortex-m4f|cortex-m55|riscv32|host]   build build/$(BOARD)/lumamba.elf
#   make run                                          run it (QEMU, or natively for host)
#   make clean
#
# The board files boards/$(BOARD).mk are rendered from lumamba's board profiles (JSON) by
# lumamba.export.project.build; they set CC, ARCH_CFLAGS, BOARD_DEFINES, BOARD_LDFLAGS, BOARD_LDLIBS,
# BOARD_SRCS (relative to LUMAMBA_FW) and RUN_CMD (which uses $(ELF)).

BOARD ?= cortex-m4f
BOARD_MK := $(LUMAMBA_FW)/boards/$(BOARD).mk
include $(BOARD_MK)

BUILD := build/$(BOARD)
ELF := $(BUILD)/lumamba.elf

# -ffp-contract=off: no fused multiply-add, so every board rounds after each multiply and
# each add, like the host reference (GCC's default with -std=c99, made explicit here).
# -fstack-usage / -fcallgraph-info=su: per-function stack frames and call edges, which the
# memory report combines into the worst call chain.
CFLAGS := -std=c99 -Wall -Wextra -Werror -O2 -ffp-contract=off \
          -ffunction-sections -fdata-sections -fstack-usage -fcallgraph-info=su \
          $(ARCH_CFLAGS) $(BOARD_DEFINES) -I. -I$(LUMAMBA_FW)/runtime
LDFLAGS := $(ARCH_CFLAGS) $(BOARD_LDFLAGS) -Wl,--gc-sections -Wl,-Map=$(BUILD)/lumamba.map

MODEL_SRCS := $(wildcard *.c)
# lumamba_fmath.c: the bit-exact transcendentals the int8 kernels call (float images drop it
# with --gc-sections).
FW_SRCS := runtime/lumamba_runtime.c runtime/lumamba_fmath.c runtime/lumamba_counter.c app/main.c $(BOARD_SRCS)
MODEL_OBJS := $(MODEL_SRCS:%.c=$(BUILD)/%.o)
FW_OBJS := $(FW_SRCS:%.c=$(BUILD)/fw/%.o)

.PHONY: all run clean
all: $(ELF)

# Objects depend on the make files too, so that changed flags rebuild them.
$(BUILD)/%.o: %.c $(BOARD_MK) $(LUMAMBA_FW)/project.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/fw/%.o: $(LUMAMBA_FW)/%.c $(BOARD_MK) $(LUMAMBA_FW)/project.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(ELF): $(MODEL_OBJS) $(FW_OBJS) $(BOARD_MK)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(BOARD_LDLIBS) -o $@

run: $(ELF)
	$(RUN_CMD)

clean:
	rm -rf build

-include $(MODEL_OBJS:.o=.d) $(FW_OBJS:.o=.d)
