"""The QDQ ONNX set: onnxruntime's `quantize_static` applied to each graph, for users' host inference.

Same scheme as the integer graphs: the same nodes (`nodes_to_quantize`), per-channel symmetric int8
weights (`per_channel=True`, MatMul's channel axis 1), int32 bias, int8 activations with exactly
the golden model's scales and zero points (`TensorQuantOverrides`), ranges from our calibration
(passed as onnxruntime's calibration cache, so nothing is recalibrated). The directory holds a
copy of the manifest naming the QDQ files, so `lumamba.export.load` runs it.

It is close to the golden model, not bit-exact: onnxruntime dequantises and computes Gemm/Conv in
float (or in its own int8 kernels when optimised), rounds QuantizeLinear half to even, scales
outputs by a float multiply instead of a fixed-point multiplier, computes weight scales in its
own float arithmetic and uses its own exp/erf and reduction orders in the float islands.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

from lumamba.export.onnx.manifest import Manifest
from lumamba.export.onnx.exporter import structure_fingerprint

from .calibration import METHODS
from .qgraph import QGraph

QDQ_DIR = "qdq"


def _params(scale: float, zero_point: int) -> dict:
    # 0-d arrays: onnxruntime squeezes them and takes the zero point's dtype as the quantised type
    return {"scale": np.array(scale, np.float32), "zero_point": np.array(zero_point, np.int8)}


def _activation_overrides(qgraph: QGraph) -> dict[str, list[dict]]:
    """Float tensor -> the golden model's (scale, zero_point), for every int8 node's input and output."""
    out = {}
    for node in qgraph.nodes:
        if node.op in ("quantize", "dequantize"):
            tensor = node.inputs[0] if node.op == "quantize" else node.outputs[0]
            out[tensor] = [_params(node.attrs["scale"], node.attrs["zero_point"])]
        elif node.op in ("qlinear", "qconv"):      # an int8 output read only by int8 nodes has no dequantize
            tensor = node.outputs[0][:-len(".q")]
            out[tensor] = [_params(node.attrs["y_scale"], node.attrs["y_zero_point"])]
        elif node.op == "lut" and "zero_point" in node.attrs:    # a table that ends in a quantize (lut.py)
            out[node.outputs[0][:-len(".q")]] = [_params(node.attrs["scale"], node.attrs["zero_point"])]
    return out


def quantize_graph_qdq(float_path: Path, out_path: Path, qgraph: QGraph, ranges: dict[str, tuple[float, float]],
                       method: str) -> onnx.ModelProto:
    """Write the QDQ version of one graph, quantising the int8 nodes of `qgraph`."""
    int8 = [n.name for n in qgraph.int8_nodes()]
    if not int8:
        shutil.copyfile(float_path, out_path)
        return onnx.load(str(out_path))
    overrides = _activation_overrides(qgraph)
    data = TensorsData(METHODS[method], {t: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
                                         for t, (lo, hi) in ranges.items()})
    quant_logger = logging.getLogger()     # quantize_static warns about pre-processing on the root logger
    level = quant_logger.level
    with tempfile.TemporaryDirectory(prefix="lumamba-qdq-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(data, cache)
        quant_logger.setLevel(logging.ERROR)
        try:
            quantize_static(str(float_path), str(out_path), calibration_data_reader=None,
                            calibration_cache_path=cache, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["Gemm", "MatMul", "Conv"], nodes_to_quantize=int8,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=METHODS[method],
                            extra_options={"QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                                           "WeightSymmetric": True, "ActivationSymmetric": False,
                                           "QDQDisableWeightAdjustForInt32Bias": True,
                                           "TensorQuantOverrides": overrides})
        finally:
            quant_logger.setLevel(level)
    model = onnx.load(str(out_path))
    _keep_float_consumers(model, set(int8))
    model.ir_version = onnx.load(str(float_path), load_external_data=False).ir_version
    onnx.save_model(model, str(out_path))
    return model


def _keep_float_consumers(model: onnx.ModelProto, int8: set[str]) -> None:
    """Give float ops back the unquantised tensor where onnxruntime rewired them to its Q/DQ copy.

    quantize_static routes every reader of a quantised activation through the DequantizeLinear,
    so float ops reading a Linear's input (the scan reads the x_proj input u, for one) would see
    it rounded to int8. In our scheme an int8 node quantises a private copy of its input; only
    int8 node outputs are seen dequantised by everyone.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    for dq in model.graph.node:
        q = producer.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue                                      # a weight or bias DequantizeLinear
        source = producer.get(q.input[0])
        if source is not None and source.name in int8:
            continue                                      # an int8 node's output: dequantised for all
        for node in model.graph.node:
            if node.name not in int8 and node is not q:
                node.input[:] = [q.input[0] if name == dq.output[0] else name for name in node.input]


def write_qdq_set(export_dir: Path, out_dir: Path, manifest: Manifest, qgraphs: dict[str, QGraph],
                  ranges: dict[str, dict], method: str, float_models: dict[str, onnx.ModelProto] | None = None) -> Path:
    """QDQ graphs plus a manifest naming them under `out_dir/qdq`; `float_models` replace the
    export's float graphs of those names (graphs with input scales folded in)."""
    qdq_dir = out_dir / QDQ_DIR
    qdq_dir.mkdir(parents=True, exist_ok=True)
    specs = []
    with tempfile.TemporaryDirectory(prefix="lumamba-qdq-float-") as tmp:
        for g in manifest.graphs:
            source = export_dir / g.file
            if float_models and g.name in float_models:
                source = Path(tmp) / g.file
                onnx.save_model(float_models[g.name], str(source))
            specs.append(_qdq_graph(source, qdq_dir / g.file, g, qgraphs[g.name], ranges.get(g.name, {}), method))
    qdq_manifest = dataclasses.replace(manifest, graphs=tuple(specs))
    qdq_manifest.validate()
    qdq_manifest.save(qdq_dir)
    return qdq_dir


def _qdq_graph(source: Path, target: Path, spec, qgraph: QGraph, ranges: dict, method: str):
    """One QDQ graph written to `target`; its manifest entry."""
    model = quantize_graph_qdq(source, target, qgraph, ranges, method)
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    return dataclasses.replace(spec, structure=structure_fingerprint(model), n_params=n_params)


def load_qdq(quant_dir: str | os.PathLike, optimization: str = "off"):
    """onnxruntime runner of the QDQ set (`lumamba.export.onnx.ort_runner.Runner`). "off" (default)
    disables graph optimisations, so QDQ nodes run as written (the reference semantics); "basic" lets onnxruntime
    fuse them into its int8 kernels (faster, but its x86 kernels are not a bit-exactness reference)."""
    from lumamba.export.onnx.ort_runner import Runner

    path = Path(quant_dir) / QDQ_DIR
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"no QDQ model set at {path}")
    return Runner(path, optimization)
