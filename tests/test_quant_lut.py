"""Lookup tables for element-wise chains of one int8 tensor (quant/lut.py): the rewritten graph
against the unrewritten one in the golden model (bit-identical on all 256 codes of every table's
input), which chains are and are not folded, and the generated C of a graph with tables against the
golden model (bit for bit)."""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from lumamba.export.codegen.host_graph import build_graph_library
from lumamba.export.codegen.qgraph_frontend import compile_qgraph
from lumamba.export.codegen.kernel_layout import KERNEL_FUNCTIONS
from lumamba.export.project.kernel_harness import KERNELS_DIR
from lumamba.firmware import ROOT as FIRMWARE_ROOT
from lumamba.quant.fixed_point import quantize_multiplier
from lumamba.quant.golden import GraphExecutor
from lumamba.quant.lut import fold_lookup_tables
from lumamba.quant.ops import lookup
from lumamba.quant.qgraph import QGraph, QNode

RUNTIME = FIRMWARE_ROOT / "runtime"
N = 8                     # channels
SCALE, ZP = 0.05, -3      # input quantisation: codes -128..127 <-> x = (code - ZP) * SCALE


def _graph(rng) -> QGraph:
    """x -> quantize -> dequantize -> three chains:
    GELU with a per-channel bias, then quantize (int8 -> int8 table, per channel);
    dt = where(x > 2, x, softplus(x)) times a per-channel constant (int8 -> float table, per channel);
    SiLU whose Sigmoid output is a graph output too (only the Sigmoid can be tabulated)."""
    consts = {"bias": rng.normal(0, 0.5, N).astype(np.float32), "sqrt2": np.float32([1.4142135]),
              "one": np.float32([1.0]), "half": np.float32([0.5]), "two": np.float32([2.0]),
              "a": rng.normal(0, 1, N).astype(np.float32)}
    nodes = [
        QNode("quantize", "q", ["x"], ["x.q"], {"scale": SCALE, "inv_scale": 1 / SCALE, "zero_point": ZP}),
        QNode("dequantize", "dq", ["x.q"], ["h"], {"scale": SCALE, "zero_point": ZP}),
        QNode("Add", "b", ["h", "bias"], ["hb"]),
        QNode("Div", "d", ["hb", "sqrt2"], ["g0"]),
        QNode("Erf", "e", ["g0"], ["g1"]),
        QNode("Add", "a1", ["g1", "one"], ["g2"]),
        QNode("Mul", "m1", ["hb", "g2"], ["g3"]),
        QNode("Mul", "m2", ["g3", "half"], ["gelu"]),
        QNode("quantize", "gq", ["gelu"], ["gelu.q"], {"scale": 0.04, "inv_scale": 25.0, "zero_point": 5}),
        QNode("dequantize", "gdq", ["gelu.q"], ["gelu_f"], {"scale": 0.04, "zero_point": 5}),
        QNode("Softplus", "sp", ["h"], ["sp"]),
        QNode("Greater", "gt", ["h", "two"], ["big"]),
        QNode("Where", "w", ["big", "h", "sp"], ["dt"]),
        QNode("Mul", "dta", ["dt", "a"], ["dta"]),
        QNode("Sigmoid", "sg", ["h"], ["s"]),
        QNode("Mul", "silu", ["h", "s"], ["silu"]),
        QNode("Add", "out", ["silu", "s"], ["y1"]),
    ]
    g = QGraph("lut", "test", [("x", (5, N))], [("gelu_f", (5, N)), ("dta", (5, N)), ("y1", (5, N)), ("s", (5, N))],
                nodes, consts)
    env = GraphExecutor(g)({"x": np.zeros((5, N), np.float32)}, keep=True)
    g.tensors = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in env.items()}
    g.validate()
    return g


def _all_codes(rng, rows: int = 256) -> np.ndarray:
    """Inputs whose quantisation hits every int8 code in every channel (shuffled per channel), plus
    out-of-range values (saturation)."""
    codes = np.stack([rng.permutation(256) - 128 for _ in range(N)], axis=1)
    return ((codes - ZP) * SCALE).astype(np.float32)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def test_fold_is_bit_identical_on_all_codes():
    rng = np.random.default_rng(0)
    graph = _graph(rng)
    graph.inputs = [("x", (256, N))]
    env = GraphExecutor(graph)({"x": np.zeros((256, N), np.float32)}, keep=True)
    graph.tensors = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in env.items()}
    graph.outputs = [(n, (256, N)) for n, _ in graph.outputs]
    original = copy.deepcopy(graph)
    fold_lookup_tables(graph)
    graph.validate()
    luts = {n.outputs[0]: graph.constants[n.params["table"]] for n in graph.nodes if n.op == "lut"}
    # GELU + bias + quantize: one int8 table per channel; dt * a: one float table per channel;
    # SiLU: its Sigmoid is a graph output, so the Sigmoid alone is tabulated and the Mul, Add stay
    assert {k: (v.dtype.name, v.shape) for k, v in luts.items()} == {
        "gelu.q": ("int8", (N, 256)), "dta": ("float32", (N, 256)), "s": ("float32", (1, 256))}
    ops = [n.op for n in graph.nodes]
    assert "Erf" not in ops and "Softplus" not in ops and "Sigmoid" not in ops and ops.count("Mul") == 1
    assert ops.count("dequantize") == 2          # dq stays: the SiLU's Mul still reads h
    x = _all_codes(rng)
    q = GraphExecutor(original)({"x": x}, keep=True)["x.q"]
    assert all(len(np.unique(q[:, c])) == 256 for c in range(N))
    for trial in range(2):
        feeds = {"x": x if trial == 0 else rng.normal(0, 10, (256, N)).astype(np.float32)}
        want, got = GraphExecutor(original)(feeds, keep=True), GraphExecutor(graph)(feeds, keep=True)
        for name in ("gelu.q", "s", "gelu_f", "dta", "y1"):
            assert _same_bits(got[name], want[name]), f"{name} differs"


def test_chains_left_alone():
    rng = np.random.default_rng(1)
    graph = _graph(rng)
    # a per-channel constant along another axis than the last, and a chain without a costly op
    graph.constants["bias"] = graph.constants["bias"][:5].reshape(5, 1)
    graph.nodes = [n for n in graph.nodes if n.name not in ("sp", "gt", "w", "sg", "silu", "out")]
    graph.nodes.append(QNode("Add", "plain", ["h", "one"], ["dt"]))
    graph.nodes.append(QNode("Mul", "dta", ["dt", "a"], ["dta"]))
    graph.outputs = [("gelu_f", (5, N)), ("dta", (5, N))]
    graph.nodes.append(QNode("Neg", "neg", ["g0"], ["g0n"]))            # GELU's Div read outside the chain
    graph.outputs.append(("g0n", (5, N)))
    graph.nodes = [n for n in graph.nodes if n.name != "dta"] + [QNode("Mul", "dta", ["dt", "a"], ["dta"])]
    env = GraphExecutor(graph)({"x": np.zeros((5, N), np.float32)}, keep=True)
    graph.tensors = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in env.items()}
    before = [n.op for n in graph.nodes]
    fold_lookup_tables(graph)
    assert [n.op for n in graph.nodes] == before


def test_table_size_limit():
    graph = _graph(np.random.default_rng(2))
    fold_lookup_tables(graph, max_table_bytes=1024)     # the per-channel int8 table needs N * 256 = 2048 B
    luts = [n.outputs[0] for n in graph.nodes if n.op == "lut"]     # dt * a (8 KiB) neither: dt alone
    assert sorted(luts) == ["dt", "s"] and any(n.op == "Erf" for n in graph.nodes)


def test_lookup_rejects_bad_input():
    table = np.zeros((1, 256), np.float32)
    with pytest.raises(TypeError, match="node t \\(lut\\): input must be int8"):
        lookup(np.zeros(3, np.int16), table, "t")
    with pytest.raises(ValueError, match="table of shape \\(3, 256\\) does not fit"):
        lookup(np.zeros((2, 4), np.int8), np.zeros((3, 256), np.int8), "t")
    q = np.arange(-128, 128).astype(np.int8)
    assert np.array_equal(lookup(q, np.arange(256, dtype=np.float32)[None]), np.arange(256, dtype=np.float32))


def test_generated_c_with_tables_bit_exact(tmp_path):
    rng = np.random.default_rng(3)
    graph = fold_lookup_tables(_graph(rng))
    cgraph = compile_qgraph(graph, "lut")
    assert "lmb_erff(" not in cgraph.kernels_c and "lmb_softplusf(" not in cgraph.kernels_c
    host = build_graph_library(cgraph, tmp_path, extra_flags=["-I", str(RUNTIME), str(RUNTIME / "lumamba_fmath.c")])
    run = GraphExecutor(graph)
    codes = _all_codes(rng)
    for start in range(0, 256, 5):
        x = codes[start:start + 5] if start + 5 <= 256 else rng.normal(0, 10, (5, N)).astype(np.float32)
        ref = run({"x": x})
        for (name, _), got in zip(graph.outputs, host(x)):
            assert _same_bits(got, ref[name]), f"rows {start}: {name} differs"


def _qlinear_gelu_graph(rng, m: int = 20, k: int = 16, n: int = 12) -> QGraph:
    """quantize -> qlinear -> GELU with a per-channel bias -> quantize -> dequantize (as the frontend's
    frequency MLP): after folding, qlinear -> lut (per channel, int8) -> dequantize."""
    mult, shift = zip(*[quantize_multiplier(0.02 * (1 + 0.1 * c)) for c in range(n)])
    consts = {"fc.weight": rng.integers(-127, 128, (n, k)).astype(np.int8),
              "fc.bias": rng.integers(-3000, 3000, n).astype(np.int32),
              "fc.multiplier": np.array(mult, np.int32), "fc.shift": np.array(shift, np.int32),
              "b": rng.normal(0, 0.3, n).astype(np.float32), "sqrt2": np.float32([1.4142135]),
              "one": np.float32([1.0]), "half": np.float32([0.5])}
    nodes = [QNode("quantize", "q", ["x"], ["x.q"], {"scale": 0.05, "inv_scale": 20.0, "zero_point": -3}),
             QNode("qlinear", "fc", ["x.q"], ["h.q"], {"x_zero_point": -3, "y_zero_point": 4},
                   {r: f"fc.{r}" for r in ("weight", "bias", "multiplier", "shift")}),
             QNode("dequantize", "dq", ["h.q"], ["h"], {"scale": 0.04, "zero_point": 4}),
             QNode("Add", "ab", ["h", "b"], ["hb"]), QNode("Div", "d", ["hb", "sqrt2"], ["g0"]),
             QNode("Erf", "e", ["g0"], ["g1"]), QNode("Add", "a1", ["g1", "one"], ["g2"]),
             QNode("Mul", "m1", ["hb", "g2"], ["g3"]), QNode("Mul", "m2", ["g3", "half"], ["gelu"]),
             QNode("quantize", "gq", ["gelu"], ["gelu.q"], {"scale": 0.03, "inv_scale": 1 / 0.03, "zero_point": -50}),
             QNode("dequantize", "gdq", ["gelu.q"], ["y"], {"scale": 0.03, "zero_point": -50})]
    g = QGraph("fz", "test", [("x", (m, k))], [("y", (m, n))], nodes, consts)
    env = GraphExecutor(g)({"x": np.zeros((m, k), np.float32)}, keep=True)
    g.tensors = {a: {"dtype": str(v.dtype), "shape": list(v.shape)} for a, v in env.items()}
    return g


@pytest.mark.parametrize("form", sorted(KERNEL_FUNCTIONS))
def test_table_fuses_into_the_micro_kernel_tile(form, tmp_path):
    """The lut is element-wise for TVM's fusion: it runs in the qlinear's tile (one kernel, no
    int8 intermediate in RAM), bit-exact with the golden model (host: the Arm forms' fallbacks)."""
    rng = np.random.default_rng(4)
    graph = fold_lookup_tables(_qlinear_gelu_graph(rng))
    assert [n.op for n in graph.nodes] == ["quantize", "qlinear", "lut", "dequantize"]
    cgraph = compile_qgraph(graph, "fz", form)
    assert re.findall(r"void (fz_k\w+)\(", cgraph.kernels_c) == ["fz_k0_quantize", "fz_k1_qlinear_lut_dequantize"]
    sources = [str(p) for p in sorted(KERNELS_DIR.glob("*.c"))]
    host = build_graph_library(cgraph, tmp_path, extra_flags=["-I", str(RUNTIME), "-I", str(KERNELS_DIR),
                                                              str(RUNTIME / "lumamba_fmath.c"), *sources])
    run = GraphExecutor(graph)
    for trial in range(3):
        x = rng.normal(0, 3, (20, 16)).astype(np.float32)
        assert _same_bits(host(x)[0], run({"x": x})["y"]), f"{form} trial {trial}"
