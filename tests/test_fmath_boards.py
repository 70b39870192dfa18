"""lumamba_fmath compiled for every board (and the host) against lumamba.quant.fmath, bit for bit:
the harness (firmware/runtime/harness/fmath_harness.c) evaluates each function on the same inputs
and prints a hash of the results, compared with the golden model's hash of its own results.
The inputs cover the domains densely enough to cross every branch and range-reduction step
(exp's clamps and table seams, erf's intervals, atan's reductions) plus the special values."""
from __future__ import annotations

import numpy as np
import pytest
from test_quant_fmath import exp_edge_inputs
from toolchain import require_toolchain

from lumamba.export.project.fmath_harness import FUNCTIONS, build_fmath_harness, golden_hash, run_fmath_harness
from lumamba.quant import fmath

BOARDS = ("host", "cortex-m4f", "cortex-m55", "riscv32")


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(11)
    edges = np.float32([0.0, -0.0, 1.0, -1.0, 2.5, 4.0, -4.0, 88.0, 88.00001, -86.5, -86.50001, 0.5, 1e-30,
                        float(fmath.TAN_PI_8), np.inf, -np.inf, np.nan, 2 ** -149, -(2 ** -149), 3e38, -3e38])
    bits = rng.integers(0, 2 ** 32, 1000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([np.linspace(-100, 100, 2001, dtype=np.float32),
                           np.linspace(-6, 6, 2001, dtype=np.float32), bits, edges, exp_edge_inputs()[::5]])


@pytest.mark.parametrize("board", BOARDS)
def test_fmath_bit_exact_on_board(board, tmp_path):
    if board != "host":
        require_toolchain(board)
    x = _inputs()
    results = run_fmath_harness(build_fmath_harness(board, x, tmp_path), board)
    assert [r.function for r in results] == list(FUNCTIONS)
    for r in results:
        assert r.n == x.size
        assert r.fnv1a == golden_hash(r.function, x), f"{board}: {r.function} differs from lumamba.quant.fmath"
        if board != "host":
            assert r.insns > 0
