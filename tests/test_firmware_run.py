"""Firmware runtime + test application, built and run on the host and the three emulated boards.

The model is a stand-in written here: logits = bias + W x, accumulated in a fixed order. Its
numpy reference follows the same order in float32, so the C must match it bit for bit: IEEE-754
binary32 addition and multiplication are correctly rounded on x86-64 SSE, the Cortex-M4F and
M55 scalar FPUs and RV32F; the profiles turn off FMA contraction (-ffp-contract=off) and nothing
flushes subnormals (the M55 profile disables Helium float, which does). The tolerance is
therefore zero, stricter than 1e-6 relative; a float64 error bound checks the reference itself.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from lumamba.export.project.boards import BOARDS, load_board
from lumamba.export.project.build import build_project
from lumamba.export.project.test_vectors import write_test_vectors
from lumamba.export.project.qemu import run_elf
from lumamba.firmware import ROOT as FIRMWARE_ROOT
from toolchain import require_toolchain

EMULATED = [b for b in BOARDS if load_board(b).emulator is not None]
N_CHANNELS, N_SAMPLES, N_CLASSES = 3, 16, 5
N_IN = N_CHANNELS * N_SAMPLES



def model_h(channels: int, samples: int, classes: int) -> str:
    """The generated model.h interface (see ARCHITECTURE.md) for the given sizes."""
    return (f"#ifndef MODEL_H\n#define MODEL_H\n#define LUMAMBA_N_CHANNELS {channels}\n"
            f"#define LUMAMBA_N_SAMPLES {samples}\n#define LUMAMBA_N_CLASSES {classes}\n"
            "int lumamba_init(void);\nint lumamba_infer(const float *window, float *logits);\n#endif\n")


MATVEC_C = """#include <stddef.h>
#include "lumamba_runtime.h"
#include "model.h"
#define N_IN (LUMAMBA_N_CHANNELS * LUMAMBA_N_SAMPLES)
extern const float standin_weight[LUMAMBA_N_CLASSES][N_IN];
extern const float standin_bias[LUMAMBA_N_CLASSES];
static int initialised;

int lumamba_init(void)
{
    initialised = 1;
    return LUMAMBA_OK;
}

int lumamba_infer(const float *window, float *logits)
{
    size_t c, k;
    int status;
    if (!initialised) {
        return LUMAMBA_ERR_NOT_INITIALISED;
    }
    status = lumamba_check_finite(window, N_IN);
    if (status != LUMAMBA_OK) {
        return status;
    }
    for (c = 0; c < LUMAMBA_N_CLASSES; ++c) {
        float acc = standin_bias[c];
        for (k = 0; k < N_IN; ++k) {
            acc = acc + standin_weight[c][k] * window[k];
        }
        logits[c] = acc;
    }
    return LUMAMBA_OK;
}
"""

# lumamba_infer runs a two-instruction loop window[0] times: a known amount of work.
LOOP_C = """#include <stdint.h>
#include "lumamba_runtime.h"
#include "model.h"
int lumamba_init(void) { return LUMAMBA_OK; }
int lumamba_infer(const float *window, float *logits)
{
    uint32_t n = (uint32_t)window[0];
#if defined(__arm__)
    __asm__ volatile("1: subs %0, %0, #1\\n bne 1b" : "+r"(n) : : "cc");
#elif defined(__riscv)
    __asm__ volatile("1: addi %0, %0, -1\\n bnez %0, 1b" : "+r"(n));
#else
#error "the loop stand-in is for the emulated boards"
#endif
    logits[0] = (float)n;
    return LUMAMBA_OK;
}
"""
LOOP_COUNTS = [1, 2, 1000, 1001, 1_000_000, 12_000_000]


def runtime_status(name: str) -> int:
    """A status code as defined in lumamba_runtime.h (the test must not restate it)."""
    header = (FIRMWARE_ROOT / "runtime" / "lumamba_runtime.h").read_text()
    return int(re.search(rf"#define LUMAMBA_{name} (\d+)", header).group(1))


def c_array(values: np.ndarray) -> str:
    """A C initializer (nested braces for 2-D) holding exactly these float32 values."""
    if values.ndim == 2:
        return ", ".join(c_array(row) for row in values).join("{}")
    return ", ".join(float(v).hex() + "f" for v in values.tolist()).join("{}")


def reference_logits(weight: np.ndarray, bias: np.ndarray, window: np.ndarray) -> np.ndarray:
    """bias + weight @ window in float32, one multiply and one add at a time, as the C loop."""
    acc = bias.copy()
    for k in range(window.size):
        acc = acc + weight[:, k] * window[k]
    assert acc.dtype == np.float32
    return acc


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((N_CLASSES, N_IN)).astype(np.float32)
    bias = rng.standard_normal(N_CLASSES).astype(np.float32)
    bias[-1] = 0.0  # keeps the last logit of the subnormal window subnormal
    windows = rng.standard_normal((6, N_CHANNELS, N_SAMPLES)).astype(np.float32)
    windows[3] *= np.float32(1e-39)  # subnormal inputs and products
    windows[4, 1, 7] = np.nan
    windows[5, 2, 0] = np.inf
    project = tmp_path_factory.mktemp("standin")
    (project / "model.h").write_text(model_h(N_CHANNELS, N_SAMPLES, N_CLASSES))
    (project / "model.c").write_text(MATVEC_C)
    (project / "weights.c").write_text(
        '#include "model.h"\n'
        f"const float standin_weight[LUMAMBA_N_CLASSES][LUMAMBA_N_CHANNELS * LUMAMBA_N_SAMPLES] = {c_array(weight)};\n"
        f"const float standin_bias[LUMAMBA_N_CLASSES] = {c_array(bias)};\n")
    write_test_vectors(project, windows)
    return {"project": project, "weight": weight, "bias": bias, "windows": windows,
            "finite": [0, 1, 2, 3], "nonfinite": [4, 5], "runs": {}}


def run_standin(standin: dict, board: str):
    """Build and run once per board (cached), since several tests read the same run."""
    if board not in standin["runs"]:
        require_toolchain(board)
        elf = build_project(standin["project"], board)
        standin["runs"][board] = (elf, run_elf(elf, board, timeout_s=30))
    return standin["runs"][board]


@pytest.mark.parametrize("board", BOARDS)
def test_logits_bit_identical_to_same_order_reference(standin, board):
    _, result = run_standin(standin, board)
    for w in standin["finite"]:
        expected = reference_logits(standin["weight"], standin["bias"], standin["windows"][w].ravel())
        np.testing.assert_array_equal(result.logits[w].view(np.uint32), expected.view(np.uint32),
                                      err_msg=f"board {board}, window {w}")
    assert result.logits[3, -1] != 0 and abs(result.logits[3, -1]) < np.finfo(np.float32).tiny, \
        "the subnormal window must give a subnormal last logit"


def test_reference_within_float32_error_bound_of_exact_result(standin):
    # |fl(b + sum w x) - exact| <= gamma_(n+1) (|b| + sum |w x|), gamma_m = m u / (1 - m u),
    # u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms, 3.1); normal windows only.
    w64, b64 = standin["weight"].astype(np.float64), standin["bias"].astype(np.float64)
    u = 2.0 ** -24
    gamma = (N_IN + 1) * u / (1 - (N_IN + 1) * u)
    for w in (0, 1, 2):
        x = standin["windows"][w].ravel()
        exact = b64 + w64 @ x.astype(np.float64)
        bound = gamma * (np.abs(b64) + np.abs(w64) @ np.abs(x.astype(np.float64)))
        err = np.abs(reference_logits(standin["weight"], standin["bias"], x) - exact)
        assert np.all(err <= bound), (err, bound)


def test_all_boards_agree_bit_for_bit(standin):
    results = {b: run_standin(standin, b)[1] for b in BOARDS}
    first = BOARDS[0]
    for board, result in results.items():
        np.testing.assert_array_equal(result.logits.view(np.uint32), results[first].logits.view(np.uint32),
                                      err_msg=f"{board} vs {first}")


@pytest.mark.parametrize("board", BOARDS)
def test_nonfinite_window_returns_error_code(standin, board):
    _, result = run_standin(standin, board)
    nonfinite = runtime_status("ERR_NONFINITE_INPUT")
    assert nonfinite != 0
    for w in standin["nonfinite"]:
        assert result.statuses[w] == nonfinite
        assert np.isnan(result.logits[w]).all()
    assert [result.statuses[w] for w in standin["finite"]] == [0] * len(standin["finite"])
    assert result.exit_status == nonfinite  # the first failure, also QEMU's exit status
    assert f"STATUS 4 {nonfinite} NONFINITE_INPUT" in result.stdout


@pytest.mark.parametrize("board", EMULATED)
def test_instruction_counts_repeatable_and_data_independent(standin, board):
    elf, first = run_standin(standin, board)
    again = run_elf(elf, board, timeout_s=30)
    assert again.insns == first.insns
    finite = [first.insns[w] for w in standin["finite"]]
    # The stand-in's code path does not depend on the values (subnormals included).
    assert len(set(finite)) == 1, finite
    # At least one multiply and one add per weight (no FMA).
    assert finite[0] >= 2 * N_CLASSES * N_IN
    # A rejected window stops after the finiteness check.
    assert all(first.insns[w] < finite[0] for w in standin["nonfinite"])


def test_host_reports_no_instruction_counts(standin):
    _, result = run_standin(standin, "host")
    assert result.insns == []


@pytest.fixture(scope="module")
def loop_project(tmp_path_factory):
    project = tmp_path_factory.mktemp("loop")
    (project / "model.h").write_text(model_h(1, 1, 1))
    (project / "model.c").write_text(LOOP_C)
    counts = np.array(LOOP_COUNTS, dtype=np.float32)
    assert counts.astype(np.int64).tolist() == LOOP_COUNTS  # exactly representable
    write_test_vectors(project, counts.reshape(-1, 1))
    return project


@pytest.mark.parametrize("board", EMULATED)
def test_instruction_count_is_exact_for_a_known_loop(loop_project, board):
    require_toolchain(board)
    b = load_board(board)
    result = run_elf(build_project(loop_project, board), board, timeout_s=60)
    n = np.array(LOOP_COUNTS, dtype=np.int64)
    insns = np.array(result.insns, dtype=np.int64)
    overhead = insns[0] - 2 * n[0]  # counter reads, call and return
    extra = insns - 2 * n - overhead
    if b.emulator.cpu_hz is None:  # RISC-V minstret: exact for every length
        assert extra.tolist() == [0] * len(n)
        return
    # Cortex-M: exact while SysTick does not wrap (up to 2^24 ticks); each wrap adds the
    # handler's few instructions, so extra must be the same whole number of them per wrap.
    ticks_per_insn = b.emulator.cpu_hz * 2 ** b.emulator.icount_shift / 1e9
    wraps = np.floor(insns * ticks_per_insn / 2 ** 24).astype(np.int64)
    assert extra[wraps == 0].tolist() == [0] * int((wraps == 0).sum())
    assert wraps[-1] >= 2
    per_wrap = extra[-1] // wraps[-1]
    assert 1 <= per_wrap <= 16 and extra[-1] == per_wrap * wraps[-1], (extra, wraps)
