"""Memory report of a firmware build: exact sizes, the stack call chain, and the fit check.

The stand-in model here has known sizes: a const weight array in weights.c, a static arena in
model.c and a call chain lumamba_infer -> stage_a -> stage_b with fixed local arrays. The test
checks the report against those numbers, against binutils' `size -A`, and against the .su files
the compiler wrote.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from lumamba.export.project.boards import BOARDS, load_board
from lumamba.export.project.build import BuildError, build_project
from lumamba.export.project.test_vectors import write_test_vectors
from lumamba.export.project.memory_report import (CORTEX_M_EXCEPTION_FRAME, MemoryFitError, check_fits, format_report,
                                          memory_report)
from lumamba.export.project.qemu import run_elf
from toolchain import require_toolchain

BOARD = "cortex-m4f"
EMULATED = [b for b in BOARDS if load_board(b).emulator is not None]
LAST_WEIGHT = 7.0

MODEL_H = """#ifndef MODEL_H
#define MODEL_H
#define LUMAMBA_N_CHANNELS 2
#define LUMAMBA_N_SAMPLES 8
#define LUMAMBA_N_CLASSES 2
int lumamba_init(void);
int lumamba_infer(const float *window, float *logits);
#endif
"""

MODEL_C = """#include <stddef.h>
#include "lumamba_runtime.h"
#include "model.h"
#define N_IN (LUMAMBA_N_CHANNELS * LUMAMBA_N_SAMPLES)
extern const float memtest_weights[WEIGHT_FLOATS];
static float arena[ARENA_FLOATS];

/* Volatile local arrays give each stage a stack frame of known size. */
__attribute__((noinline)) static float stage_b(const float *x)
{
    volatile float scratch[64];
    size_t i;
    for (i = 0; i < 64; ++i) {
        scratch[i] = x[i % N_IN];
    }
    return scratch[(size_t)x[0] % 64];
}

__attribute__((noinline)) static float stage_a(const float *x)
{
    volatile float scratch[16];
    size_t i;
    for (i = 0; i < 16; ++i) {
        scratch[i] = x[i % N_IN];
    }
    return scratch[(size_t)x[1] % 16] + stage_b(x);
}

int lumamba_init(void) { return LUMAMBA_OK; }

int lumamba_infer(const float *window, float *logits)
{
    size_t i;
    for (i = 0; i < N_IN; ++i) {
        arena[(i * 7u) % ARENA_FLOATS] = window[i];
    }
    logits[0] = stage_a(arena);
    logits[1] = memtest_weights[(size_t)window[0] % WEIGHT_FLOATS];
    return LUMAMBA_OK;
}
"""


def make_project(root, weight_floats: int, arena_floats: int):
    root.mkdir()
    (root / "model.h").write_text(MODEL_H)
    (root / "model.c").write_text(f"#define WEIGHT_FLOATS {weight_floats}u\n#define ARENA_FLOATS {arena_floats}u\n"
                                  + MODEL_C)
    (root / "weights.c").write_text(f"const float memtest_weights[{weight_floats}] = "
                                    f"{{[0] = 1.0f, [{weight_floats - 1}] = {LAST_WEIGHT}f}};\n")
    windows = np.arange(3 * 16, dtype=np.float32).reshape(3, 2, 8)
    write_test_vectors(root, windows)
    return root, windows


def function_name(symbol: str) -> str:
    """"model.c:stage_a.constprop.0" -> "stage_a" (file prefix of statics, GCC clone suffixes)."""
    return symbol.rsplit(":", 1)[-1].split(".")[0]


def read_stack_usage(build_dir) -> dict[str, int]:
    """function name -> frame bytes, from the compiler's .su files."""
    frames = {}
    for su in build_dir.rglob("*.su"):
        for line in su.read_text().splitlines():
            location, size, _ = line.split("\t")
            frames[function_name(location)] = int(size)
    return frames


def size_a(board: str, elf) -> dict[str, int]:
    b = load_board(board)
    out = subprocess.run([f"{b.tool_prefix}size", "-A", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sizes = {}
    for line in out.splitlines()[2:]:
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith("."):
            sizes[fields[0]] = int(fields[1])
    return sizes


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    require_toolchain(BOARD, need_emulator=False)
    project, windows = make_project(tmp_path_factory.mktemp("mem") / "small", weight_floats=3000,
                                    arena_floats=1000)
    elf = build_project(project, BOARD)
    return {"project": project, "elf": elf, "windows": windows,
            "report": memory_report(elf, BOARD, project)}


def test_flash_parts_are_exact(small):
    flash = small["report"]["flash"]
    assert flash["weights"] == 3000 * 4
    assert flash["test_vectors"] == small["windows"].nbytes
    sections = size_a(BOARD, small["elf"])
    # picolibc.ld: vectors in .init, code and constants in .text, .data copied from flash.
    assert flash["total"] == sections[".init"] + sections[".text"] + sections[".data"]
    assert flash["deployable"] == flash["total"] - flash["test_vectors"]
    assert flash["weights"] + flash["model_code"] + flash["runtime_and_libc"] + flash["test_vectors"] == flash["total"]
    assert flash["model_code"] > 0 and flash["runtime_and_libc"] > 0


def test_ram_parts_are_exact(small):
    ram = small["report"]["ram"]
    assert ram["model_static"] == 1000 * 4  # the arena is the model's only static state
    sections = size_a(BOARD, small["elf"])
    assert ram["model_static"] + ram["other_static"] == sections[".data"] + sections[".bss"]
    # the int16 window a deployment holds for lumamba_infer_counts(): 2 channels x 8 samples x 2 bytes;
    # this hand-written model has no lumamba_counts_buffer() in its arena, so it comes on top
    assert ram["input_window"] == 2 * 8 * 2 and not ram["input_window_in_arena"]
    assert ram["total"] == ram["model_static"] + ram["other_static"] + ram["stack"] + ram["input_window"]


def test_stack_is_the_worst_call_chain_plus_one_interrupt(small):
    stack = small["report"]["stack"]
    frames = read_stack_usage(small["elf"].parent)
    assert frames["stage_b"] >= 64 * 4 and frames["stage_a"] >= 16 * 4
    chain = frames["lumamba_infer"] + frames["stage_a"] + frames["stage_b"]
    interrupt = CORTEX_M_EXCEPTION_FRAME + frames["arm_systick_isr"]
    assert [function_name(f) for f in stack["worst_chain"]] == ["lumamba_infer", "stage_a", "stage_b"]
    assert stack["interrupt"] == interrupt
    assert stack["bytes"] == chain + interrupt == small["report"]["ram"]["stack"]
    assert stack["unbounded"] == []


def test_small_model_fits_and_report_reads_well(small):
    d = small["report"]
    assert d["flash"]["fits"] and d["ram"]["fits"]
    assert d["flash"]["limit"] == load_board(BOARD).target.flash_bytes
    check_fits(d)  # must not raise
    text = format_report(d)
    assert f"{d['flash']['weights']:,} B" in text and "fits" in text and "lumamba_infer" in text


def test_too_big_model_reports_by_how_much(tmp_path):
    require_toolchain(BOARD, need_emulator=False)
    target = load_board(BOARD).target
    # 200 KB more weights and 64 KB more arena than the real chip has, inside the emulator.
    weight_floats, arena_floats = target.flash_bytes // 4 + 50_000, target.ram_bytes // 4 + 16_000
    emulator = load_board(BOARD).emulator
    assert weight_floats * 4 < emulator.flash.size and arena_floats * 4 < emulator.ram.size - 65536
    project, _ = make_project(tmp_path / "big", weight_floats, arena_floats)
    d = memory_report(build_project(project, BOARD), BOARD, project)
    assert d["flash"]["weights"] == weight_floats * 4 and d["ram"]["model_static"] == arena_floats * 4
    assert not d["flash"]["fits"] and not d["ram"]["fits"]
    with pytest.raises(MemoryFitError) as err:
        check_fits(d)
    message = str(err.value)
    assert f"over by {d['flash']['deployable'] - target.flash_bytes:,} bytes" in message
    assert f"over by {d['ram']['total'] - target.ram_bytes:,} bytes" in message
    assert target.name in message
    assert "DOES NOT FIT" in format_report(d)


def test_model_too_big_for_the_emulator_fails_the_build(tmp_path):
    require_toolchain(BOARD, need_emulator=False)
    flash = load_board(BOARD).emulator.flash.size
    project, _ = make_project(tmp_path / "huge", weight_floats=flash // 4 + 1, arena_floats=16)
    with pytest.raises(BuildError, match=r"region `flash' overflowed by \d+ bytes"):
        build_project(project, BOARD)


@pytest.mark.parametrize("board", EMULATED)
def test_large_image_loads_and_runs_in_the_emulator(tmp_path, board):
    """Up to 12 MB of weights, three quarters of the emulated flash (LuMamba-tiny int8 is ~5 MB):
    the last one is read back on the board."""
    require_toolchain(board, need_emulator=False)
    weight_floats = min(3_000_000, load_board(board).emulator.flash.size * 3 // 16)
    project, _ = make_project(tmp_path / "large", weight_floats, arena_floats=16)
    windows = np.zeros((1, 2, 8), np.float32)
    windows[0, 0, 0] = weight_floats - 1  # lumamba_infer returns memtest_weights[window[0]]
    write_test_vectors(project, windows)
    result = run_elf(build_project(project, board), board, timeout_s=60)
    assert result.logits[0, 1] == LAST_WEIGHT


def test_host_report_has_no_limits(tmp_path):
    require_toolchain("host", need_emulator=False)
    project, windows = make_project(tmp_path / "host", weight_floats=100, arena_floats=10)
    d = memory_report(build_project(project, "host"), "host", project)
    assert d["target"] is None and d["emulator"] is None
    assert d["flash"]["limit"] is None and d["flash"]["fits"] is None
    assert d["flash"]["weights"] == 400 and d["flash"]["test_vectors"] == windows.nbytes
    assert d["ram"]["model_static"] == 40
    check_fits(d)  # nothing to exceed
    assert "no real-board limit" in format_report(d)
