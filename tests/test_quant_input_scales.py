"""Per-feature input scales folded into a Linear (quant/input_scales.py) on a random `micro`
model (apava16, 320 samples): the fold is exact in float, the scaled input's range follows from the
per-feature calibration ranges, the plan is recorded, and the generated C stays bit-exact."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from test_quant_precision import N_SAMPLES, exported  # noqa: F401  (the module's fixture: a random micro export)

from lumamba.export.onnx.manifest import Manifest
from lumamba.quant import quantize
from lumamba.quant.calibration import Calibration, record_feeds
from lumamba.quant.calibration_features import linear_inputs
from lumamba.quant.config import QuantConfig
from lumamba.quant.convert import build_qgraph, candidates
from lumamba.quant.golden import GraphExecutor
from lumamba.quant.input_scales import fold_input_scales, power_of_two_exponents

FREQ_FC1 = "freq_embed.frequency_to_embed.fc1"


def _layer_node(root, layer):
    """(graph spec, onnx model, node name) of a layer, found by its weight's source name."""
    manifest = Manifest.load(root / "onnx")
    for spec in manifest.graphs:
        model = onnx.load(str(root / "onnx" / spec.file))
        for c in candidates(model, spec):
            if c.layer == layer:
                return spec, model, c.node
    raise AssertionError(f"no layer {layer}")


def test_power_of_two_exponents():
    lo = np.array([0.0, -3.2, 0.0, -1.0], np.float32)
    hi = np.array([190.0, 3.2, 0.0, 47.5], np.float32)
    e = power_of_two_exponents(lo, hi)
    # ceil(log2(m / 190)): 0, ceil(-5.89) = -5, zero feature untouched, ceil(-2.0) = -2
    assert e.tolist() == [0, -5, 0, -2]
    assert np.all(np.maximum(-lo, hi) * np.ldexp(1.0, -e) <= 190)          # the per-tensor range is kept
    assert power_of_two_exponents(lo, hi, 0.5).tolist() == [0, -2, 0, -1]   # ceil(-2.94), ceil(-1.0)
    assert power_of_two_exponents(np.zeros(3), np.zeros(3)).tolist() == [0, 0, 0]
    for alpha in (0.0, 1.5):
        with pytest.raises(ValueError, match="alpha must be in"):
            power_of_two_exponents(lo, hi, alpha)


def test_fold_is_bit_exact_in_float(exported):
    """Powers of two only change exponents: x * 2^-e and W * 2^e are exact, so every product
    and the sequential float MatMul of the contract are bit-identical (no tolerance needed)."""
    root, x, _ = exported
    spec, model, node = _layer_node(root, FREQ_FC1)
    k = next(len(onnx.numpy_helper.to_array(i)) for i in model.graph.initializer
             if i.name == next(n for n in model.graph.node if n.name == node).input[1])
    e = np.random.default_rng(0).integers(-7, 4, k).astype(np.int32)
    folded, tensor = fold_input_scales(model, node, e)
    assert model.graph.node[0].name != f"{node}.scale_input"            # the original is not touched
    feeds = record_feeds(root / "onnx", x[:1], progress=False)[spec.name]
    plain = GraphExecutor(build_qgraph(model, spec, set()))
    scaled = GraphExecutor(build_qgraph(folded, spec, set()))
    for feed in feeds:
        a, b = plain(feed), scaled(feed)
        assert all(np.array_equal(a[name], b[name]) for name in a)
    # the Linear really reads the scaled tensor, and its weight rows carry 2^e
    w0 = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    w1 = {i.name: onnx.numpy_helper.to_array(i) for i in folded.graph.initializer}
    fc = next(n for n in folded.graph.node if n.name == node)
    assert fc.input[0] == tensor and np.array_equal(w1[fc.input[1]], np.ldexp(w0[fc.input[1]], e[:, None]))


def test_fold_rejects_bad_requests(exported):
    root, _, _ = exported
    spec, model, node = _layer_node(root, FREQ_FC1)
    with pytest.raises(ValueError, match="no node 'nope'"):
        fold_input_scales(model, "nope", np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="exponents for a weight of shape"):
        fold_input_scales(model, node, np.zeros(3, np.int32))
    other = next(n.name for n in model.graph.node if n.op_type == "Add")
    with pytest.raises(ValueError, match="MatMul/Gemm with a constant weight"):
        fold_input_scales(model, other, np.zeros(3, np.int32))
    weight = next(n for n in model.graph.node if n.name == node).input[1]
    k = next(len(onnx.numpy_helper.to_array(i)) for i in model.graph.initializer if i.name == weight)
    with pytest.raises(ValueError, match="normal float32 range"):
        fold_input_scales(model, node, np.full(k, 200, np.int32))


def test_calibration_records_per_feature_ranges(exported):
    root, x, calibration = exported
    spec, model, node = _layer_node(root, FREQ_FC1)
    tensor = next(n for n in model.graph.node if n.name == node).input[0]
    lo, hi = (np.asarray(v, np.float32) for v in calibration.features[spec.name][tensor])
    assert lo.shape == hi.shape and lo.ndim == 1 and np.all(lo <= hi)
    # the per-tensor (MinMax) range is the hull of the per-feature ones
    t_lo, t_hi = calibration.ranges[spec.name][tensor]
    assert lo.min() == pytest.approx(t_lo) and hi.max() == pytest.approx(t_hi)
    assert set(calibration.features[spec.name]) == set(linear_inputs(model))
    # and they survive save/load
    again = Calibration.load(calibration.save(root / "cal.json"))
    assert again.features == calibration.features


def test_quantize_folds_the_scales_and_records_them(exported):
    root, x, calibration = exported
    spec, model, node = _layer_node(root, FREQ_FC1)
    q = quantize(root / "onnx", calibration, None, root / "scaled", input_scales={FREQ_FC1: 1.0})
    entry = json.loads((q.out_dir / "quant.json").read_text())["input_scales"][FREQ_FC1]
    tensor = next(n for n in model.graph.node if n.name == node).input[0]
    lo, hi = (np.asarray(v, np.float64) for v in calibration.features[spec.name][tensor])
    e = np.asarray(entry["nodes"][f"{spec.name}:{node}"]["exponents"])
    assert entry["alpha"] == 1.0 and e.tolist() == power_of_two_exponents(lo, hi).tolist()
    graph = q.graphs[spec.name]
    quant = next(n for n in graph.nodes if n.op == "quantize" and n.inputs[0] == f"{node}.input_scaled")
    scale = quant.attrs["scale"]
    # the scaled input's range is the features' ranges over their scales: the widest sets it
    width = max((hi * np.ldexp(1.0, -e)).max(), 0) - min((lo * np.ldexp(1.0, -e)).min(), 0)
    assert scale == pytest.approx(width / 255, rel=1e-6)
    assert q.qdq()(x[:1]).shape == (1, 2)                               # the QDQ set runs the folded graph
    with pytest.raises(ValueError, match="no int8 Linear layer"):
        quantize(root / "onnx", calibration, None, root / "bad", qdq=False, input_scales={"nope.fc": 1.0})
    stale = Calibration(calibration.method, None, 1, calibration.ranges, calibration.structures)
    with pytest.raises(KeyError, match="no per-feature range"):
        quantize(root / "onnx", stale, None, root / "bad", qdq=False, input_scales={FREQ_FC1: 1.0})



def test_input_scales_of_a_float_layer_are_not_applied(exported):
    """The automatic precision may try input scales on a layer and then keep it in float: the
    float layer is left as it is (no scaled input, nothing recorded), not refused as unknown."""
    root, _, calibration = exported
    config = QuantConfig(float=[FREQ_FC1])
    q = quantize(root / "onnx", calibration, config, root / "float_fc1", qdq=False, input_scales={FREQ_FC1: 1.0})
    assert json.loads((q.out_dir / "quant.json").read_text())["input_scales"] == {}
    assert not [n for g in q.graphs.values() for n in g.nodes if any(".input_scaled" in i for i in n.inputs)]

@pytest.mark.slow
def test_folded_model_c_is_bit_exact_with_the_golden_model(exported, tmp_path):
    """The fold is an ordinary float Mul of the integer graph: the host C of a folded model gives
    logits bit-identical to the golden model (verify_int8_on_board raises otherwise)."""
    from lumamba.export.project.boards import load_board
    from lumamba.export.project.int8_project import compile_int8_model, write_int8_project
    from lumamba.export.project.test_vectors import fixed_windows
    from lumamba.export.verify import verify_int8_on_board

    root, _, calibration = exported
    q = quantize(root / "onnx", calibration, None, tmp_path / "int8", qdq=False, input_scales={FREQ_FC1: 1.0})
    assert any(n.op == "Mul" and n.name.endswith(".scale_input") for g in q.graphs.values() for n in g.nodes)
    manifest = Manifest.load(root / "onnx")
    compiled = compile_int8_model(q.out_dir, root / "onnx", gemm_form=load_board("host").int8_gemm)
    project = write_int8_project(compiled, q.out_dir, tmp_path / "project",
                                 fixed_windows(manifest.n_channels, N_SAMPLES), board="host")
    result = verify_int8_on_board(project, "host")
    assert result.bit_exact and len(result.logits) >= 4


def test_report_json_carries_the_plans_input_scales(exported):
    """quant.json's plan -> report.json's `int8_precision`: the input scales and the golden SQNR."""
    from lumamba.export.run_report import run_report
    from lumamba.quant.export_step import quantize_for_export

    root, x, _ = exported
    q, _ = quantize_for_export(root / "onnx", x, root / "planned", target_db=200, budget=0.0, progress=False,
                               warn=lambda _: None)
    plan = json.loads((q.out_dir / "quant.json").read_text())["precision"]
    assert set(plan["input_scales"]) == set(json.loads((q.out_dir / "quant.json").read_text())["input_scales"])
    memory = {"flash": {"deployable": 1}, "ram": {"total": 1}}
    report = run_report(board="host", precision="int8", macs_per_window=1, memory=memory, precision_plan=plan)
    assert report["int8_precision"]["input_scales"] == plan["input_scales"]
    assert report["int8_precision"]["golden_sqnr_db"] == plan["golden_sqnr_db"] is not None
