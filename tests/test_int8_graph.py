"""Integer graphs with float islands -> C (`compile_qgraph`) against the golden model's
GraphExecutor: every output bit pattern equal (no tolerance; the C performs the same float32
operations in the same order, and the transcendentals are the bit-exact C port of fmath)."""
from __future__ import annotations

import numpy as np
import pytest

from lumamba.export.codegen.qgraph_frontend import compile_qgraph
from lumamba.export.codegen.host_graph import build_graph_library
from lumamba.firmware import ROOT as FIRMWARE_ROOT
from lumamba.quant.fixed_point import quantize_multiplier
from lumamba.quant.golden import GraphExecutor
from lumamba.quant.qgraph import QGraph, QNode

RUNTIME = FIRMWARE_ROOT / "runtime"


def _graph(rng) -> QGraph:
    k, n, m = 16, 12, 6
    w_scale = np.float32(0.02)
    mult, shift = zip(*[quantize_multiplier(0.05 * float(w_scale) / 0.04 * (1 + 0.1 * c)) for c in range(n)])
    consts = {
        "fc.weight": rng.integers(-127, 128, (n, k)).astype(np.int8),
        "fc.bias": rng.integers(-3000, 3000, n).astype(np.int32),
        "fc.multiplier": np.array(mult, np.int32), "fc.shift": np.array(shift, np.int32),
        "ln.scale": rng.normal(1, 0.2, n).astype(np.float32), "ln.bias": rng.normal(0, 0.2, n).astype(np.float32),
        "half": np.float32([0.5]), "proj": rng.normal(0, 0.3, (n, m)).astype(np.float32),
        "shape": np.int64([2, 2, m]),
    }
    nodes = [
        QNode("quantize", "q", ["x"], ["x.q"], {"inv_scale": 20.0, "zero_point": -3}),
        QNode("qlinear", "fc", ["x.q"], ["h.q"], {"x_zero_point": -3, "y_zero_point": 4},
              {r: f"fc.{r}" for r in ("weight", "bias", "multiplier", "shift")}),
        QNode("dequantize", "dq", ["h.q"], ["h"], {"scale": 0.04, "zero_point": 4}),
        QNode("LayerNormalization", "ln", ["h", "ln.scale", "ln.bias"], ["ln"], {"axis": -1, "epsilon": 1e-5}),
        QNode("Erf", "erf", ["ln"], ["e"]),
        QNode("Mul", "mul", ["e", "half"], ["g"]),
        QNode("Sigmoid", "sig", ["g"], ["s"]),
        QNode("Softplus", "sp", ["ln"], ["p"]),
        QNode("Add", "add", ["s", "p"], ["a"]),
        QNode("Softmax", "sm", ["a"], ["sm"], {"axis": -1}),
        QNode("MatMul", "mm", ["sm", "proj"], ["y"]),
        QNode("Exp", "exp", ["y"], ["ey"]),
        QNode("Reshape", "rs", ["ey", "shape"], ["out"]),
    ]
    shapes = {"x.q": (4, k), "h.q": (4, n), "h": (4, n), "ln": (4, n), "e": (4, n), "g": (4, n),
              "s": (4, n), "p": (4, n), "a": (4, n), "sm": (4, n), "y": (4, m), "ey": (4, m), "out": (2, 2, m)}
    tensors = {t: {"dtype": "int8" if t.endswith(".q") else "float32", "shape": list(s)} for t, s in shapes.items()}
    g = QGraph("island", "test", [("x", (4, k))], [("out", (2, 2, m))], nodes, consts, tensors)
    g.validate()
    return g


def test_float_islands_bit_exact(tmp_path):
    rng = np.random.default_rng(5)
    graph = _graph(rng)
    cgraph = compile_qgraph(graph, "island")
    assert '#include "lumamba_fmath.h"' in cgraph.kernels_c and "lmb_erff(" in cgraph.kernels_c
    assert "expf(" not in cgraph.kernels_c.replace("lmb_expf(", "")     # no libm exp
    host = build_graph_library(cgraph, tmp_path, extra_flags=["-I", str(RUNTIME), str(RUNTIME / "lumamba_fmath.c")])
    run = GraphExecutor(graph)
    for trial in range(5):
        x = (rng.normal(0, 3, (4, 16))).astype(np.float32)     # saturates the int8 input range too
        (got,) = host(x)
        ref = run({"x": x})["out"]
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), f"trial {trial}: bits differ"


def test_unsupported_op_named():
    rng = np.random.default_rng(6)
    graph = _graph(rng)
    graph.nodes[4] = QNode("Tanh", "tanh", ["ln"], ["e"])
    with pytest.raises(NotImplementedError, match="node tanh: op 'Tanh'"):
        compile_qgraph(graph, "island")
