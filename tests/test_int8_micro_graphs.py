"""Every integer graph of the `micro` config (tcp22, T=640) through `compile_qgraph` -> host C,
bit-exact with the golden model on the very inputs the golden model feeds that graph for one
window: every output bit pattern equal at every call (no tolerance: the C performs the golden
model's float32 operations in its order, and its transcendentals are the bit-exact C port of
fmath). One channel of the window is silent, so the frontend's 0/0 atan2 bins (NaN, replaced
through IsNaN/Where) are exercised too."""
from __future__ import annotations

import numpy as np
import pytest
from test_quant_golden import eeg_like, make_model

from lumamba.export import export_onnx
from lumamba.export.codegen.qgraph_frontend import compile_qgraph
from lumamba.export.codegen.host_graph import build_graph_library
from lumamba.firmware import ROOT as FIRMWARE_ROOT
from lumamba.montages import MONTAGES
from lumamba.quant import calibrate, quantize
from lumamba.quant.golden import GraphExecutor
from lumamba.quant.qgraph import QGraph, QNode

RUNTIME = FIRMWARE_ROOT / "runtime"
N_SAMPLES, MONTAGE = 640, "tcp22"
SILENT_CHANNEL = 5


class Recording:
    """A GraphExecutor that keeps a copy of every call's feeds and of what it computed."""

    def __init__(self, executor):
        self.executor, self.graph, self.taps, self.calls = executor, executor.graph, executor.taps, []

    def __call__(self, feeds, keep=False):
        env = self.executor(feeds, keep)
        self.calls.append(({k: v.copy() for k, v in feeds.items()}, env))
        return env


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The golden model of the quantised micro model, its executors recording one window's calls."""
    root = tmp_path_factory.mktemp("int8_micro")
    names = list(MONTAGES[MONTAGE])
    export_onnx(make_model("micro"), names, N_SAMPLES, root / "onnx", mamba_form="step")   # the step graphs by name
    calibration = calibrate(root / "onnx", eeg_like(3, len(names), N_SAMPLES, seed=1), progress=False)
    golden = quantize(root / "onnx", calibration, out_dir=root / "int8").golden()
    golden.executors = {name: Recording(e) for name, e in golden.executors.items()}
    window = eeg_like(1, len(names), N_SAMPLES, seed=2)[0]
    window[SILENT_CHANNEL] = 0.0
    golden.run(window, taps=True)
    return golden


GRAPHS = {          # graph -> C functions its kernels must call (proof that the op was lowered, not folded)
    "head_out": ["lmb_round_clamped("],
    "head_step": ["lmb_expf(", "lmb_sigmoidf("],
    "block0_fwd": ["lmb_expf(", "lmb_sigmoidf(", "sqrtf("],
    # the streamed front end: a statistics pass (GroupNorms 1 and 2 applied, GELU), a combination of
    # per-patch statistics, and the per-patch pass with the channel unification
    "frontend_stats3": ["lmb_erff("],
    "frontend_gn1": ["sqrtf("],
    "frontend": ["lmb_atanf(", "lmb_erff(", "lmb_expf(", "sqrtf("],
}
ONCE = ("head_out", "frontend_gn1")
# graph -> its lookup tables (quant/lut.py): the GELUs before an int8 layer (int8 tables) and the
# scan's dt = softplus(dt_proj(x)) (a float table); the frontend's frequency-MLP GELU has a bias
# per channel (one int8 table per channel), the unification's FFN GELUs (gelu_4, gelu_5) follow it in
# the same per-patch graph; the patch-conv GELUs follow a normalisation (no table)
LUTS = {"head_out": [], "head_step": ["gelu.q.lut", "softplus.lut"], "block0_fwd": ["softplus.lut"],
        "frontend_stats3": [], "frontend_gn1": [], "frontend": ["gelu_3.q.lut", "gelu_4.lut", "gelu_5.q.lut"]}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_bit_exact_with_golden(micro, name, tmp_path):
    recorded = micro.executors[name]
    graph = recorded.graph
    assert [n.name for n in graph.nodes if n.op == "lut"] == LUTS[name]
    cgraph = compile_qgraph(graph, name)
    for call in GRAPHS[name]:
        assert call in cgraph.kernels_c, f"{name}: {call} missing from the kernels"
    host = build_graph_library(cgraph, tmp_path, extra_flags=["-I", str(RUNTIME), str(RUNTIME / "lumamba_fmath.c")])
    assert len(recorded.calls) == (1 if name in ONCE else micro.manifest.n_patches)
    for t, (feeds, ref) in enumerate(recorded.calls):
        got = host(*[feeds[n] for n, _ in graph.inputs])
        for (out, _), value in zip(graph.outputs, got):
            assert value.dtype == np.float32 and value.shape == ref[out].shape
            differ = np.flatnonzero(value.view(np.uint32) != ref[out].view(np.uint32))
            assert differ.size == 0, (f"{name} call {t}, output {out}: {differ.size} values differ, first at "
                                      f"{differ[0]}: {value.flat[differ[0]]!r} vs {ref[out].flat[differ[0]]!r}")


def test_silent_channel_reaches_the_nan_path(micro):
    """The frontend's atan(im / re) sees 0/0 on the silent channel, so its IsNaN is not vacuous."""
    graph = micro.executors["frontend"].graph
    isnan = next(n for n in graph.nodes if n.op == "IsNaN")
    assert all(env[isnan.outputs[0]].any() for _, env in micro.executors["frontend"].calls)   # every patch


def _float_ops_graph(rng) -> QGraph:
    """The float ops micro does not use, or uses in one form only: float Conv and Gemm, Softmax on
    a middle axis, MatMul with broadcast batches, ReduceMean, Slice with a negative step, Gather
    with a negative index, Split into uneven parts."""
    f = lambda *shape: rng.normal(0, 1, shape).astype(np.float32)     # noqa: E731
    consts = {"w": f(4, 2, 3, 3), "b": f(4), "in.s": f(4), "in.b": f(4), "mm": f(3, 1, 4, 6),
              "gw": f(3, 6), "gb": f(3), "axes": np.int64([1, 2]), "idx": np.int64([-1, 0]),
              "st": np.int64([4]), "en": np.int64([0]), "ax": np.int64([1]), "step": np.int64([-2]),
              "shape2": np.int64([-1, 6]), "uq": np.int64([0])}
    nodes = [
        QNode("Conv", "conv", ["x", "w", "b"], ["c"], {"pads": [1, 0, 1, 2], "strides": [1, 2]}),
        QNode("InstanceNormalization", "in", ["c", "in.s", "in.b"], ["n"], {"epsilon": 1e-5}),
        QNode("Softmax", "sm", ["n"], ["s"], {"axis": 1}),
        QNode("ReduceMean", "rm", ["n", "axes"], ["r"], {"keepdims": 0}),              # (1, 4): 20 elements each
        QNode("Split", "sp", ["s"], ["p0", "p1"], {"axis": 2, "num_outputs": 2}),     # (1, 4, 5, 4) -> rows 3 + 2
        QNode("Slice", "sl", ["p0", "st", "en", "ax", "step"], ["q"]),               # channels 3, 1
        QNode("Gather", "ga", ["p1", "idx"], ["g"], {"axis": 1}),                    # channels 3, 0
        QNode("Concat", "cat", ["q", "g"], ["k"], {"axis": 2}),                      # (1, 2, 5, 4)
        QNode("MatMul", "mm", ["k", "mm"], ["m"]),                                   # (3, 2, 5, 6)
        QNode("Reshape", "rs", ["m", "shape2"], ["m2"]),
        QNode("Gemm", "gemm", ["m2", "gw", "gb"], ["y"], {"transB": 1}),
        QNode("Unsqueeze", "uq", ["r", "uq"], ["r2"]),
    ]
    g = QGraph("floats", "test", [("x", (1, 2, 5, 8))], [("y", (30, 3)), ("r2", (1, 1, 4))], nodes, consts)
    g.validate()
    env = GraphExecutor(g)({"x": f(1, 2, 5, 8)}, keep=True)
    g.tensors = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in env.items()}
    return g


def test_other_float_ops_bit_exact(tmp_path):
    rng = np.random.default_rng(7)
    graph = _float_ops_graph(rng)
    host = build_graph_library(compile_qgraph(graph, "floats"), tmp_path,
                              extra_flags=["-I", str(RUNTIME), str(RUNTIME / "lumamba_fmath.c")])
    run = GraphExecutor(graph)
    for trial in range(3):
        x = rng.normal(0, 2, (1, 2, 5, 8)).astype(np.float32)
        ref = run({"x": x})
        for (name, _), got in zip(graph.outputs, host(x)):
            assert got.shape == ref[name].shape
            assert np.array_equal(got.view(np.uint32), ref[name].view(np.uint32)), f"trial {trial}: {name} differs"
