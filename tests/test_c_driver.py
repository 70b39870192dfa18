"""The model driver generator (lumamba.export.project.model_driver) on small hand-made manifests, run as host C against numpy.

The synthetic model has the shape of LuMamba's schedule with 2 x 10 samples and S = 5 tokens:

    embed  once      z        = tanh(reshape(window, (S, 4)) @ We + be)
    fwd    forward   h        = tanh(z[t] @ Wx + h @ Wh + b);  a[t] = z[t] + h       (state h)
    rev    reverse   g        = tanh(z[t] @ Wx' + g @ Wh' + b'); z2[t] = a[t] + g   (state g)
    hstep  forward   acc      = acc + relu(z2[t] @ Wq)                               (state acc, read later)
    hout   once      logits   = (acc / S) @ Wo + bo

fwd and rev have one structure (different weights), as LuMamba's encoder steps. S is odd, so
after the loops the latest state is in the second copy of each double buffer: a driver that lost
track of the swap would read stale state.

Tolerance 1e-5 absolute: float32 on both sides with values of order 1; tanh comes from glibc in
the C and from numpy in the reference (each within an ulp or two), and the longest chain is ~20
ops, so differences stay near 1e-6.
"""
from __future__ import annotations

import ctypes
import re
import shutil
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lumamba.export.project.model_driver import GraphCall, generate_driver, plan_memory
from lumamba.export.project.firmware_project import compile_model, write_project
from lumamba.export.project.host_c_runner import load_host_c
from lumamba.export.onnx.manifest import Binding, BufferSpec, GraphSpec, Manifest, Stage, TensorSpec
from lumamba.export.onnx.exporter import structure_fingerprint
from lumamba.export.onnx.schedule import run_schedule
from lumamba.export.codegen.onnx_frontend import compile_onnx_to_c
from lumamba.firmware import ROOT as FIRMWARE_ROOT

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a host gcc")

C, T, S, D, K = 2, 10, 5, 4, 3   # channels, samples, tokens, width, classes
TOL = 1e-5


def runtime_status(name: str) -> int:
    header = (FIRMWARE_ROOT / "runtime" / "lumamba_runtime.h").read_text()
    return int(re.search(rf"#define LUMAMBA_{name} (\d+)", header).group(1))


# --- the synthetic graphs -----------------------------------------------------------------------


def _model(name, nodes, inputs, outputs, weights) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, name, [vi(n, TensorProto.FLOAT, s) for n, s in inputs],
        [vi(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def make_weights(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.5):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    return {"embed": {"We": w(D, D), "be": w(D)},
            "fwd": {"Wx": w(D, D), "Wh": w(D, D), "b": w(D)},
            "rev": {"Wx": w(D, D), "Wh": w(D, D), "b": w(D)},
            "hstep": {"Wq": w(D, D)},
            "hout": {"Wo": w(D, K), "bo": w(K), "inv_s": np.array(1 / S, np.float32)}}


def make_graphs(weights) -> dict[str, onnx.ModelProto]:
    node = helper.make_node
    row = (1, D)
    rnn = [node("MatMul", ["x_t", "Wx"], ["xw"]), node("MatMul", ["h", "Wh"], ["hw"]),
           node("Add", ["xw", "hw"], ["s0"]), node("Add", ["s0", "b"], ["s1"]),
           node("Tanh", ["s1"], ["h_out"]), node("Add", ["acc_in", "h_out"], ["acc_out"])]
    rnn_ports = ([("x_t", row), ("acc_in", row), ("h", row)], [("acc_out", row), ("h_out", row)])
    shape = {"shape": np.array([S, D], np.int64)}
    return {
        "embed": _model("embed", [node("Reshape", ["window", "shape"], ["r"]), node("MatMul", ["r", "We"], ["m"]),
                                  node("Add", ["m", "be"], ["a"]), node("Tanh", ["a"], ["z"])],
                        [("window", (1, C, T))], [("z", (S, D))], {**weights["embed"], **shape}),
        "fwd": _model("fwd", rnn, *rnn_ports, weights["fwd"]),
        "rev": _model("rev", rnn, *rnn_ports, weights["rev"]),
        "hstep": _model("hstep", [node("MatMul", ["z_t", "Wq"], ["q"]), node("Relu", ["q"], ["r"]),
                                  node("Add", ["acc_in", "r"], ["acc_out"])],
                        [("z_t", row), ("acc_in", row)], [("acc_out", row)], weights["hstep"]),
        "hout": _model("hout", [node("Mul", ["acc", "inv_s"], ["m"]), node("MatMul", ["m", "Wo"], ["l"]),
                                node("Add", ["l", "bo"], ["logits"])],
                       [("acc", row)], [("logits", (1, K))], weights["hout"]),
    }


def _stage(graph, loop, ins, outs, zero=()):
    def bind(port, ref):
        if ref.endswith("[patch t]"):
            return Binding(port, ref.removesuffix("[patch t]"), patch=True)
        return Binding(port, ref[:-3], True) if ref.endswith("[t]") else Binding(port, ref)
    return Stage(graph, loop, tuple(bind(*b) for b in ins.items()), tuple(bind(*b) for b in outs.items()), tuple(zero))


P = T // S   # samples per patch


def make_streamed(graphs) -> tuple[dict[str, onnx.ModelProto], Manifest]:
    """The synthetic model with its embedding streamed as LuMamba's front end is: `embed` runs per
    patch (forward) on patch t of the window (a patch binding), z[t] = tanh(reshape(patch, (1, 4)) @ We + be)."""
    node = helper.make_node
    weights = {k: numpy_helper.to_array(i) for i in graphs["embed"].graph.initializer for k in [i.name]}
    weights["shape"] = np.array([1, D], np.int64)
    embed = _model("embed", [node("Reshape", ["patch", "shape"], ["r"]), node("MatMul", ["r", "We"], ["m"]),
                             node("Add", ["m", "be"], ["a"]), node("Tanh", ["a"], ["z_t"])],
                   [("patch", (1, C, P))], [("z_t", (1, D))], weights)
    streamed = {**graphs, "embed": embed}
    base = make_manifest(graphs)
    first = _stage("embed", "forward", {"patch": "window[patch t]"}, {"z_t": "z[t]"})
    graph_specs = tuple(graph_spec(n, m) for n, m in streamed.items())
    manifest = Manifest(**{**base.__dict__, "graphs": graph_specs, "schedule": (first, *base.schedule[1:])})
    manifest.validate()
    return streamed, manifest


def reference_streamed(weights, window: np.ndarray) -> np.ndarray:
    """`reference` with z[t] from patch t (C x P samples at column t * P), flattened channel-major."""
    patches = window.reshape(C, S, P).transpose(1, 0, 2).reshape(S, C * P)
    return reference(weights, patches.reshape(C, T))   # reference reshapes (C, T) to (S, D) row by row


def graph_spec(name: str, model: onnx.ModelProto) -> GraphSpec:
    ports = [(tuple(TensorSpec(v.name, tuple(d.dim_value for d in v.type.tensor_type.shape.dim)) for v in vs))
             for vs in (model.graph.input, model.graph.output)]
    return GraphSpec(name, f"{name}.onnx", name if name not in ("fwd", "rev") else "step", *ports,
                     sources=(), structure=structure_fingerprint(model), n_params=0)


def make_manifest(graphs, zero_head_acc: bool = True) -> Manifest:
    buffers = (BufferSpec("window", (1, C, T), "input"), BufferSpec("z", (S, D), "activation"),
               BufferSpec("a", (S, D), "activation"), BufferSpec("z2", (S, D), "activation"),
               BufferSpec("h", (1, D), "state"), BufferSpec("g", (1, D), "state"),
               BufferSpec("acc", (1, D), "state"), BufferSpec("logits", (1, K), "output"))
    schedule = (
        _stage("embed", "once", {"window": "window"}, {"z": "z"}),
        _stage("fwd", "forward", {"x_t": "z[t]", "acc_in": "z[t]", "h": "h"}, {"acc_out": "a[t]", "h_out": "h"}, ["h"]),
        _stage("rev", "reverse", {"x_t": "z[t]", "acc_in": "a[t]", "h": "g"}, {"acc_out": "z2[t]", "h_out": "g"}, ["g"]),
        _stage("hstep", "forward", {"z_t": "z2[t]", "acc_in": "acc"}, {"acc_out": "acc"},
               ["acc"] if zero_head_acc else []),
        _stage("hout", "once", {"acc": "acc"}, {"logits": "logits"}),
    )
    manifest = Manifest(config={}, n_classes=K, channel_names=("C3", "C4"), n_samples=T, n_patches=S,
                        graphs=tuple(graph_spec(n, m) for n, m in graphs.items()), buffers=buffers, schedule=schedule,
                        input_buffer="window", latent_buffer="z2", logits_buffer="logits", opset=18, ir_version=10)
    manifest.validate()
    return manifest


def reference(weights, window: np.ndarray, store_a=None) -> np.ndarray:
    """The synthetic model as a plain numpy loop, float32 throughout; `store_a` (if given) maps a
    row of buffer a to what reading it back gives (an int8 buffer)."""
    f = np.float32
    z = np.tanh(window.reshape(S, D) @ weights["embed"]["We"] + weights["embed"]["be"])
    a, z2 = np.zeros((S, D), f), np.zeros((S, D), f)
    h = np.zeros(D, f)
    for t in range(S):
        w = weights["fwd"]
        h = np.tanh(z[t] @ w["Wx"] + h @ w["Wh"] + w["b"])
        a[t] = z[t] + h if store_a is None else store_a(z[t] + h)
    g = np.zeros(D, f)
    for t in reversed(range(S)):
        w = weights["rev"]
        g = np.tanh(z[t] @ w["Wx"] + g @ w["Wh"] + w["b"])
        z2[t] = a[t] + g
    acc = np.zeros(D, f)
    for t in range(S):
        acc = acc + np.maximum(z2[t] @ weights["hstep"]["Wq"], 0)
    w = weights["hout"]
    out = (acc * w["inv_s"]) @ w["Wo"] + w["bo"]
    assert out.dtype == f
    return out


def windows(n: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, C, T)).astype(np.float32)


def write_driver_project(directory, manifest, graphs) -> None:
    """model.c/h from model_driver plus each graph's own C (no shared kernels), ready for load_host_c."""
    calls = {}
    for name, model in graphs.items():
        cg = compile_onnx_to_c(model, f"g_{name}")
        calls[name] = GraphCall(cg.name, cg)
        for fname, text in cg.sources().items():
            (directory / fname).write_text(text)
    for fname, text in generate_driver(manifest, calls).items():
        (directory / fname).write_text(text)


@pytest.fixture(scope="module")
def synthetic():
    weights = make_weights()
    graphs = make_graphs(weights)
    return weights, graphs, make_manifest(graphs)


# --- tests --------------------------------------------------------------------------------------


def test_driver_matches_numpy_loop(synthetic, tmp_path):
    weights, graphs, manifest = synthetic
    write_driver_project(tmp_path, manifest, graphs)
    model = load_host_c(tmp_path)
    x = windows()
    got = model(x)
    want = np.stack([reference(weights, w) for w in x])
    err = float(np.abs(got - want).max())
    print(f"synthetic driver vs numpy: max abs error {err:.2e}")
    assert err <= TOL
    # a second pass over the same windows gives the same bits: no state leaks between calls
    np.testing.assert_array_equal(model(x[::-1])[::-1], got)
    # parallel copies of the library (batched scoring) give the same bits, window for window
    many = np.concatenate([windows(7, seed=2), x])
    parallel = load_host_c(tmp_path, workers=3)
    assert parallel.workers == 3
    np.testing.assert_array_equal(parallel(many).view(np.uint32), model(many).view(np.uint32))
    with pytest.raises(ValueError, match="workers must be >= 1"):
        load_host_c(tmp_path, workers=0)


def test_shared_structure_compiles_once_with_weights_as_arguments(synthetic, tmp_path):
    """Through firmware_project: fwd and rev share one kernel set; each passes its own weights."""
    weights, graphs, manifest = synthetic
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for name, model in graphs.items():
        onnx.save(model, onnx_dir / f"{name}.onnx")
    manifest.save(onnx_dir)
    compiled = compile_model(Manifest.load(onnx_dir), onnx_dir)
    assert sorted(compiled.cgraphs) == ["lumamba_embed", "lumamba_hout", "lumamba_hstep", "lumamba_step"]
    assert compiled.calls["fwd"].function == compiled.calls["rev"].function == "lumamba_step"
    assert len(compiled.calls["fwd"].weights) == 3 and compiled.calls["fwd"].weights != compiled.calls["rev"].weights
    project = tmp_path / "project"
    project.mkdir()
    (project / "lumamba_stale_kernels.c").write_text("/* stale: kernels generated by TVM. Do not edit. */\n")
    (project / "user_extra.c").write_text("/* the user's own code */\nint user_extra;\n")
    write_project(compiled, project, windows(1), board="host")
    assert not (project / "lumamba_stale_kernels.c").exists()     # an earlier export's source is gone
    assert (project / "user_extra.c").is_file()                    # the user's is kept
    assert not list(project.glob("lumamba_fwd*")) and not list(project.glob("lumamba_rev*"))
    x = windows()
    got = load_host_c(project)(x)
    want = np.stack([reference(weights, w) for w in x])
    assert float(np.abs(got - want).max()) <= TOL


def test_reading_a_buffer_before_writing_it_reads_zeros(synthetic, tmp_path):
    """Without `zero` on the head accumulator the ORT runner reads zeros (fresh buffers); the
    driver must clear it too, at every call, although its bytes are shared with other blocks."""
    weights, graphs, _ = synthetic
    manifest = make_manifest(graphs, zero_head_acc=False)
    write_driver_project(tmp_path, manifest, graphs)
    model = load_host_c(tmp_path)
    x = windows()
    for _ in range(2):
        got = model(x)
        assert float(np.abs(got - np.stack([reference(weights, w) for w in x])).max()) <= TOL


def test_memory_plan(synthetic):
    _, graphs, manifest = synthetic
    calls = {n: GraphCall(f"g_{n}", compile_onnx_to_c(m, f"g_{n}")) for n, m in graphs.items()}
    plan = plan_memory(manifest, calls)
    assert plan.double_buffered == ("acc", "g", "h")
    names = {b.name for b in plan.blocks}
    assert {"buf_h", "buf_h_next", "buf_acc", "buf_acc_next"} <= names
    assert not names & {"buf_window", "buf_logits"}          # the caller's memory is used in place
    counts_input = plan.block("counts_window")               # ... except lumamba_infer_counts()'s input
    assert (counts_input.nbytes, counts_input.first, counts_input.last) == (C * T * 4, 0, 0)
    for i, b in enumerate(plan.blocks):
        assert b.offset % 16 == 0 and b.offset + b.nbytes <= plan.total
        for other in plan.blocks[i + 1:]:
            if b.first <= other.last and other.first <= b.last:   # alive in a common stage
                assert b.offset + b.nbytes <= other.offset or other.offset + other.nbytes <= b.offset, (b, other)
    assert plan.total < sum(-(-b.nbytes // 16) * 16 for b in plan.blocks)   # dead blocks share bytes
    # model.h states the arena it reserves, and the least any arena for this schedule needs
    model_h = generate_driver(manifest, calls)["model.h"]
    assert f"#define LUMAMBA_ARENA_BYTES {plan.total}u" in model_h
    assert f"#define LUMAMBA_ARENA_LOWER_BOUND_BYTES {plan.lower_bound}u" in model_h
    alive = [sum(b.nbytes for b in plan.blocks if b.first <= i <= b.last and not b.name.startswith("scratch_"))
             + calls[stage.graph].cgraph.arena_lower_bound for i, stage in enumerate(manifest.schedule)]
    assert plan.lower_bound == max(alive) <= plan.total


def test_status_codes(synthetic, tmp_path):
    weights, graphs, manifest = synthetic
    write_driver_project(tmp_path, manifest, graphs)
    model = load_host_c(tmp_path)
    x = windows(1)[0]
    logits = np.full(K, 7.0, np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[1, 3] = bad
        assert model.infer(y, logits) == runtime_status("ERR_NONFINITE_INPUT")
        assert np.all(logits == 7.0)                                # untouched on failure
    with pytest.raises(ValueError, match="NONFINITE_INPUT"):
        model(np.where(np.arange(T) == 4, np.nan, x)[None])
    window_ptr = x.ctypes.data_as(ctypes.c_void_p)
    assert model._lib.lumamba_infer(window_ptr, None) == runtime_status("ERR_NULL_POINTER")
    assert model._lib.lumamba_infer(None, logits.ctypes.data_as(ctypes.c_void_p)) == runtime_status("ERR_NULL_POINTER")
    # a fresh copy of the library, before lumamba_init()
    fresh = tmp_path / "fresh.so"
    shutil.copy(model.library, fresh)
    lib = ctypes.CDLL(str(fresh))
    assert lib.lumamba_infer(window_ptr, logits.ctypes.data_as(ctypes.c_void_p)) == runtime_status("ERR_NOT_INITIALISED")
    assert lib.lumamba_init() == 0
    assert lib.lumamba_infer(window_ptr, logits.ctypes.data_as(ctypes.c_void_p)) == 0
    np.testing.assert_allclose(logits, reference(weights, x), atol=TOL, rtol=0)


def check_counts_entry(model, counts: np.ndarray, method: str) -> None:
    """lumamba_infer_counts() on `counts` (from the caller's memory and from lumamba_counts_buffer())
    gives bit for bit lumamba_infer() on the window the host mirror of the normalisation computes."""
    from lumamba.stream.reference import device_normalise

    want = np.empty(K, np.float32)
    assert model.infer(device_normalise(counts, 0.1, method), want) == 0
    got = np.full(K, 7.0, np.float32)
    assert model.infer_counts(counts, 0.1, got) == 0
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    model._lib.lumamba_counts_buffer.restype = ctypes.POINTER(ctypes.c_int16)
    buffer = model._lib.lumamba_counts_buffer()
    ctypes.memmove(buffer, counts.ctypes.data, counts.nbytes)
    in_place = np.full(K, 7.0, np.float32)
    assert model._lib.lumamba_infer_counts(buffer, ctypes.c_float(0.1), in_place.ctypes.data_as(ctypes.c_void_p)) == 0
    np.testing.assert_array_equal(in_place.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("method", ["zscore", "robust", "fixed"])
def test_counts_entry_is_the_float_entry_on_the_device_normalised_window(synthetic, tmp_path, method):
    """lumamba_infer_counts() normalises the int16 counts by the manifest's method (model.h says
    which) and gives, bit for bit, what lumamba_infer() gives on the window the host mirror of
    that normalisation computes; the mirror itself is checked against the C and against
    lumamba.normalise in test_normalise_c.py."""
    import dataclasses

    from lumamba.normalise import spec

    _, graphs, manifest = synthetic
    write_driver_project(tmp_path, dataclasses.replace(manifest, preprocess=spec(method)), graphs)
    assert f"#define LUMAMBA_NORMALISATION LUMAMBA_NORM_{method.upper()}\n" in (tmp_path / "model.h").read_text()
    model = load_host_c(tmp_path)
    rng = np.random.default_rng(4)
    cases = [rng.integers(-3000, 3000, (C, T)), np.stack([np.full(T, 1234), rng.integers(-9, 9, T)]),
             np.stack([np.zeros(T), rng.integers(-32768, 32767, T)])]       # a constant channel, a dead lead
    for counts in (np.asarray(c, np.int16) for c in cases):
        # in place: the counts in lumamba_counts_buffer(), the upper half of the arena's input block
        check_counts_entry(model, counts, method)
    logits = np.full(K, 7.0, np.float32)
    for scale in (0.0, -1.0, float("nan"), float("inf")):
        assert model.infer_counts(cases[0].astype(np.int16), scale, logits) == runtime_status("ERR_BAD_ARGUMENT")
    assert np.all(logits == 7.0)
    assert model._lib.lumamba_infer_counts(None, ctypes.c_float(0.1), logits.ctypes.data_as(ctypes.c_void_p)) \
        == runtime_status("ERR_NULL_POINTER")


@pytest.fixture(scope="module")
def streamed(synthetic):
    weights, graphs, _ = synthetic
    return (weights, *make_streamed(graphs))


def test_streamed_input_matches_numpy_and_holds_no_float_window(streamed, tmp_path):
    """A stage that reads patch t of the window (manifest patch binding): the driver copies the patch
    (C rows x P samples at column t * P) into a block of C * P floats before each call; with no stage
    reading the window whole, the arena holds no float window, only the int16 counts block."""
    weights, graphs, manifest = streamed
    write_driver_project(tmp_path, manifest, graphs)
    x = windows()
    got = load_host_c(tmp_path)(x)
    want = np.stack([reference_streamed(weights, w) for w in x])
    assert float(np.abs(got - want).max()) <= TOL
    calls = {n: GraphCall(f"g_{n}", compile_onnx_to_c(m, f"g_{n}")) for n, m in graphs.items()}
    plan = plan_memory(manifest, calls)
    names = {b.name for b in plan.blocks}
    assert "counts_window" not in names
    counts, patch = plan.block("counts_int16"), plan.block("patch_input")
    assert (counts.nbytes, counts.first, counts.last) == (C * T * 2, 0, 0)
    assert (patch.nbytes, patch.first, patch.last) == (C * P * 4, 0, 0)


@pytest.mark.parametrize("method", ["zscore", "robust", "fixed"])
def test_streamed_counts_entry_normalises_patch_by_patch(streamed, tmp_path, method):
    """lumamba_infer_counts() on a streamed schedule normalises each patch from the counts (per-channel
    statistics first): bit for bit lumamba_infer() on the whole window the host mirror normalises,
    from the caller's counts and from lumamba_counts_buffer() alike."""
    import dataclasses

    from lumamba.normalise import spec

    _, graphs, manifest = streamed
    write_driver_project(tmp_path, dataclasses.replace(manifest, preprocess=spec(method)), graphs)
    model = load_host_c(tmp_path)
    rng = np.random.default_rng(6)
    for counts in (rng.integers(-3000, 3000, (C, T)).astype(np.int16),
                   np.stack([np.full(T, 1234), rng.integers(-32768, 32767, T)]).astype(np.int16)):
        check_counts_entry(model, counts, method)
    logits = np.full(K, 7.0, np.float32)
    assert model.infer_counts(counts, float("nan"), logits) == runtime_status("ERR_BAD_ARGUMENT")
    if method == "fixed":   # a finite but huge scale overflows a normalised sample: refused, logits untouched
        assert model.infer_counts(counts, 3e38, logits) == runtime_status("ERR_NONFINITE_INPUT")
    assert np.all(logits == 7.0)


def test_generated_driver_is_plain_static_c(synthetic):
    _, graphs, manifest = synthetic
    calls = {n: GraphCall(f"g_{n}", compile_onnx_to_c(m, f"g_{n}")) for n, m in graphs.items()}
    sources = generate_driver(manifest, calls)
    code = re.sub(r"/\*.*?\*/", "", sources["model.c"], flags=re.S)
    assert not re.search(r"\b(malloc|calloc|realloc|free|alloca)\b", code)
    assert "#define LUMAMBA_N_CHANNELS 2\n" in sources["model.h"]
    assert "#define LUMAMBA_N_SAMPLES 10\n" in sources["model.h"]
    assert "#define LUMAMBA_N_CLASSES 3\n" in sources["model.h"]
    assert "lumamba_check_finite(window" in code
    assert generate_driver(manifest, calls) == sources            # deterministic


def test_rejects_schedules_it_cannot_run(synthetic):
    _, graphs, manifest = synthetic
    calls = {n: GraphCall(f"g_{n}", compile_onnx_to_c(m, f"g_{n}")) for n, m in graphs.items()}
    stages = list(manifest.schedule)

    def with_stage(i, stage, **changes):
        m = Manifest(**{**manifest.__dict__, "schedule": tuple(stages[:i] + [stage] + stages[i + 1:]), **changes})
        return m

    # rev reading and writing rows of the same buffer: input and output would alias
    aliasing = _stage("rev", "reverse", {"x_t": "z[t]", "acc_in": "a[t]", "h": "g"}, {"acc_out": "a[t]", "h_out": "g"})
    with pytest.raises(ValueError, match="alias"):
        generate_driver(with_stage(2, aliasing), calls)
    # writing the caller's const window
    into_input = _stage("hout", "once", {"acc": "acc"}, {"logits": "window"})
    with pytest.raises(ValueError, match="input buffer"):
        plan_memory(with_stage(4, into_input), calls)
    with pytest.raises(ValueError, match="encoder-only"):
        generate_driver(Manifest(**{**manifest.__dict__, "logits_buffer": None}), calls)
    with pytest.raises(ValueError, match=r"no compiled C for graph\(s\) \['hout'\]"):
        generate_driver(manifest, {k: v for k, v in calls.items() if k != "hout"})
    wrong = dict(calls, hout=calls["hstep"])     # a compiled graph with other ports
    with pytest.raises(ValueError, match="graph 'hout'"):
        generate_driver(manifest, wrong)


# --- spans and rows bindings (the chunked Mamba form) --------------------------------------------


def make_chunked(graphs) -> tuple[dict[str, onnx.ModelProto], Manifest]:
    """The synthetic model run in chunks, as the chunked Mamba form runs its stages: fwd over the
    token spans [0, 2) then [2, 5), rev over [2, 5) then [0, 2) (the same graphs, the state carried),
    and the head per chunk of z2 rows (rows bindings [0, 3) and [3, 5), one graph per chunk shape):
    acc += sum over the chunk's rows of relu(z2 @ Wq), which is hstep's sum over t."""
    node = helper.make_node
    wq = {"Wq": numpy_helper.to_array(graphs["hstep"].graph.initializer[0]), "axes": np.array([0], np.int64)}
    chunked = {k: v for k, v in graphs.items() if k != "hstep"}
    for n in (3, 2):
        chunked[f"hchunk{n}"] = _model(f"hchunk{n}", [node("MatMul", ["z", "Wq"], ["q"]), node("Relu", ["q"], ["r"]),
                                                      node("ReduceSum", ["r", "axes"], ["s"], keepdims=1),
                                                      node("Add", ["acc_in", "s"], ["acc_out"])],
                                       [("z", (n, D)), ("acc_in", (1, D))], [("acc_out", (1, D))], wq)
    base = make_manifest(graphs)
    embed, fwd, rev, _, hout = base.schedule
    schedule = (embed, replace(fwd, span=(0, 2)), replace(fwd, span=(2, 5), zero=()),
                replace(rev, span=(2, 5)), replace(rev, span=(0, 2), zero=()),
                Stage("hchunk3", "once", (Binding("z", "z2", rows=(0, 3)), Binding("acc_in", "acc")),
                      (Binding("acc_out", "acc"),), ("acc",)),
                Stage("hchunk2", "once", (Binding("z", "z2", rows=(3, 5)), Binding("acc_in", "acc")),
                      (Binding("acc_out", "acc"),)),
                hout)
    manifest = replace(base, graphs=tuple(graph_spec(n, m) for n, m in chunked.items()), schedule=schedule)
    manifest.validate()
    return chunked, manifest


def test_spans_and_rows_bindings_match_numpy(synthetic, tmp_path):
    """A loop over a span of the tokens continues from the state the span before left (the same
    graph in several stages), and a rows binding passes rows [a, b) of a buffer: the chunked
    schedule computes the same model, in the C driver and in the host interpreter."""
    weights, graphs, _ = synthetic
    chunked, manifest = make_chunked(graphs)
    write_driver_project(tmp_path, manifest, chunked)
    x = windows()
    got = load_host_c(tmp_path)(x)
    want = np.stack([reference(weights, w) for w in x])
    assert float(np.abs(got - want).max()) <= TOL
    sessions = {n: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for n, m in chunked.items()}
    host = run_schedule(manifest, x[0], lambda name, feeds: dict(zip(
        [o.name for o in sessions[name].get_outputs()], sessions[name].run(None, feeds))))
    assert float(np.abs(host["logits"][0] - want[0]).max()) <= TOL
    model_c = generate_driver(manifest, {n: GraphCall(f"g_{n}", compile_onnx_to_c(m, f"g_{n}"))
                                         for n, m in chunked.items()})["model.c"]
    assert "for t = 2 .. 4" in model_c and "t = 5u - 1u - step;" in model_c


def test_int8_buffer_is_stored_as_codes(synthetic, tmp_path):
    """An int8 activation buffer (manifest dtype "int8"): one byte per element in the arena, the
    driver quantizes the graph's float row into it and dequantizes it for the reader, as the golden
    model's quantize / dequantize (the scale clamps a's top values too)."""
    import dataclasses

    from lumamba.quant.fixed_point import dequantize_f32, inverse_scale, quantize_f32

    weights, graphs, manifest = synthetic
    scale, zero_point = np.float32(0.02), 3
    m = dataclasses.replace(manifest, buffers=tuple(
        dataclasses.replace(b, dtype="int8", scale=float(scale), zero_point=zero_point) if b.name == "a" else b
        for b in manifest.buffers))
    m.validate()
    write_driver_project(tmp_path, m, graphs)
    model_c = (tmp_path / "model.c").read_text()
    assert "int8_t *buf_a = (int8_t *)" in model_c and "a activation int8[5, 4]" in model_c
    plan = plan_memory(m, {n: GraphCall(f"g_{n}", compile_onnx_to_c(g, f"g_{n}")) for n, g in graphs.items()})
    assert {b.name: b.nbytes for b in plan.blocks if b.name in ("buf_a", "row_1_acc_out", "row_2_acc_in")} == \
        {"buf_a": S * D, "row_1_acc_out": 4 * D, "row_2_acc_in": 4 * D}

    def store_a(row):
        return dequantize_f32(quantize_f32(row.astype(np.float32), inverse_scale(scale), zero_point), scale, zero_point)

    x = windows()
    got = load_host_c(tmp_path)(x)
    want = np.stack([reference(weights, w, store_a) for w in x])
    assert float(np.abs(got - want).max()) <= TOL
    assert float(np.abs(want - np.stack([reference(weights, w) for w in x])).max()) > 10 * TOL  # storage matters
