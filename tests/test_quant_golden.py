"""Calibration, quantisation and the golden model on the `micro` config (16 channels, 320 samples).

Windows are z-scored sums of EEG-band sinusoids and noise. Tolerances:
- calibration ranges vs the float interpreter's own min/max: 1e-5 of the tensor's magnitude (the
  two float executors, onnxruntime and the golden interpreter, differ by a few ulps per op;
  the export tests bound that at 1e-5 absolute on values of magnitude ~10);
- int8 vs float: logit SQNR >= 25 dB and every int8 layer's SQNR >= 20 dB. 8-bit rounding of one
  tensor gives 35-45 dB; about ten int8 layers in series and the recurrence bring that to 25-35
  dB. A wrong scale, zero point, weight layout or requantisation shift gives < 10 dB.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from lumamba.config import CONFIGS
from lumamba.export import export_onnx, load
from lumamba.model import LuMamba
from lumamba.montages import MONTAGES
from lumamba.quant import calibrate, float_reference, load_golden, load_qdq, quantize
from lumamba.quant.calibration import record_feeds
from lumamba.quant.drift import LayerErrors
from lumamba.quant.golden import GraphExecutor
from lumamba.quant.lut import DEFAULT_MAX_TABLE_BYTES
from lumamba.quant.qgraph import QGraph
from lumamba.export.onnx.schedule import run_schedule

N_SAMPLES, MONTAGE = 320, "apava16"


def make_model(config: str, seed: int = 0) -> LuMamba:
    """A classifier with its constant-initialised parameters (norms, biases, D, A_log) perturbed."""
    torch.manual_seed(seed)
    model = LuMamba(CONFIGS[config], n_classes=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() <= 1 or name.endswith("A_log"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def eeg_like(n: int, channels: int, samples: int, seed: int, fs: float = 256.0) -> np.ndarray:
    """z-scored windows: a few band-limited rhythms with random amplitude and phase, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / fs
    x = rng.normal(0, 0.5, (n, channels, samples))
    for f in (2.0, 6.0, 10.0, 20.0):
        amp = rng.uniform(0, 1.5, (n, channels, 1))
        x += amp * np.sin(2 * np.pi * (f + rng.normal(0, 0.5, (n, channels, 1))) * t + rng.uniform(0, 6.3, (n, channels, 1)))
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    return x.astype(np.float32)


def sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    return float(10 * np.log10((ref ** 2).sum() / ((test - ref) ** 2).sum()))


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant_micro")
    model = make_model("micro")
    names = list(MONTAGES[MONTAGE])
    export_onnx(model, names, N_SAMPLES, root / "onnx", mamba_form="step")   # the step graphs by name
    x_cal = eeg_like(6, len(names), N_SAMPLES, seed=1)
    calibration = calibrate(root / "onnx", x_cal, progress=False)
    quantized = quantize(root / "onnx", calibration, out_dir=root / "int8")
    x = eeg_like(3, len(names), N_SAMPLES, seed=2)
    with torch.no_grad():
        float_logits = model(torch.from_numpy(x), names).numpy()
    return dict(root=root, model=model, names=names, x_cal=x_cal, calibration=calibration,
                quantized=quantized, x=x, float_logits=float_logits, golden=quantized.golden().stages(x))


def test_minmax_ranges_equal_the_observed_extremes(micro):
    reference = float_reference(micro["root"] / "onnx")
    seen: dict[str, dict[str, list]] = {}

    def call(name, feeds):
        env = reference.executors[name](feeds, keep=True)
        for tensor, value in env.items():
            lo_hi = seen.setdefault(name, {}).setdefault(tensor, [np.inf, -np.inf])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], float(value.min())), max(lo_hi[1], float(value.max()))
        return env

    for window in micro["x_cal"]:
        run_schedule(reference.manifest, window, call)
    ranges = micro["calibration"].ranges
    for graph in micro["quantized"].graphs.values():     # every int8 node's input and output is calibrated
        for node in graph.nodes:
            if node.op == "quantize":
                assert node.inputs[0] in ranges[graph.name]
    checked = 0
    for name, tensors in ranges.items():
        for tensor, (lo, hi) in tensors.items():
            ref_lo, ref_hi = seen[name][tensor]
            tol = 1e-5 * max(1.0, abs(ref_lo), abs(ref_hi))
            assert abs(lo - ref_lo) <= tol and abs(hi - ref_hi) <= tol, (name, tensor, lo, hi, ref_lo, ref_hi)
            checked += 1
    assert checked >= 40


def test_percentile_ranges_lie_inside_minmax(micro):
    pct = calibrate(micro["root"] / "onnx", micro["x_cal"], method="percentile", percentile=99.0, progress=False)
    assert pct.method == "percentile" and pct.n_windows == 6
    narrower = 0
    for name, tensors in micro["calibration"].ranges.items():
        for tensor, (lo, hi) in tensors.items():
            p_lo, p_hi = pct.ranges[name][tensor]
            assert lo - 1e-6 <= p_lo <= p_hi <= hi + 1e-6
            narrower += (p_hi - p_lo) < 0.9 * (hi - lo)
    assert narrower > 10
    assert calibrate(micro["root"] / "onnx", micro["x_cal"], n_windows=2, progress=False).n_windows == 2
    with pytest.raises(ValueError, match="method"):
        calibrate(micro["root"] / "onnx", micro["x_cal"], method="kmeans", progress=False)
    with pytest.raises(ValueError, match=r"shape \(B, 16, 320\)"):
        calibrate(micro["root"] / "onnx", micro["x_cal"][:, :3], progress=False)


def test_golden_logits_and_layers_are_close_to_float(micro):
    golden_logits = micro["golden"]["logits"][:, 0]
    logit_sqnr = sqnr(micro["float_logits"], golden_logits)
    golden = micro["quantized"].golden()
    reference = float_reference(micro["root"] / "onnx")
    errors = LayerErrors()
    for window in micro["x"]:
        errors.add(reference.run(window, taps=True)[1], golden.run(window, taps=True)[1])
    layers = errors.sqnr()
    int8_layers = {f"{g.name}/{n.layer}" for g in micro["quantized"].graphs.values() for n in g.int8_nodes()}
    print(f"\nmicro: logit SQNR {logit_sqnr:.1f} dB, max |logit error| "
          f"{np.abs(golden_logits - micro['float_logits']).max():.4f}")
    for key, value in layers.items():
        print(f"  {key:70s} {value:6.1f} dB{'' if key in int8_layers else '  (float)'}")
    assert logit_sqnr >= 25
    # 28 int8 layers, plus the 1 + 2 + 3 time-path convs the streamed front end's statistics passes recompute
    assert len(int8_layers) == 28 + 6 and min(layers[k] for k in int8_layers) >= 20
    assert sqnr(micro["float_logits"], micro["golden"]["logits"][:, 0]) < 60       # it is quantised at all


def test_float_interpreter_matches_onnxruntime(micro):
    ref = float_reference(micro["root"] / "onnx")(micro["x"])
    ort_logits = load(micro["root"] / "onnx", optimization="off")(micro["x"])
    assert np.abs(ref - ort_logits).max() < 1e-5


def test_golden_is_deterministic_and_the_files_round_trip(micro):
    x = micro["x"][:1]
    from_files = load_golden(micro["root"] / "int8").stages(x)
    again = micro["quantized"].golden().stages(x)
    for name, value in from_files.items():
        assert np.array_equal(value, micro["golden"][name][:1]) and np.array_equal(value, again[name])
    doc = json.loads((micro["root"] / "int8" / "graphs" / "block0_fwd.json").read_text())
    assert doc["format"] == "lumamba-qgraph" and doc["version"] == 1
    ops = [n["op"] for n in doc["nodes"]]
    assert ops.count("qlinear") == 4 and ops[:3] == ["LayerNormalization", "quantize", "qlinear"]
    assert doc["tensors"]["layer_norm.q"] == {"dtype": "int8", "shape": [1, 64]}
    doc["version"] = 99
    bad = micro["root"] / "bad" / "block0_fwd.json"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="version 1"):
        QGraph.load(bad)


def test_integer_parameters_have_integer_types_and_are_a_quarter_of_float(micro):
    summary = micro["quantized"].summary
    assert summary["int8_nodes"] == 28 + 6      # + the statistics passes' convs
    assert summary["float_weight_bytes_replaced"] == 4 * summary["int8_weight_bytes"]
    for graph in micro["quantized"].graphs.values():
        for node in graph.int8_nodes():
            p = {role: graph.constants[key] for role, key in node.params.items()}
            assert p["weight"].dtype == np.int8 and p["weight"].min() >= -127
            assert {p[r].dtype for r in ("bias", "multiplier", "shift")} == {np.dtype(np.int32)}
            assert ((p["multiplier"] >= 2 ** 30) | (p["multiplier"] == 0)).all() and (p["shift"] <= 0).all()
    # all constants together (int8 weights, int32 per-channel parameters, the float islands' float32
    # constants) against the float model's: micro's layers are narrow, so per-channel data weighs in.
    # The lookup tables (quant/lut.py) are new data traded for speed, not parameters: counted apart
    luts = [(g, n) for g in micro["quantized"].graphs.values() for n in g.nodes if n.op == "lut"]
    tables = {n.params["table"] for _, n in luts}
    total = sum(v.nbytes for g in micro["quantized"].graphs.values() for k, v in g.constants.items() if k not in tables)
    assert total < 0.4 * summary["float_model_bytes"]
    for g, n in luts:
        t = g.constants[n.params["table"]]
        assert t.shape[1] == 256 and t.dtype in (np.int8, np.float32) and t.nbytes <= DEFAULT_MAX_TABLE_BYTES


def test_config_moves_a_layer_to_float(micro, tmp_path):
    config = tmp_path / "q.json"
    config.write_text(json.dumps({"float": ["mamba_blocks.0.mamba_fwd.out_proj"]}))
    moved = quantize(micro["root"] / "onnx", micro["calibration"], config, tmp_path / "int8", qdq=False)
    block = moved.graphs["block0_fwd"]
    node = next(n for n in block.nodes if n.layer == "mamba_blocks.0.mamba_fwd.out_proj")
    assert node.op == "Gemm" and block.constants[node.inputs[1]].dtype == np.float32
    assert len(block.int8_nodes()) == 3 and moved.summary["int8_nodes"] == 27 + 6
    index = json.loads((tmp_path / "int8" / "quant.json").read_text())
    assert index["nodes"]["block0_fwd:node_linear_3"] == {"layer": "mamba_blocks.0.mamba_fwd.out_proj", "int8": False}
    # the outputs change, and that layer's output is now closer to float
    x = micro["x"][:1]
    golden, relaxed = micro["quantized"].golden(), moved.golden()
    assert not np.array_equal(relaxed.stages(x)["acc0"], micro["golden"]["acc0"][:1])
    ref_taps = float_reference(micro["root"] / "onnx").run(x[0], taps=True)[1]
    key = "block0_fwd/mamba_blocks.0.mamba_fwd.out_proj"
    relaxed_tap, int8_tap = relaxed.run(x[0], taps=True)[1][key], golden.run(x[0], taps=True)[1][key]
    assert sqnr(ref_taps[key], relaxed_tap) > sqnr(ref_taps[key], int8_tap)
    with pytest.raises(ValueError, match="match no quantisable node.*'mamba_blocks.7.\\*'"):
        quantize(micro["root"] / "onnx", micro["calibration"], {"float": ["mamba_blocks.7.*"]}, tmp_path / "x", qdq=False)


def test_quantize_rejects_a_calibration_of_another_export(micro, tmp_path):
    cal = micro["calibration"]
    other = type(cal)(cal.method, cal.percentile, cal.n_windows, cal.ranges, {**cal.structures, "frontend": "0" * 16})
    with pytest.raises(ValueError, match="frontend"):
        quantize(micro["root"] / "onnx", other, out_dir=tmp_path)
    path = cal.save(tmp_path / "cal.json")
    assert type(cal).load(path) == cal


def test_qdq_set_runs_and_is_close_to_the_golden_model(micro):
    """Not bit-exact: onnxruntime computes each int8 layer in float from dequantised values and
    rounds QuantizeLinear half to even, where the golden model accumulates exactly in int32 and
    requantises with a fixed-point multiplier (TFLM double rounding); its exp/erf and reduction
    orders differ too. Single-LSB differences then travel through the recurrence. Requirement:
    the two int8 executors are closer to each other than either is to float."""
    qdq = load_qdq(micro["root"] / "int8").stages(micro["x"])
    golden = micro["golden"]
    float_stages = load(micro["root"] / "onnx", optimization="off").stages(micro["x"])
    for buffer in ("z1", "logits"):
        between_int8 = np.sqrt(((qdq[buffer] - golden[buffer]) ** 2).mean())
        assert between_int8 <= np.sqrt(((golden[buffer] - float_stages[buffer]) ** 2).mean())
    model = onnx.load(str(micro["root"] / "int8" / "qdq" / "block0_fwd.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("Gemm") == 4
    # float consumers of a quantised input keep the float tensor (the scan reads u unrounded)
    readers = [n for n in model.graph.node if "silu" in n.input]
    assert {n.op_type for n in readers} >= {"Unsqueeze", "Mul", "QuantizeLinear"}


def test_recorded_feeds_are_what_each_graph_sees(micro):
    feeds = record_feeds(micro["root"] / "onnx", micro["x_cal"][:1], progress=False)
    S = N_SAMPLES // 40
    assert {k: len(v) for k, v in feeds.items()} == {
        **{f"frontend_stats{k}": S for k in (1, 2, 3)}, **{f"frontend_gn{k}": 1 for k in (1, 2, 3)},
        "frontend": S, "block0_fwd": S, "block0_rev": S, "head_step": S, "head_out": 1}
    executor = GraphExecutor(micro["quantized"].graphs["head_out"])
    assert executor(feeds["head_out"][0])["logits"].shape == (1, 2)
