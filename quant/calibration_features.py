"""Per-feature ranges of the Linear inputs, recorded during calibration.

onnxruntime's calibrators give one (min, max) per tensor. A per-feature input scale
(`input_scales.py`) needs the range of every input feature (the last axis) of a Linear
(Gemm/MatMul with a constant 2-D weight): the calibration sessions are built with those inputs as
extra graph outputs, so the float schedule that records the calibration feeds also yields them at
no extra run. The per-feature ranges are always MinMax (whatever the calibrator of the per-tensor
ranges): a per-feature scale only sets relative sizes, not the clipping point.
"""
from __future__ import annotations

import numpy as np
import onnx

LINEAR_OPS = ("Gemm", "MatMul")


def linear_inputs(model: onnx.ModelProto) -> list[str]:
    """The input tensors of the Gemm/MatMul nodes with a constant 2-D weight, each once."""
    consts = {i.name: tuple(i.dims) for i in model.graph.initializer}
    out: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type in LINEAR_OPS and len(node.input) >= 2 and len(consts.get(node.input[1], ())) == 2:
            out.setdefault(node.input[0])
    return list(out)


def with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also outputs `tensors` (those not already outputs)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output} | {i.name for i in out.graph.input}
    for name in tensors:
        if name not in have:
            out.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return out


class FeatureRanges:
    """Running per-feature (min, max) over everything but the last axis, per graph and tensor."""

    def __init__(self) -> None:
        self.lo: dict[str, dict[str, np.ndarray]] = {}
        self.hi: dict[str, dict[str, np.ndarray]] = {}

    def update(self, graph: str, tensor: str, value: np.ndarray) -> None:
        v = np.asarray(value, np.float32)
        v = v.reshape(-1, v.shape[-1]) if v.ndim else v.reshape(1, 1)
        lo, hi = v.min(axis=0), v.max(axis=0)
        g_lo, g_hi = self.lo.setdefault(graph, {}), self.hi.setdefault(graph, {})
        if tensor in g_lo:
            lo, hi = np.minimum(g_lo[tensor], lo), np.maximum(g_hi[tensor], hi)
        g_lo[tensor], g_hi[tensor] = lo, hi

    def to_dict(self) -> dict[str, dict[str, list[list[float]]]]:
        """graph -> tensor -> [per-feature minima, per-feature maxima] (JSON-ready)."""
        return {g: {t: [self.lo[g][t].tolist(), self.hi[g][t].tolist()] for t in self.lo[g]} for g in self.lo}


def feature_range(features: dict, graph: str, tensor: str) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) float32 vectors of one tensor from `Calibration.features`; KeyError naming it."""
    try:
        lo, hi = features[graph][tensor]
    except KeyError:
        raise KeyError(f"calibration has no per-feature range for tensor {tensor!r} of graph {graph!r}; "
                       "recalibrate with this version (per-feature ranges are recorded since issue 14)") from None
    return np.asarray(lo, np.float32), np.asarray(hi, np.float32)

