"""Single quantised layers (Linear as Gemm and MatMul, Conv) built by the converter and run by the
golden model's ops, against the float layer and an analytic error bound; the quantisation config.

Error bound of y = W x + b quantised (per output channel c, input steps s_x, weight steps s_w[c],
output step s_y): |y_int8 - y| <= sum_k |W[c,k]| s_x/2 (input rounding)
                               + s_w[c]/2 sum_k |x_hat[k]| (weight rounding)
                               + s_x s_w[c] / 2 (bias rounding)
                               + s_y (output rounding, half a step, plus TFLM's double rounding,
                                      at most another half step).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lumamba.export.onnx.manifest import GraphSpec, TensorSpec
from lumamba.quant.config import Candidate, QuantConfig
from lumamba.quant.convert import build_qgraph, candidates, layer_name
from lumamba.quant.golden import GraphExecutor

rng = np.random.default_rng(0)


def make_graph(op: str, x_shape, w: np.ndarray, b: np.ndarray | None, y_shape, **attrs):
    """One-node ONNX graph `y = op(x, fc3.weight[, fc3.bias])` and its manifest entry (as head_out)."""
    inits = [numpy_helper.from_array(w.astype(np.float32), "fc3.weight")]
    inputs = ["x", "fc3.weight"]
    if b is not None:
        inits.append(numpy_helper.from_array(b.astype(np.float32), "fc3.bias"))
        inputs.append("fc3.bias")
    node = helper.make_node(op, inputs, ["y"], name="node_layer", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    spec = GraphSpec("head_out", "head_out.onnx", "head_out", (TensorSpec("x", tuple(x_shape)),),
                     (TensorSpec("y", tuple(y_shape)),), ("classifier.fc3",), "", 0)
    return model, spec


def run_quantised(model, spec, x, y_float):
    ranges = {"x": (float(x.min()), float(x.max())), "y": (float(y_float.min()), float(y_float.max()))}
    graph = build_qgraph(model, spec, {"node_layer"}, ranges)
    return graph, GraphExecutor(graph)({"x": x})["y"]


def linear_bound(graph, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    node = graph.int8_nodes()[0]
    sx, sy = node.attrs["x_scale"], node.attrs["y_scale"]
    sw = graph.constants[node.params["w_scale"]].astype(np.float64)
    x_hat = np.abs(x).astype(np.float64) + sx / 2
    return (np.abs(w).sum(1) * sx / 2)[None] + (sw / 2)[None] * x_hat.sum(-1, keepdims=True) + sx * sw / 2 + sy


@pytest.mark.parametrize("form", ["gemm", "matmul"])
def test_quantised_linear_is_within_the_analytic_bound(form):
    K, N = 48, 20
    w = rng.normal(0, 1 / np.sqrt(K), (N, K)) * rng.uniform(0.1, 2, (N, 1))     # channels of varied scale
    b = rng.normal(0, 0.3, N) if form == "gemm" else None
    x = rng.normal(0.5, 1.5, (64, K)).astype(np.float32)
    y = x.astype(np.float64) @ w.T + (b if b is not None else 0)
    if form == "gemm":
        model, spec = make_graph("Gemm", x.shape, w, b, y.shape, transB=1)
    else:
        model, spec = make_graph("MatMul", x.shape, w.T, None, y.shape)
    graph, y_q = run_quantised(model, spec, x, y)
    assert [n.op for n in graph.nodes] == ["quantize", "qlinear", "dequantize"]
    assert y_q.dtype == np.float32
    err = np.abs(y_q - y)
    bound = linear_bound(graph, w, x)
    assert (err <= bound).all(), f"worst excess {(err - bound).max()}"
    # the bound is not vacuous: typical errors are a small fraction of it, and of the signal
    assert err.mean() < 0.3 * bound.mean()
    assert 10 * np.log10((y ** 2).sum() / ((y_q - y) ** 2).sum()) > 30


def test_int8_weights_are_a_quarter_of_the_float_bytes():
    K, N = 64, 32
    w = rng.normal(0, 0.1, (N, K))
    x = rng.normal(0, 1, (8, K)).astype(np.float32)
    model, spec = make_graph("Gemm", x.shape, w, rng.normal(0, 0.1, N), (8, N), transB=1)
    graph, _ = run_quantised(model, spec, x, x.astype(np.float64) @ w.T)
    node = graph.int8_nodes()[0]
    weight = graph.constants[node.params["weight"]]
    assert weight.dtype == np.int8 and weight.shape == (N, K)
    assert 4 * weight.nbytes == w.astype(np.float32).nbytes
    assert {graph.constants[node.params[r]].dtype for r in ("bias", "multiplier", "shift")} == {np.dtype(np.int32)}
    assert "fc3.weight" not in graph.constants                  # the float weight is not carried along


def test_quantised_conv_matches_float_conv():
    c_in, c_out, k = 3, 8, 5
    w = rng.normal(0, 0.3, (c_out, c_in, 1, k))
    b = rng.normal(0, 0.1, c_out)
    x = rng.normal(0, 1, (1, c_in, 6, 40)).astype(np.float32)
    attrs = dict(pads=[0, 2, 0, 2], strides=[1, 3], kernel_shape=[1, k])
    model, spec = make_graph("Conv", x.shape, w, b, (1, c_out, 6, 14), **attrs)
    # float reference by direct summation in float64, zero padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (0, 0), (2, 2)))
    y = np.stack([sum(w[co, ci, 0, j] * xp[0, ci, :, j:j + 3 * 13 + 1:3] for ci in range(c_in) for j in range(k)) + b[co]
                  for co in range(c_out)])[None]
    float_graph = build_qgraph(model, spec, set())
    assert np.abs(GraphExecutor(float_graph)({"x": x})["y"] - y).max() < 1e-5
    graph, y_q = run_quantised(model, spec, x, y)
    assert [n.op for n in graph.nodes] == ["quantize", "qconv", "dequantize"]
    node = graph.int8_nodes()[0]
    sx, sy = node.attrs["x_scale"], node.attrs["y_scale"]
    sw = graph.constants[node.params["w_scale"]].astype(np.float64)
    taps = np.abs(w).reshape(c_out, -1).sum(1)
    bound = taps * sx / 2 + sw / 2 * taps.size * (np.abs(x).max() + sx / 2) + sx * sw / 2 + sy
    assert (np.abs(y_q - y) <= bound[None, :, None, None]).all()


def test_layer_names_follow_the_state_dict():
    def spec(kind, sources):
        return GraphSpec("g", "g.onnx", kind, (), (), sources, "", 0)

    enc = spec("encoder_step", ("norm_layers.1", "mamba_blocks.1.mamba_rev"))
    assert layer_name(enc, "mamba.in_proj.weight") == "mamba_blocks.1.mamba_rev.in_proj"
    assert layer_name(spec("unify", ("cross_attn",)), "layers.0.self_attn.in_proj_weight") == \
        "cross_attn.query_self_attn.layers.0.self_attn.in_proj"
    assert layer_name(spec("frontend", ()), "freq_embed.frequency_to_embed.fc1.weight.folded") == \
        "freq_embed.frequency_to_embed.fc1"
    assert layer_name(spec("frontend", ()), "_to_copy") is None                 # the DFT basis: no parameter
    assert layer_name(spec("head_step", ("classifier.fc1", "classifier.mamba_1")), "fc1.weight") == "classifier.fc1"


def test_config_moves_nodes_and_rejects_unknown_names():
    cands = [Candidate("block0_fwd", "node_linear", "mamba_blocks.0.mamba_fwd.in_proj", True),
             Candidate("block0_fwd", "node_linear_3", "mamba_blocks.0.mamba_fwd.out_proj", True),
             Candidate("frontend", "node_matmul", "frontend:node_matmul", False)]
    assert QuantConfig().decide(cands) == {("block0_fwd", "node_linear"): True, ("block0_fwd", "node_linear_3"): True,
                                           ("frontend", "node_matmul"): False}
    cfg = QuantConfig.from_dict({"float": ["*.out_proj"], "int8": ["frontend:node_mat*"]})
    assert cfg.decide(cands) == {("block0_fwd", "node_linear"): True, ("block0_fwd", "node_linear_3"): False,
                                 ("frontend", "node_matmul"): True}
    with pytest.raises(ValueError, match="'mamba_blocks.9.\\*'"):
        QuantConfig.from_dict({"float": ["mamba_blocks.9.*"]}).decide(cands)
    with pytest.raises(ValueError, match="both"):
        QuantConfig.from_dict({"float": ["block0_fwd:*"], "int8": ["*in_proj"]}).decide(cands)
    with pytest.raises(ValueError, match="unknown key"):
        QuantConfig.from_dict({"flaot": ["x"]})


def test_config_file_json_and_toml(tmp_path):
    (tmp_path / "q.json").write_text('{"float": ["classifier.*"]}')
    (tmp_path / "q.toml").write_text('float = ["classifier.*"]\nint8 = []\n')
    assert QuantConfig.load(tmp_path / "q.json").float == QuantConfig.load(tmp_path / "q.toml").float == ["classifier.*"]
    (tmp_path / "bad.json").write_text('{"float": "classifier.*"}')
    with pytest.raises(ValueError, match="bad.json.*list"):
        QuantConfig.load(tmp_path / "bad.json")


def test_candidates_need_a_constant_weight():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                                                [x, w], [y]), opset_imports=[helper.make_opsetid("", 18)])
    spec = GraphSpec("head_out", "h.onnx", "head_out", (), (), ("classifier.fc3",), "", 0)
    assert candidates(model, spec) == []                      # activation x activation: a float island
    with pytest.raises(ValueError, match="not quantisable"):
        build_qgraph(model, spec, {"mm"})
    onnx.checker.check_model(model)


def test_package_import_is_light_and_public_names_are_not_shadowed():
    """`import lumamba.quant` adds neither onnx, onnxruntime, matplotlib nor scikit-learn to what
    `import lumamba` loads; each public name resolves to the function or class, whatever order
    they are imported in (a submodule of the same name would shadow it once imported)."""
    code = ("import sys, types, lumamba\n"
            "before = set(sys.modules)\n"
            "import lumamba.quant as q\n"
            "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
            "heavy = new & {'onnx', 'onnxruntime', 'matplotlib', 'sklearn'}\n"
            "assert not heavy, heavy\n"
            "for name in sorted(q.__all__, reverse=True) + sorted(q.__all__):\n"
            "    assert not isinstance(getattr(q, name), types.ModuleType), name\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": ""})
