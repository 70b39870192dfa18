"""Per-feature input scales folded into a Linear's weight (SmoothQuant-style migration).

A Linear y = x W + b whose input features have very different ranges wastes most int8 levels of a
per-tensor activation scale on the widest feature: the demo model's frequency MLP reads FFT
magnitudes (up to ~190) next to phases (+-pi), which keep ~8 levels. With a scale s_j per input
feature, y = (x / s) (diag(s) W) + b, and one per-tensor scale fits x / s.

The scales are powers of two, s_j = 2^e_j, so the fold is exact in float32: x_j * 2^-e_j and
W[j, :] * 2^e_j only change exponents (no rounding, barring overflow or subnormals, which
`fold_input_scales` refuses), and every product x_j W[j, n] is bit-identical, hence so is the
float MatMul. The graph gains one element-wise float Mul by 2^-e (K multiplies per row, an
ordinary float op of the integer graph, C and golden model), and the int8 node quantises its
output; the weight is quantised per output channel as before, now with its rows scaled.

`alpha` is SmoothQuant's migration strength on the activation side: e_j = ceil(alpha log2(m_j / M))
with m_j the largest |value| of feature j and M the largest over all features (alpha = 1: every
feature spans (M/2, M]; alpha = 0.5: half the spread moves into the weights). ceil keeps every
scaled feature within M, so the per-tensor range is unchanged.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .calibration_features import feature_range

MIN_EXPONENT = -30          # a feature below 2^-30 of the widest is as good as zero: left as is
SUFFIX = ".input_scaled"


def power_of_two_exponents(lo: np.ndarray, hi: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """e_j (int) for features with ranges [lo_j, hi_j] (see the module docstring)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"input-scale migration strength alpha must be in (0, 1], got {alpha}")
    m = np.maximum(np.abs(np.asarray(lo, np.float64)), np.abs(np.asarray(hi, np.float64)))
    top = m.max() if m.size else 0.0
    if top == 0:
        return np.zeros(m.shape, np.int32)
    with np.errstate(divide="ignore"):
        e = np.ceil(alpha * np.log2(m / top))
    return np.where(m > 0, np.maximum(e, MIN_EXPONENT), 0).astype(np.int32)


def _consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def fold_input_scales(model: onnx.ModelProto, node_name: str, exponents: np.ndarray) -> tuple[onnx.ModelProto, str]:
    """A copy of `model` where Linear `node_name` reads x * 2^-e (a new Mul before it) with its
    weight rows (input features) times 2^e; returns (model, name of the scaled input tensor)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    index = next((i for i, n in enumerate(out.graph.node) if n.name == node_name), None)
    if index is None:
        raise ValueError(f"graph {model.graph.name}: no node {node_name!r} to fold input scales into")
    node = out.graph.node[index]
    inits = {t.name: t for t in out.graph.initializer}
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
        raise ValueError(f"node {node_name}: input scales fold into a MatMul/Gemm with a constant weight, "
                         f"not {node.op_type}")
    if len(_consumers(out, node.input[1])) != 1:
        raise ValueError(f"node {node_name}: weight {node.input[1]} is shared; cannot fold input scales into it")
    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    e = np.asarray(exponents, np.int32)
    k = w.shape[1] if transposed else w.shape[0]
    if w.ndim != 2 or e.shape != (k,):
        raise ValueError(f"node {node_name}: {e.shape} exponents for a weight of shape {w.shape} ({k} input features)")
    with np.errstate(over="ignore", under="ignore"):     # checked just below
        scaled = np.ldexp(w, e[None, :] if transposed else e[:, None]).astype(np.float32)
    inverse = np.ldexp(np.float32(1), -e).astype(np.float32)
    tiny = np.finfo(np.float32).tiny
    if not np.isfinite(scaled).all() or np.any((scaled != 0) & (np.abs(scaled) < tiny)):
        raise ValueError(f"node {node_name}: scaling the weight by 2^e leaves the normal float32 range")
    inits[node.input[1]].CopyFrom(numpy_helper.from_array(scaled, node.input[1]))
    x = node.input[0]
    x_scaled = f"{node_name}{SUFFIX}"
    const = f"{node_name}.input_scale"
    out.graph.initializer.append(numpy_helper.from_array(inverse, const))
    node.input[0] = x_scaled
    out.graph.node.insert(index, onnx.helper.make_node("Mul", [x, const], [x_scaled], name=f"{node_name}.scale_input"))
    return out, x_scaled


def fold_layers(models: dict[str, onnx.ModelProto], nodes: dict[tuple[str, str], str], features: dict,
                ranges: dict[str, dict], alphas: dict[str, float]) -> dict[str, dict]:
    """Fold input scales into every node (graph, node) -> layer of `nodes` whose layer is in
    `alphas` (layer -> alpha), from the calibration's per-feature ranges `features`. `models` and
    `ranges` (graph -> tensor -> (min, max)) are updated in place: the scaled input's range is
    the features' ranges divided by their scales (exact: powers of two). Returns the record for
    quant.json: layer -> {"alpha", "nodes": {"graph:node": {"tensor", "exponents"}}}."""
    unknown = sorted(set(alphas) - set(nodes.values()))
    if unknown:
        raise ValueError(f"input scales: layers {unknown} are no int8 Linear layer of this export")
    record: dict[str, dict] = {}
    for (graph, name), layer in nodes.items():
        if layer not in alphas:
            continue
        node = next(n for n in models[graph].graph.node if n.name == name)
        lo, hi = feature_range(features, graph, node.input[0])
        e = power_of_two_exponents(lo, hi, alphas[layer])
        models[graph], tensor = fold_input_scales(models[graph], name, e)
        inv = np.ldexp(np.float64(1), -e)
        ranges.setdefault(graph, {})[tensor] = (float((lo * inv).min()), float((hi * inv).max()))
        entry = record.setdefault(layer, {"alpha": float(alphas[layer]), "nodes": {}})
        entry["nodes"][f"{graph}:{name}"] = {"tensor": tensor, "exponents": e.tolist()}
    return record
