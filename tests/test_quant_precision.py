"""Automatic per-layer precision and MSE-optimal weight scales on a random `micro` model
(apava16, 320 samples).

The sensitivity test damages one layer on purpose: the calibrated range of `classifier.fc3`'s
output is shrunk to 1 % of its true width, so that layer saturates. Its sensitivity (the logit SQNR
with only it int8) must then be the lowest of all layers, and the automatic mode must keep exactly
it float, at the flash cost computed here from its weight shape.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from test_quant_golden import eeg_like, make_model, sqnr

from lumamba.export import export_onnx
from lumamba.export.onnx.ort_runner import Runner
from lumamba.montages import MONTAGES
from lumamba.quant import calibrate, float_reference, quantize
from lumamba.quant.calibration import Calibration, merge_minmax
from lumamba.quant.auto_precision import (_with_float, choose_precision, cut_ranges, holdout_split,
                                           layer_extra_bytes, layer_inputs, logit_sqnr_db, plan_precision,
                                           record_plan)
from lumamba.quant.config import QuantConfig
from lumamba.quant.quantizer import candidates as quantisable_nodes
from lumamba.quant.export_step import quantize_for_export
from lumamba.quant.fixed_point import WEIGHT_MAX, quantize_weights
from lumamba.quant.weight_scales import weight_scales

N_SAMPLES, MONTAGE, BAD = 320, "apava16", "classifier.fc3"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    channels = list(MONTAGES[MONTAGE])
    export_onnx(make_model("micro"), channels, N_SAMPLES, root / "onnx")
    x = eeg_like(4, len(channels), N_SAMPLES, seed=5)
    return root, x, calibrate(root / "onnx", x, progress=False)


def damaged(calibration, export_dir):
    """The calibration with BAD's output range shrunk to 1 %: that layer saturates."""
    cal = copy.deepcopy(calibration)
    q = quantize(export_dir, cal, None, export_dir.parent / "probe", qdq=False)
    for graph in q.graphs.values():
        for node in graph.int8_nodes():
            if node.layer == BAD:
                y = node.outputs[0][:-2]                       # "<tensor>.q" -> the float tensor
                lo, hi = cal.ranges[graph.name][y]
                cal.ranges[graph.name][y] = (lo * 0.01, hi * 0.01)
    return cal


def test_sensitivity_ranks_the_damaged_layer_last_and_auto_keeps_only_it_float(exported):
    root, x, calibration = exported
    cal = damaged(calibration, root / "onnx")
    plan = choose_precision(root / "onnx", cal, x, target_db=20, n_sensitivity=2, progress=False)
    ranked = sorted(plan.sensitivity, key=plan.sensitivity.get)
    assert ranked[0] == BAD and plan.sensitivity[BAD] < 10 < plan.sensitivity[ranked[1]], plan.sensitivity
    assert plan.int8_sqnr_db < 10
    assert plan.float_layers == [BAD] and plan.met and plan.sqnr_db >= 20

    # the plan's numbers, checked independently: logit SQNR and flash cost of the chosen config.
    # Candidates are scored on the QDQ proxy (onnxruntime), the chosen one again by the golden model
    q = quantize(root / "onnx", cut_ranges(cal, plan.clips), plan.config, root / "chosen")
    ort_float = Runner(root / "onnx", "off")(x)
    assert logit_sqnr_db(ort_float, q.qdq()(x)) == pytest.approx(plan.sqnr_db)
    assert logit_sqnr_db(ort_float, q.golden()(x)) == pytest.approx(plan.golden_sqnr_db) and plan.golden_sqnr_db >= 20
    assert plan.to_dict()["golden_sqnr_db"] == plan.golden_sqnr_db and plan.to_dict()["proxy_trials"] == plan.trials
    assert BAD not in {n.layer for g in q.graphs.values() for n in g.int8_nodes()}
    fc3 = make_model("micro").classifier.fc3
    n_out, n_in = fc3.weight.shape
    # float32 weight + bias replace int8 weight + int32 bias, multiplier, shift
    assert plan.extra_bytes == 4 * n_out * n_in + 4 * n_out - (n_out * n_in + 12 * n_out)
    assert plan.extra_bytes <= plan.budget_bytes


def test_search_moves_an_opted_in_fixed_node_to_float_without_a_conflict(exported):
    """A user config opting the fixed-weight DFT nodes into int8 (`{"int8": ["frontend:*"]}`):
    the search tries each int8 layer alone, i.e. puts the others in `float` too. The opt-ins are
    listed node by node first, so a moved one leaves the int8 list instead of being named by both
    (which `decide` rejects, as the unresolved config shows)."""
    root, x, calibration = exported
    nodes = quantisable_nodes(root / "onnx")
    fixed = [c for c in nodes if not c.learned]
    assert len(fixed) == 2 and {c.graph for c in fixed} == {"frontend"}
    user = QuantConfig.from_dict({"int8": ["frontend:*"]})
    base = user.with_int8_nodes(nodes)
    assert base.int8 == [f"frontend:{c.node}" for c in fixed] and base.float == []
    decided = _with_float(base, [fixed[0].layer]).decide(nodes)
    assert decided[("frontend", fixed[0].node)] is False and decided[("frontend", fixed[1].node)] is True
    assert sum(decided.values()) == len(nodes) - 1
    with pytest.raises(ValueError, match="named by both 'float' and 'int8'"):
        QuantConfig([fixed[0].layer], user.int8).decide(nodes)
    plan = choose_precision(root / "onnx", damaged(calibration, root / "onnx"), x, target_db=20, n_sensitivity=2,
                            config=user, progress=False)
    assert {c.layer for c in fixed} <= set(plan.sensitivity) and plan.float_layers == [BAD] and plan.met


def test_budget_too_small_warns_and_keeps_everything_int8(exported):
    root, x, calibration = exported
    cal = damaged(calibration, root / "onnx")
    plan = choose_precision(root / "onnx", cal, x[:2], target_db=20, budget=0.0, n_sensitivity=1, progress=False)
    assert BAD not in plan.float_layers and not plan.met and BAD in plan.skipped
    assert plan.extra_bytes <= 0 and plan.sqnr_db < 20
    assert "misses --target-sqnr 20 dB" in plan.warning() and BAD in plan.warning()


def test_export_step_records_the_plan_in_quant_json(exported):
    root, x, _ = exported
    warnings = []
    q, line = quantize_for_export(root / "onnx", x, root / "int8", target_db=100, budget=0.0,
                                  progress=False, warn=warnings.append)
    index = json.loads((q.out_dir / "quant.json").read_text())
    assert index["precision"]["mode"] == "auto" and index["precision"]["target_sqnr_db"] == 100
    assert index["precision"]["met"] is False and warnings and "TARGET NOT MET" in line
    q, line = quantize_for_export(root / "onnx", x, root / "int8", precision="int8", progress=False)
    assert json.loads((q.out_dir / "quant.json").read_text())["precision"] == {"mode": "int8"}
    record_plan(q.out_dir, None)
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize_for_export(root / "onnx", x, root / "int8", precision="int4", progress=False)
    with pytest.raises(ValueError, match="flash budget"):
        choose_precision(root / "onnx", calibrate(root / "onnx", x[:1], progress=False), x, budget=-1)


def test_layer_extra_bytes_counts_every_int8_layer(exported):
    root, x, calibration = exported
    q = quantize(root / "onnx", calibration, None, root / "all", qdq=False)
    costs = layer_extra_bytes(q)
    assert set(costs) == {n.layer for g in q.graphs.values() for n in g.int8_nodes()}
    assert sum(costs.values()) == 3 * q.summary["int8_weight_bytes"] + 4 * sum(
        len(g.constants[n.params["bias"]]) for g in q.graphs.values() for n in g.int8_nodes()) \
        - q.summary["int32_per_channel_bytes"]


def test_mse_weight_scales_never_lose_to_absmax_and_are_used_by_quantize(exported):
    rng = np.random.default_rng(0)
    # heavy tails and long channels: only there does clipping pay at 8 bits (a few %); with short
    # channels the largest weight dominates and max-abs is already MSE-optimal
    w = rng.standard_t(2, (16, 1024))
    w[3] = 0.0                                           # an all-zero channel keeps scale 1
    errs = {}
    for method in ("absmax", "mse"):
        s = weight_scales(w, method)
        q, s2 = quantize_weights(w, s)
        assert np.array_equal(s, s2) and np.abs(q).max() <= WEIGHT_MAX and s[3] == 1
        errs[method] = ((q * s[:, None].astype(np.float64) - w) ** 2).sum(1)
    assert np.all(errs["mse"] <= errs["absmax"] + 1e-12) and np.any(errs["mse"] < errs["absmax"])
    assert np.array_equal(quantize_weights(w)[0], quantize_weights(w, weight_scales(w, "absmax"))[0])
    with pytest.raises(ValueError, match="weight scale method"):
        weight_scales(w, "l1")

    root, x, calibration = exported
    q = quantize(root / "onnx", calibration, None, root / "mse", qdq=False, weights="mse")
    assert json.loads((q.out_dir / "quant.json").read_text())["calibration"]["weights"] == "mse"
    ref = float_reference(root / "onnx")(x)
    assert sqnr(ref, q.golden()(x)) > 20


def test_holdout_split_keeps_every_fourth_window():
    x = np.arange(9, dtype=np.float32)[:, None, None]
    fit, held = holdout_split(x)
    assert held.ravel().tolist() == [3, 7] and fit.ravel().tolist() == [0, 1, 2, 4, 5, 6, 8]
    fit, held = holdout_split(x[:3])
    assert held.ravel().tolist() == [2] and fit.ravel().tolist() == [0, 1]
    fit, held = holdout_split(x[:1])
    assert fit.ravel().tolist() == held.ravel().tolist() == [0]


def test_plan_is_measured_on_windows_that_did_not_set_the_ranges(exported):
    """A held-out window 4x louder than the rest saturates the probe ranges: the plan sees the
    damage that a measurement on the calibration windows themselves hides."""
    root, _, _ = exported
    x = eeg_like(8, len(MONTAGES[MONTAGE]), N_SAMPLES, seed=7)
    x[7] *= 4
    held_out = plan_precision(root / "onnx", x, target_db=-20, progress=False)
    in_sample = choose_precision(root / "onnx", calibrate(root / "onnx", x, progress=False), x, target_db=-20,
                                 progress=False)
    assert held_out.n_windows == 2 and in_sample.n_windows == 8
    assert held_out.int8_sqnr_db < in_sample.int8_sqnr_db - 3, (held_out.int8_sqnr_db, in_sample.int8_sqnr_db)


def test_cut_ranges_bounds_the_larger_side_and_copies():
    cal = Calibration("minmax", None, 1, {"g": {"cat": (-3.0, 200.0), "y": (-4.0, 2.0)}})
    cut = cut_ranges(cal, {"g:cat": 0.25, "g:y": 0.5})
    assert cut.ranges["g"] == {"cat": (-3.0, 50.0), "y": (-2.0, 2.0)}
    assert cal.ranges["g"]["cat"] == (-3.0, 200.0) and cut_ranges(cal, {}) is cal


def test_too_wide_input_range_is_cut_before_any_layer_goes_float(exported):
    """fc3's input range stretched 40x: 1/4 of it restores most levels; the plan keeps that cut
    (no flash) instead of moving fc3 to float."""
    root, x, calibration = exported
    cal = copy.deepcopy(calibration)
    key = layer_inputs(quantize(root / "onnx", cal, None, root / "probe2", qdq=False))[BAD][0]
    graph, tensor = key.split(":", 1)
    lo, hi = cal.ranges[graph][tensor]
    cal.ranges[graph][tensor] = (40 * lo, 40 * hi)
    plan = choose_precision(root / "onnx", cal, x, target_db=60, budget=0.0, n_sensitivity=2, clip_layers=1,
                            progress=False)
    assert plan.clips == {key: 0.25} and plan.clip_layers == {key: BAD} and plan.float_layers == []
    assert plan.sqnr_db > plan.int8_sqnr_db + 3
    q = quantize(root / "onnx", cut_ranges(cal, plan.clips), None, root / "cut")
    assert logit_sqnr_db(Runner(root / "onnx", "off")(x), q.qdq()(x)) == pytest.approx(plan.sqnr_db)
    assert plan.to_dict()["input_range_cuts"] == {key: {"factor": 0.25, "layer": BAD}}


def test_merged_minmax_calibration_equals_calibrating_all_windows(exported):
    """The export's final ranges come from the plan's probe calibration plus the held-out windows'."""
    root, x, calibration = exported
    fit, held = holdout_split(x)
    merged = merge_minmax(calibrate(root / "onnx", fit, progress=False), calibrate(root / "onnx", held, progress=False))
    assert merged.ranges == calibration.ranges and merged.features == calibration.features
    assert merged.n_windows == len(x) and merged.structures == calibration.structures
    other = Calibration("percentile", 99.9, 1, calibration.ranges, calibration.structures)
    with pytest.raises(ValueError, match="only MinMax calibrations merge"):
        merge_minmax(calibration, other)
