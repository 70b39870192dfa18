"""ONNX -> TVM -> plain C99: the generated C, built with the host gcc and called through ctypes,
must match onnxruntime on small graphs of the kinds LuMamba exports.

Tolerance: max abs error <= 1e-5.  Both sides compute in float32 with values of order 1, but in
a different order (TVM's naive loop nests vs onnxruntime's blocked MLAS kernels, glibc's libm vs
ORT's own exp/tanh/erf), so results differ by a few ulp (about 1e-7 each); 1e-5 leaves room for
the accumulation of those over the ~30-term dot products here and nothing more.
"""

from __future__ import annotations

import ctypes
import io
import re
import shutil
import subprocess
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from lumamba.export.codegen.onnx_frontend import compile_onnx_to_c
from lumamba.export.codegen.host_graph import build_graph_library
from lumamba.export.codegen.lower import hex_float
from lumamba.export.codegen.plan import GraphPlan, KernelCall, Slot, TensorRef, layout_arena

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a host gcc")

TOL = 1e-5


# --- tiny models ------------------------------------------------------------------------------


class MatMulBias(nn.Module):
    def __init__(self, d_in: int = 24, d_out: int = 12):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.proj(x)


class DepthwiseConvSiLU(nn.Module):
    def __init__(self, channels: int = 8, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels, padding=kernel - 1)

    def forward(self, x):
        return F.silu(self.conv(x)[..., : x.shape[-1]])  # causal, as in Mamba


class MambaStep(nn.Module):
    """One recurrent step of a Mamba block (mamba-minimal's selective scan, one token)."""

    def __init__(self, d_model: int = 16, d_inner: int = 32, d_state: int = 4, d_conv: int = 4,
                 dt_rank: int = 2):
        super().__init__()
        self.d_state, self.dt_rank = d_state, dt_rank
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a) + 0.1 * torch.randn(d_inner, d_state))
        self.D = nn.Parameter(torch.randn(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x, conv_state, ssm_state):
        # x: (1, d_model); conv_state: (1, d_inner, d_conv); ssm_state: (1, d_inner, d_state)
        x_in, z = self.in_proj(x).chunk(2, dim=-1)
        conv_state = torch.cat([conv_state[:, :, 1:], x_in.unsqueeze(-1)], dim=-1)
        u = (conv_state * self.conv1d.weight.squeeze(1)).sum(-1) + self.conv1d.bias
        u = F.silu(u)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # (1, d_inner)
        A = -torch.exp(self.A_log)  # (d_inner, d_state)
        dA = torch.exp(delta.unsqueeze(-1) * A)
        dBu = delta.unsqueeze(-1) * B.unsqueeze(1) * u.unsqueeze(-1)
        ssm_state = ssm_state * dA + dBu
        y = (ssm_state * C.unsqueeze(1)).sum(-1) + self.D * u
        y = y * F.silu(z)
        return self.out_proj(y), conv_state, ssm_state


class AttentionBlock(nn.Module):
    """LayerNorm -> 2-head softmax attention -> GELU(erf) MLP."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, t, d)
        return F.gelu(self.fc(o))


class OpMix(nn.Module):
    """The other ops LuMamba's graphs may use: Conv2d (dense and depthwise), GroupNorm,
    tanh/sqrt/rsqrt/sin/cos/erf/pow/floor/clip/relu/reciprocal, GELU(tanh), ReduceMean,
    ReduceMax, Gather, Concat, Softmax, LogSoftmax."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, groups=8, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.embed = nn.Parameter(torch.randn(10, 6))

    def forward(self, x, idx):
        y = self.norm(self.dw(self.conv(x)))
        a = torch.tanh(y) + torch.sqrt(y.abs() + 1) + torch.rsqrt(y * y + 1)
        a = a + torch.sin(y) * torch.cos(y) + torch.erf(y) + y.clamp(-1, 1) + F.relu(y)
        a = a + torch.pow(y, 2) + torch.floor(y) + 1 / (y * y + 2) + F.gelu(y, approximate="tanh")
        z = torch.cat([a.mean(dim=(2, 3)), self.embed[idx].reshape(1, -1)], dim=-1)
        return torch.softmax(z, -1), torch.log_softmax(z, -1), a.amax(dim=1)


def export_onnx(module: nn.Module, args, inputs, outputs) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, buf, dynamo=False, input_names=inputs,
                          output_names=outputs, opset_version=17)
    model = onnx.load_from_string(buf.getvalue())
    model.ir_version = min(model.ir_version, 9)  # onnxruntime 1.31 rejects IR 14
    return model


def onnxruntime_run(model: onnx.ModelProto, inputs) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), inputs)})


def random_inputs(specs, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s.shape).astype(s.dtype) for s in specs]


def _case(name: str, seed: int = 0):
    torch.manual_seed(seed)
    if name == "matmul_bias":
        return export_onnx(MatMulBias(), (torch.randn(1, 6, 24),), ["x"], ["y"])
    if name == "dwconv_silu":
        return export_onnx(DepthwiseConvSiLU(), (torch.randn(1, 8, 20),), ["x"], ["y"])
    if name == "mamba_step":
        args = (torch.randn(1, 16), torch.randn(1, 32, 4), torch.randn(1, 32, 4))
        return export_onnx(MambaStep(), args, ["x", "conv_state", "ssm_state"],
                           ["y", "conv_state_out", "ssm_state_out"])
    if name == "attention":
        return export_onnx(AttentionBlock(), (torch.randn(1, 8, 16),), ["x"], ["y"])
    raise KeyError(name)


CASES = ["matmul_bias", "dwconv_silu", "mamba_step", "attention"]


@pytest.fixture(scope="module")
def compiled():
    """name -> (onnx model, CGraph), compiled once for the module."""
    out = {}
    for name in CASES:
        model = _case(name)
        out[name] = (model, compile_onnx_to_c(model, name))
    return out


# --- parity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_c_matches_onnxruntime(case, compiled, tmp_path):
    model, graph = compiled[case]
    host = build_graph_library(graph, tmp_path)
    for seed in (0, 1):
        inputs = random_inputs(graph.inputs, seed)
        got = host(*inputs)
        want = onnxruntime_run(model, inputs)
        assert len(got) == len(want)
        for spec, g, w in zip(graph.outputs, got, want):
            assert g.shape == w.shape, spec.name
            err = float(np.max(np.abs(g - w)))
            print(f"{case}/{spec.name} seed {seed}: max abs err {err:.3g}")
            assert err <= TOL, f"{case}: output {spec.name} differs by {err}"


def test_op_mix_matches_onnxruntime(tmp_path):
    """Relative tolerance here: outputs reach |y| ~ 25 as sums of ten libm results, each
    within an ulp or two of onnxruntime's own implementation (~1e-7 relative)."""
    torch.manual_seed(0)
    model = export_onnx(OpMix(), (torch.randn(1, 4, 6, 6), torch.tensor([[1, 5, 9]])),
                        ["x", "idx"], ["p", "logp", "amax"])
    graph = compile_onnx_to_c(model, "op_mix")
    host = build_graph_library(graph, tmp_path)
    x = np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float32)
    idx = np.array([[1, 5, 9]], np.int64)
    for spec, got, want in zip(graph.outputs, host(x, idx), onnxruntime_run(model, [x, idx])):
        rel = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))
        print(f"op_mix/{spec.name}: max rel err {rel:.3g}")
        assert rel <= TOL


def test_mamba_step_recurs_like_onnxruntime(compiled, tmp_path):
    """Feed the state outputs back for 8 steps (double-buffered, as the firmware will)."""
    model, graph = compiled["mamba_step"]
    host = build_graph_library(graph, tmp_path)
    rng = np.random.default_rng(3)
    c_state = [np.zeros((1, 32, 4), np.float32), np.zeros((1, 32, 4), np.float32)]
    ort_state = list(c_state)
    worst = 0.0
    for _ in range(8):
        x = rng.standard_normal((1, 16)).astype(np.float32)
        y, *c_state = host(x, *c_state)
        y_ref, *ort_state = onnxruntime_run(model, [x, *ort_state])
        worst = max(worst, float(np.max(np.abs(y - y_ref))))
        worst = max(worst, *(float(np.max(np.abs(a - b))) for a, b in zip(c_state, ort_state)))
    print(f"mamba_step 8 recurrent steps: max abs err {worst:.3g}")
    assert worst <= TOL


def test_weights_as_inputs_share_one_kernel_set(tmp_path):
    """Two Mamba steps with different weights compile to the same C; weights are arguments,
    prepared once on the host (transposed, -exp(A_log)) rather than at every step."""
    models = [_case("mamba_step", seed) for seed in (10, 11)]
    names = [t.name for t in models[0].graph.initializer if t.data_type == TensorProto.FLOAT]
    assert names, "the Mamba step export has float initializers"
    graphs = [compile_onnx_to_c(m, "mamba_shared", weights_as_inputs=names) for m in models]
    assert graphs[0].sources() == graphs[1].sources()
    assert "const float mamba_shared_c" not in graphs[0].weights_c  # no weight left in flash
    # the per-step C computes nothing from weights alone: no transpose of a weight matrix,
    # and A = -exp(A_log) is an argument, not recomputed at every step
    assert "transpose" not in graphs[0].kernels_c
    assert "A_log" not in [w.name for w in graphs[0].weights]
    with pytest.raises(ValueError, match="weights missing"):
        graphs[0].prepare_weights({})
    host = build_graph_library(graphs[0], tmp_path)
    data = random_inputs(graphs[0].inputs[:3], seed=5)
    outs = []
    for model, graph in zip(models, graphs):
        raw = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        weights = graph.prepare_weights(raw)
        assert [w.shape for w in weights] == [s.shape for s in graph.weights]
        got = host(*data, *weights)
        want = onnxruntime_run(model, data)
        for g, w in zip(got, want):
            err = float(np.max(np.abs(g - w)))
            print(f"weights-as-inputs: max abs err {err:.3g}")
            assert err <= TOL
        outs.append(got[0])
    assert not np.allclose(outs[0], outs[1])  # the weights really came from the arguments


# --- properties of the generated sources ---------------------------------------------------------


def test_sources_are_deterministic(compiled):
    model, graph = compiled["mamba_step"]
    again = compile_onnx_to_c(model, "mamba_step")
    assert again.sources() == graph.sources()


def test_sources_are_plain_c(compiled):
    for _, graph in compiled.values():
        text = "\n".join(graph.sources().values())
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments may name TVM
        assert not re.search(r"TVM|tvm|malloc|free\(|DLTensor", code)
        includes = set(re.findall(r"#include [<\"]([^>\"]+)[>\"]", text))
        assert includes <= {"math.h", "stdbool.h", "stddef.h", "stdint.h", f"{graph.name}.h"}
        header = graph.header_c
        assert f"#define {graph.name.upper()}_ARENA_BYTES {graph.arena_bytes}u" in header
        for i, spec in enumerate(graph.inputs):
            assert f"#define {graph.name.upper()}_IN{i}_SIZE {spec.size}\n" in header
        for i, spec in enumerate(graph.outputs):
            assert f"#define {graph.name.upper()}_OUT{i}_SIZE {spec.size}\n" in header
        assert all(s.startswith(f"{graph.name}_k") for s in graph.kernel_symbols)


CROSS = {
    "arm-none-eabi-gcc": ["--specs=picolibc.specs", "-mcpu=cortex-m4", "-mthumb",
                          "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "riscv64-unknown-elf-gcc": ["--specs=picolibc.specs", "-march=rv32imfc", "-mabi=ilp32f"],
    "gcc": [],
}


@pytest.mark.parametrize("cc", sorted(CROSS))
def test_sources_compile_warning_free(cc, compiled, tmp_path):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    for name, (_, graph) in compiled.items():
        for path in graph.write(tmp_path / name):
            if path.suffix != ".c":
                continue
            cmd = [cc, *CROSS[cc], "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-c",
                   str(path), "-o", str(path.with_suffix(".o"))]
            result = subprocess.run(cmd, capture_output=True, text=True)
            assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"


def test_driver_rejects_misaligned_arena(compiled, tmp_path):
    _, graph = compiled["mamba_step"]
    assert graph.arena_bytes > 0
    host = build_graph_library(graph, tmp_path)
    tensors = [np.zeros(s.shape, s.dtype) for s in graph.inputs + graph.outputs]
    raw = np.zeros(graph.arena_bytes + 32, np.uint8)
    misaligned = raw.ctypes.data + (-raw.ctypes.data) % 16 + 4
    pointers = [t.ctypes.data_as(ctypes.c_void_p) for t in tensors]
    assert host.c_run(*pointers, ctypes.c_void_p(misaligned)) == -1
    assert host.c_run(*pointers, ctypes.c_void_p(misaligned - 4)) == 0


def test_outputs_that_alias_inputs_or_constants_are_copied(tmp_path):
    """Identity/reshape/duplicate/constant outputs and an unused input: the driver copies what
    no kernel writes in place, and compiles warning-free."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    unused = helper.make_tensor_value_info("unused", TensorProto.FLOAT, [3])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in ("ident", "relu_reshaped", "relu", "relu_again", "const")]
    inits = [numpy_helper.from_array(np.array([3, 4], np.int64), "shape"),
             numpy_helper.from_array((np.arange(4, dtype=np.float32) / 3).reshape(2, 2), "c")]
    nodes = [helper.make_node("Identity", ["x"], ["ident"]),
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["relu_reshaped"]),
             helper.make_node("Relu", ["x"], ["relu"]),
             helper.make_node("Identity", ["relu"], ["relu_again"]),
             helper.make_node("Identity", ["c"], ["const"])]
    model = helper.make_model(helper.make_graph(nodes, "aliases", [x, unused], outs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    model = onnx.shape_inference.infer_shapes(model)
    graph = compile_onnx_to_c(model, "aliases")
    host = build_graph_library(graph, tmp_path)  # -Wall -Wextra -Werror
    inputs = random_inputs(graph.inputs)
    for got, want in zip(host(*inputs), onnxruntime_run(model, inputs)):
        assert np.array_equal(got, want)


def test_arena_layout_shares_bytes_only_between_disjoint_lifetimes():
    storages = [100, 200, 50]
    slots = [Slot("arena", i, n) for i, n in enumerate(storages)]

    def ref(i):
        return TensorRef(slots[i], 0, (storages[i] // 4,), "float32")

    # storage 0 lives at step 0, storage 1 at steps 0-1, storage 2 at steps 1-2
    steps = [KernelCall("a", (ref(0), ref(1))), KernelCall("b", (ref(1), ref(2))),
             KernelCall("c", (ref(2),))]
    plan = GraphPlan(inputs=[], outputs=[], storages=storages, steps=steps)
    scratch = [0, 64, 0]
    layout = layout_arena(plan, scratch)
    blocks = [(layout.storage_offsets[0], 100, 0, 0), (layout.storage_offsets[1], 200, 0, 1),
              (layout.storage_offsets[2], 50, 1, 2), (layout.scratch_offsets[1], 64, 1, 1)]
    for i, (o1, n1, a1, b1) in enumerate(blocks):
        assert o1 % 16 == 0 and o1 + n1 <= layout.total
        for o2, n2, a2, b2 in blocks[i + 1:]:
            if a1 <= b2 and a2 <= b1:  # alive at a common step
                assert o1 + n1 <= o2 or o2 + n2 <= o1
    # storage 0 (dead after step 0) shares bytes with a block of steps 1-2: 336 < 448 bytes
    assert layout.total < sum(-(-n // 16) * 16 for n in storages + [64])


# --- float immediates ------------------------------------------------------------------------


def test_hex_float_literals_round_trip():
    assert hex_float(1.5) == "0x1.8p+0f"
    assert hex_float(-3.0) == "(-0x1.8p+1f)"
    assert hex_float(0.0) == "0x0p+0f"
    assert hex_float(float("inf")) == "INFINITY"
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(200), [1 / 3, 1e-30, 1e-42, 3.4e38]])
    for v in values.astype(np.float32):
        text = hex_float(float(v)).strip("()").rstrip("f")
        assert np.float32(float.fromhex(text)) == v


def test_folded_constants_are_bit_exact(tmp_path):
    """x * c1 + c2 with constants that 7 significant digits cannot represent (CodeGenC's
    default printing would be off by an ulp): the C must equal float32 numpy bit for bit."""
    c1 = np.float32(1 / 3)
    c2 = np.nextafter(np.float32(1.1), np.float32(2))
    assert np.float32(float(f"{c1:.6e}")) != c1  # the premise: 7 digits lose the value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
    inits = [numpy_helper.from_array(np.array(c1), "c1"), numpy_helper.from_array(np.array(c2), "c2")]
    nodes = [helper.make_node("Mul", ["x", "c1"], ["t"]), helper.make_node("Add", ["t", "c2"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "affine", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    graph = compile_onnx_to_c(model, "affine")
    assert hex_float(float(c1)) in graph.kernels_c + graph.weights_c
    host = build_graph_library(graph, tmp_path)
    xin = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    (got,) = host(xin)
    want = xin * c1 + c2
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# --- bad inputs --------------------------------------------------------------------------------


def test_rejects_unknown_weight_name(compiled):
    model, _ = compiled["matmul_bias"]
    with pytest.raises(ValueError, match="'no_such_weight' is not an initializer"):
        compile_onnx_to_c(model, "bad", weights_as_inputs=["no_such_weight"])


def test_rejects_dynamic_shapes():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "dyn", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="input 'x': dimension 0 is dynamic"):
        compile_onnx_to_c(model, "dyn")


def test_rejects_graph_name_that_is_not_a_c_identifier(compiled):
    model, _ = compiled["matmul_bias"]
    with pytest.raises(ValueError, match="not a C identifier"):
        compile_onnx_to_c(model, "mamba-step")
