"""The generated quantizers round with lumamba_fmath.h's `lmb_round_clamped` (trunc(|v| + 0.49999997f),
after the clamp to the int8 range) instead of libm's roundf: the identity against round-half-away
is checked densely around every integer and half-integer of the range (exhaustively in the slow
test), and the generated `quantize` against the golden model's on the host and the QEMU boards,
bit for bit (no tolerance: integer outputs)."""
from __future__ import annotations

import numpy as np
import pytest
from toolchain import require_toolchain

from lumamba.export.codegen.host_graph import build_graph_library
from lumamba.export.codegen.qgraph_frontend import compile_qgraph
from lumamba.export.project.graph_harness import run_graphs_on_board
from lumamba.firmware import ROOT as FIRMWARE_ROOT
from lumamba.quant.golden import GraphExecutor
from lumamba.quant.qgraph import QGraph, QNode

RUNTIME = FIRMWARE_ROOT / "runtime"
JUST_BELOW_HALF = np.nextafter(np.float32(0.5), np.float32(0))   # the C constant 0x1.fffffep-2f


def _fast_round(a: np.ndarray) -> np.ndarray:
    """What lmb_round_clamped computes for a >= 0, in float32 arithmetic."""
    return np.trunc(a + JUST_BELOW_HALF)


def _near_ties() -> np.ndarray:
    """Every float32 within 200 ulps of each k / 2, k = 0..512 (0 to 256), plus random values."""
    centres = (np.arange(513, dtype=np.float32) / np.float32(2)).view(np.uint32).astype(np.int64)
    bits = (centres[:, None] + np.arange(-200, 201)[None, :]).ravel()
    bits = bits[(bits >= 0) & (bits <= np.float32(256).view(np.uint32))]
    rnd = np.random.default_rng(3).uniform(0, 256, 200_000).astype(np.float32)
    return np.concatenate([bits.astype(np.uint32).view(np.float32), rnd])


def test_identity_near_every_tie():
    a = _near_ties()
    want = np.floor(a.astype(np.float64) + 0.5)      # round half away from zero, exact in float64
    np.testing.assert_array_equal(_fast_round(a), want)
    # 0.5 itself as the constant would fail here: the float just below 0.5 would round up to 1
    assert np.trunc(JUST_BELOW_HALF + np.float32(0.5)) == 1.0


@pytest.mark.slow
def test_identity_exhaustive():
    """Every float32 in [0, 256] (1.13e9 values, ~35 s)."""
    end = int(np.float32(256).view(np.uint32))
    step = 50_000_000
    for start in range(0, end + 1, step):
        a = np.arange(start, min(start + step, end + 1), dtype=np.uint32).view(np.float32)
        assert np.array_equal(_fast_round(a), np.floor(a.astype(np.float64) + 0.5)), f"block at {start:#x}"


def _quantize_graph(name: str, inv_scale: float, zero_point: int, n: int) -> QGraph:
    """float32 x -> quantize -> int8 y."""
    nodes = [QNode("quantize", "q", ["x"], ["y"], {"inv_scale": inv_scale, "zero_point": zero_point})]
    tensors = {"x": {"dtype": "float32", "shape": [n]}, "y": {"dtype": "int8", "shape": [n]}}
    g = QGraph(name, "test", [("x", (n,))], [("y", (n,))], nodes, {}, tensors)
    g.validate()
    return g


def _inputs(step: int) -> np.ndarray:
    """Near-tie values of both signs (every step-th, and all within 2 ulps of each k + 1/2), the
    signed zeros and out-of-range values."""
    halves = (np.arange(256, dtype=np.float32) + np.float32(0.5)).view(np.uint32).astype(np.int64)
    beside = (halves[:, None] + np.arange(-2, 3)[None, :]).ravel().astype(np.uint32).view(np.float32)
    a = np.concatenate([_near_ties()[::step], beside])
    return np.concatenate([a, -a, np.float32([0.0, -0.0, 1e30, -1e30, np.inf, -np.inf])]).astype(np.float32)


# (zero point, inverse scale): the clamp bounds move with the zero point; 0.75 scales off the ties
QUANTIZERS = ((0, 1.0), (-100, 1.0), (90, 0.75))


def _graphs(n: int) -> list[QGraph]:
    return [_quantize_graph(f"q{i}", inv, zp, n) for i, (zp, inv) in enumerate(QUANTIZERS)]


def test_generated_quantize_on_host(tmp_path):
    x = _inputs(7)
    for graph in _graphs(x.size):
        cgraph = compile_qgraph(graph, graph.name)
        assert "lmb_round_clamped(" in cgraph.kernels_c and "roundf(" not in cgraph.kernels_c
        host = build_graph_library(cgraph, tmp_path / graph.name, extra_flags=["-I", str(RUNTIME)])
        np.testing.assert_array_equal(host(x)[0], GraphExecutor(graph)({"x": x})["y"])


@pytest.mark.parametrize("board", ["cortex-m4f", "cortex-m55", "riscv32"])
def test_generated_quantize_on_board(board, tmp_path):
    require_toolchain(board)
    x = _inputs(97)
    graphs = _graphs(x.size)
    results = run_graphs_on_board(board, [(compile_qgraph(g, g.name), x) for g in graphs], tmp_path)
    for graph in graphs:
        np.testing.assert_array_equal(results[graph.name].y, GraphExecutor(graph)({"x": x})["y"],
                                      err_msg=f"{board}: {graph.name}")
