"""Split the weight-only part of an ONNX graph off into a host-side "weight preparation" graph.

When weights are passed to the C as pointer arguments (so that graphs of identical shape share
one kernel set), anything the graph computes from weights alone would run on the device at every
call: torch's Linear exports as Transpose(W) + MatMul, so the device would transpose every weight
matrix per step, into an arena as large as the matrix.  This is TVM's LiftTransformParams done on
the ONNX graph: nodes whose inputs derive only from weights (and constants) move to a separate
graph that the host runs once; its outputs become the device graph's weight inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

_PREP_GRAPH_NAME = "weight_preparation"


def split_weight_preparation(
    model: onnx.ModelProto, weight_names: Sequence[str]
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(device model, preparation model) for a model whose inputs end with `weight_names`.

    The device model's inputs are its data inputs followed by the prepared weights; the
    preparation model maps the raw weights (in `weight_names` order) to those prepared weights.
    """
    graph = model.graph
    weights = set(weight_names)
    derived = set(weights)  # tensors computed from weights (and constants) only
    data = {i.name for i in graph.input if i.name not in weights}
    prep_nodes, device_nodes = [], []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if any(i in data for i in inputs):
            if _is_gemm_with_transposed(node, derived):
                transpose, node = _split_gemm_transpose(node)
                prep_nodes.append(transpose)
                derived.update(transpose.output)
            device_nodes.append(node)
            data.update(node.output)
        elif any(i in derived for i in inputs):
            prep_nodes.append(node)
            derived.update(node.output)
        else:  # constants only: both graphs may need it
            device_nodes.append(node)
            prep_nodes.append(node)
    # Prepared weights: derived tensors the device graph reads, in order of first use.
    needed: list[str] = []
    for name in [i for n in device_nodes for i in n.input] + [o.name for o in graph.output]:
        if name in derived and name not in needed:
            needed.append(name)

    prep_uses = {i for n in prep_nodes for i in n.input}
    prep_graph = helper.make_graph(
        prep_nodes + [helper.make_node("Identity", [n], [f"{n}__prepared"]) for n in needed],
        _PREP_GRAPH_NAME,
        [i for i in graph.input if i.name in weights],
        [onnx.ValueInfoProto(name=f"{n}__prepared") for n in needed],
        [t for t in graph.initializer if t.name in prep_uses],
    )
    # onnxruntime 1.31 accepts IR versions up to 10
    prep = helper.make_model(prep_graph, opset_imports=model.opset_import,
                             ir_version=min(model.ir_version, 10))

    shapes = _prepared_shapes(prep, graph, weight_names)
    device = onnx.ModelProto()
    device.CopyFrom(model)
    del device.graph.node[:]
    device.graph.node.extend(device_nodes)
    data_inputs = [i for i in graph.input if i.name not in weights]
    del device.graph.input[:]
    device.graph.input.extend(data_inputs)
    for name in needed:
        elem_type, dims = shapes[name]
        device.graph.input.append(helper.make_tensor_value_info(name, elem_type, dims))
    device_uses = {i for n in device_nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in device_uses]
    del device.graph.initializer[:]
    device.graph.initializer.extend(kept)
    return device, prep


def _is_gemm_with_transposed(node: onnx.NodeProto, derived: set[str]) -> bool:
    """Gemm(x, W, transB=1) with a weight W: Relax would transpose W inside the step."""
    if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in derived:
        return False
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)


def _split_gemm_transpose(node: onnx.NodeProto) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """(Transpose(W) for the preparation graph, the same Gemm reading it with transB=0)."""
    weight_t = f"{node.input[1]}__transposed"
    transpose = helper.make_node("Transpose", [node.input[1]], [weight_t], perm=[1, 0])
    gemm = onnx.NodeProto()
    gemm.CopyFrom(node)
    gemm.input[1] = weight_t
    for attr in gemm.attribute:
        if attr.name == "transB":
            attr.i = 0
    return transpose, gemm


def _prepared_shapes(prep: onnx.ModelProto, graph: onnx.GraphProto, weight_names):
    """Element type and shape of every prepared weight, by running the preparation on zeros."""
    feeds = {}
    for vi in graph.input:
        if vi.name in weight_names:
            tt = vi.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
            feeds[vi.name] = np.zeros([d.dim_value for d in tt.shape.dim], dtype)
    outputs = run_preparation(prep, feeds)
    names = [o.name.removesuffix("__prepared") for o in prep.graph.output]
    return {n: (onnx.helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
            for n, v in zip(names, outputs)}


def run_preparation(prep: onnx.ModelProto, raw: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run the preparation graph on the host (onnxruntime, optimisations off)."""
    import onnxruntime as ort

    names = [i.name for i in prep.graph.input]
    missing = [n for n in names if n not in raw]
    if missing:
        raise ValueError(f"weights missing for the preparation graph: {missing}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(prep.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {n: np.ascontiguousarray(raw[n]) for n in names})
