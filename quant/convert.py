"""Float ONNX graph + calibration ranges + int8 decisions -> integer graph description (QGraph).

Every ONNX node becomes one node of the description, in the same order, except a Gemm/MatMul/Conv
with a constant weight chosen for int8, which becomes

    quantize(x) -> qlinear | qconv -> dequantize(y)

where the quantize is shared by all int8 consumers of x and left out when x is already the int8
output of another int8 node (same tensor, hence the same calibration range and parameters), and the
dequantize is left out when no float op (and no graph output) reads y.
"""
from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import numpy_helper

from lumamba.export.onnx.manifest import GraphSpec

from .config import Candidate
from .fixed_point import (INT32_MAX, activation_params, inverse_scale, quantize_bias, quantize_multiplier,
                          quantize_weights)
from .ops import OPS
from .qgraph import QGraph, QNode
from .weight_scales import weight_scales

# Local weight-name prefix -> state-dict prefix, per graph kind (see export/step_modules.py).
_UNIFY = {"keys_norm": "cross_attn.keys_norm", "values_norm": "cross_attn.values_norm",
          "k_proj": "cross_attn.cross_attention.k_proj", "v_proj": "cross_attn.cross_attention.v_proj",
          "out_proj": "cross_attn.cross_attention.out_proj", "ffn": "cross_attn.ffn",
          "layers": "cross_attn.query_self_attn.layers"}
# The window form's graph kinds (export/onnx/mamba_window.py): the local module names, in the order
# of the graph's sources, so a layer keeps the step form's name (e.g. classifier.mamba_1.out_proj).
_WINDOW_MODULES = {"encoder_pre_fwd": ("norm", "mamba"), "encoder_pre_rev": ("norm", "mamba"),
                   "encoder_scan": ("mamba",), "encoder_post": ("mamba",),
                   "head_pre": ("fc1", "mamba"), "head_scan": ("mamba",), "head_post": ("mamba", "fc3"),
                   # the chunked form (mamba_chunk.py); its scan and encoder post are the window form's
                   "encoder_chunk_pre_fwd": ("norm", "mamba"), "encoder_chunk_pre_rev": ("norm", "mamba"),
                   "head_chunk_pre": ("fc1", "mamba"), "head_chunk_post": ("mamba",)}
_WEIGHT_SUFFIX = re.compile(r"(\.weight|_weight)(\.folded\d*)?$")
QUANTISABLE = ("Gemm", "MatMul", "Conv")


def _prefixes(spec: GraphSpec) -> dict[str, str]:
    s = spec.sources
    if spec.kind == "frontend":
        return {"patch_embed": "patch_embed", "freq_embed": "freq_embed"}
    if spec.kind == "unify":
        return _UNIFY
    if spec.kind in ("frontend_patch", "frontend_stored"):     # the streamed front end's per-patch graph (unification included)
        return {"patch_embed": "patch_embed", "freq_embed": "freq_embed", **_UNIFY}
    if spec.kind.startswith(("frontend_stats", "frontend_conv")):
        return {"proj_in": "patch_embed.proj_in"}
    if spec.kind in ("encoder_step", "head_step") and len(s) == 2:
        return {"norm" if spec.kind == "encoder_step" else "fc1": s[0], "mamba": s[1]}
    if spec.kind == "head_out" and len(s) == 1:
        return {"fc3": s[0], "fc1": s[0]}
    modules = _WINDOW_MODULES.get(spec.kind, ())
    if modules and len(s) == len(modules):
        return dict(zip(modules, s))
    return {}


def layer_name(spec: GraphSpec, weight: str) -> str | None:
    """State-dict prefix of a weight initializer (`mamba.in_proj.weight` in block0_fwd ->
    `mamba_blocks.0.mamba_fwd.in_proj`), or None for a constant that is no model parameter."""
    head, _, rest = weight.partition(".")
    prefix = _prefixes(spec).get(head)
    if prefix is None or not _WEIGHT_SUFFIX.search(weight):
        return None
    return _WEIGHT_SUFFIX.sub("", f"{prefix}.{rest}" if rest else prefix)


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, (list, tuple)):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        elif not isinstance(v, (int, float, str)):
            raise NotImplementedError(f"node {node.name} ({node.op_type}): attribute {a.name} of type "
                                      f"{type(v).__name__} is not supported")
        out[a.name] = v
    return out


def _weight_of(node: onnx.NodeProto, constants: dict) -> str | None:
    """Name of the constant weight that makes `node` quantisable, or None."""
    if node.op_type not in QUANTISABLE or len(node.input) < 2 or node.input[1] not in constants:
        return None
    if node.op_type == "MatMul" and constants[node.input[1]].ndim != 2:
        return None
    return node.input[1]


def candidates(model: onnx.ModelProto, spec: GraphSpec) -> list[Candidate]:
    """The quantisable nodes of one graph with their layer names."""
    consts = _constants(model)
    out = []
    for node in model.graph.node:
        weight = _weight_of(node, consts)
        if weight is not None:
            layer = layer_name(spec, weight)
            out.append(Candidate(spec.name, node.name, layer or f"{spec.name}:{node.name}", layer is not None))
    return out


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _check_gemm(node: onnx.NodeProto, attrs: dict) -> None:
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        raise NotImplementedError(f"node {node.name}: Gemm with alpha/beta != 1 or transA is not supported")


def _conv_attrs(node: onnx.NodeProto, attrs: dict, kernel: tuple[int, ...]) -> dict:
    if len(kernel) != 2:
        raise NotImplementedError(f"node {node.name}: only 2-D Conv is supported, kernel {kernel}")
    if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])) \
            or attrs.get("auto_pad", "NOTSET") != "NOTSET":
        raise NotImplementedError(f"node {node.name}: Conv with group != 1, dilation or auto_pad is not supported")
    return {"pads": list(attrs.get("pads", [0, 0, 0, 0])), "strides": list(attrs.get("strides", [1, 1])),
            "kernel_shape": list(kernel)}


class _Builder:
    def __init__(self, model: onnx.ModelProto, spec: GraphSpec, int8: set[str], ranges: dict,
                 weights: str = "absmax"):
        self.model, self.spec, self.int8, self.ranges, self.weights = model, spec, int8, ranges, weights
        self.consts = _constants(model)
        self.nodes: list[QNode] = []
        self.constants: dict[str, np.ndarray] = {}
        self.quantized: dict[str, str] = {}          # float tensor -> its int8 tensor
        self.taps: dict[str, dict] = {}
        outputs = {o.name for o in model.graph.output}
        self.float_readers = {name: name in outputs for node in model.graph.node for name in node.output}
        for node in model.graph.node:
            for k, name in enumerate(node.input):
                int8_reader = k == 0 and node.name in int8
                if name in self.float_readers and not int8_reader:
                    self.float_readers[name] = True

    def build(self) -> QGraph:
        for node in self.model.graph.node:
            if node.op_type not in OPS:
                raise NotImplementedError(f"graph {self.spec.name}, node {node.name}: op {node.op_type} is not "
                                          f"supported by the integer graph; supported: {', '.join(sorted(OPS))}")
            weight = _weight_of(node, self.consts)
            layer = None
            if weight is not None:
                layer = layer_name(self.spec, weight) or f"{self.spec.name}:{node.name}"
            if node.name in self.int8:
                self._int8(node, layer)
            else:
                self._float(node, layer)
        return QGraph(self.spec.name, self.spec.kind, [(t.name, t.shape) for t in self.spec.inputs],
                      [(t.name, t.shape) for t in self.spec.outputs], self.nodes, self.constants, taps=self.taps)

    def _float(self, node: onnx.NodeProto, layer: str | None) -> None:
        attrs = _attrs(node)
        if node.op_type == "Conv":
            attrs = _conv_attrs(node, attrs, tuple(self.consts[node.input[1]].shape[2:]))
        if node.op_type == "Gemm":
            _check_gemm(node, attrs)
        for name in node.input:
            if name in self.consts:
                self.constants[name] = self.consts[name]
        self.nodes.append(QNode(node.op_type, node.name, list(node.input), list(node.output), attrs, layer=layer))
        if layer is not None:
            self.taps[layer] = {"tensor": node.output[0]}

    def _range(self, tensor: str, node: onnx.NodeProto) -> tuple[np.float32, int]:
        if tensor not in self.ranges:
            raise ValueError(f"calibration has no range for tensor {tensor!r} of graph {self.spec.name} "
                             f"(node {node.name}); recalibrate with this export")
        return activation_params(*self.ranges[tensor])

    def _int8(self, node: onnx.NodeProto, layer: str) -> None:
        x, y = node.input[0], node.output[0]
        w = self.consts[node.input[1]].astype(np.float32)
        bias = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        attrs = _attrs(node)
        extra = {}
        if node.op_type == "Gemm":
            _check_gemm(node, attrs)
            w = w if attrs.get("transB", 0) else w.T                    # -> (N, K)
        elif node.op_type == "MatMul":
            w = w.T
        else:
            extra = _conv_attrs(node, attrs, tuple(w.shape[2:]))
        if bias is not None and (bias.ndim != 1 or len(bias) != w.shape[0]):
            raise NotImplementedError(f"node {node.name}: bias of shape {bias.shape} is not per output channel")

        x_scale, x_zp = self._range(x, node)
        y_scale, y_zp = self._range(y, node)
        wq, w_scale = quantize_weights(w, weight_scales(w, self.weights))
        bq = quantize_bias(bias, x_scale, w_scale)
        mult_shift = [quantize_multiplier(float(x_scale) * float(s) / float(y_scale)) for s in w_scale]
        worst = np.abs(bq.astype(np.int64)) + 255 * np.abs(wq.astype(np.int64)).reshape(len(wq), -1).sum(1)
        if worst.max() > INT32_MAX:
            raise ValueError(f"node {node.name} ({layer}): the int32 accumulator could overflow "
                             f"(bound {int(worst.max())}); keep this layer float")

        key = node.name
        self.constants.update({f"{key}.weight": wq, f"{key}.bias": bq,
                               f"{key}.multiplier": np.array([m for m, _ in mult_shift], np.int32),
                               f"{key}.shift": np.array([s for _, s in mult_shift], np.int32),
                               f"{key}.w_scale": w_scale})
        xq = self._quantize(x, x_scale, x_zp)
        yq = f"{y}.q"
        op = "qconv" if node.op_type == "Conv" else "qlinear"
        self.nodes.append(QNode(op, node.name, [xq], [yq],
                                {"x_scale": float(x_scale), "x_zero_point": x_zp,
                                 "y_scale": float(y_scale), "y_zero_point": y_zp, **extra},
                                {role: f"{key}.{role}" for role in ("weight", "bias", "multiplier", "shift", "w_scale")},
                                layer))
        self.quantized[y] = yq
        self.taps[layer] = {"tensor": yq, "scale": float(y_scale), "zero_point": y_zp}
        if self.float_readers[y]:
            self.nodes.append(QNode("dequantize", f"{node.name}.dequantize", [yq], [y],
                                    {"scale": float(y_scale), "zero_point": y_zp}))

    def _quantize(self, x: str, scale: np.float32, zp: int) -> str:
        if x not in self.quantized:
            self.quantized[x] = f"{x}.q"
            self.nodes.append(QNode("quantize", f"{x}.quantize", [x], [f"{x}.q"],
                                    {"scale": float(scale), "inv_scale": float(inverse_scale(scale)), "zero_point": zp}))
        return self.quantized[x]


def build_qgraph(model: onnx.ModelProto, spec: GraphSpec, int8_nodes: set[str],
                 ranges: dict[str, tuple[float, float]] | None = None, weights: str = "absmax") -> QGraph:
    """The integer graph of one exported ONNX graph; `int8_nodes` names the nodes to quantise
    (all of them candidates), `ranges` the calibrated (min, max) of their input and output tensors,
    `weights` the weight-scale method ("absmax" or "mse", see weight_scales.py)."""
    names = {c.node for c in candidates(model, spec)}
    stray = sorted(set(int8_nodes) - names)
    if stray:
        raise ValueError(f"graph {spec.name}: nodes {stray} are not quantisable "
                         "(no Gemm/MatMul/Conv with a constant weight)")
    graph = _Builder(model, spec, set(int8_nodes), ranges or {}, weights).build()
    graph.validate()
    return graph
