"""Integer graph descriptions (`lumamba.quant.qgraph`) -> plain C through TVM, bit-exact with the
golden model.

TVM computes QDQ graphs in float, so the int8 arithmetic is spelled out here: every node becomes
a TE computation (`int8_te` for the integer ops), the TE functions are assembled into a Relax
`main` with `relax.BlockBuilder`, and from there the float path's machinery takes over (fusion,
memory plan, TIR -> C lowering, static driver; `tvm_codegen`). int8 weights stay `const int8_t`
arrays (a quarter of their float32 size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from . import int8_te
from .tvm_codegen import CGraph, _emit, _plan_passes, lower_kernels
from .tvm_plan import plan_from_relax

__all__ = ["compile_relax_to_c", "compile_qnode", "compile_qgraph"]


def _fuse_passes() -> tvm.transform.Pass:
    """The float path's fusion passes without LegalizeOps/FoldConstant: every computation here
    is already a TE function, and folding would run it through TVM's own (LLVM) arithmetic."""
    return tvm.transform.Sequential([
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ])


def compile_relax_to_c(mod: tvm.IRModule, name: str, input_names: Sequence[str],
                       output_names: Sequence[str]) -> CGraph:
    """Fuse, plan, lower and emit a Relax module whose `main` holds only call_tir bindings."""
    mod = _fuse_passes()(mod)
    planned = _plan_passes()(mod)
    plan = plan_from_relax(planned["main"], list(input_names), list(output_names))
    return _emit(name, plan, lower_kernels(name, plan, planned), 0)


def _integer_te(op: str, attrs: Mapping, xq, params: Mapping, folded: bool, left_shift: bool):
    """The TE computation of one integer node on te tensors (`params` are te tensors too)."""
    zx, zy = int(attrs["x_zero_point"]), int(attrs["y_zero_point"])
    options = dict(folded=folded, left_shift=left_shift)
    if op == "qlinear":
        return int8_te.qlinear(xq, params["weight"], params["bias"], params["multiplier"], params["shift"],
                               zx, zy, **options)
    if op == "qconv":
        return int8_te.qconv(xq, params["weight"], params["bias"], params["multiplier"], params["shift"],
                             zx, zy, attrs["pads"], attrs["strides"], **options)
    raise NotImplementedError(f"no TE definition for integer op {op!r}")


def _emit_integer(bb: relax.BlockBuilder, op: str, attrs: Mapping, x, params: Mapping[str, np.ndarray]):
    """emit_te of one qlinear/qconv node, its parameters as constants; the bias folded with the
    input zero point (int8_te.fold_bias) wherever that stays inside int32, and the left shift of
    the requantisation compiled only when some channel needs it."""
    bias = int8_te.fold_bias(params["weight"], params["bias"], int(attrs["x_zero_point"]))
    folded = bias is not None
    left_shift = bool((params["shift"] > 0).any())
    values = dict(params, bias=bias) if folded else params
    consts = [relax.const(np.ascontiguousarray(values[role])) for role in INTEGER_ROLES]

    def compute(xq, weight, bias, multiplier, shift):
        tensors = dict(weight=weight, bias=bias, multiplier=multiplier, shift=shift)
        return _integer_te(op, attrs, xq, tensors, folded, left_shift)

    return bb.emit_te(compute, x, *consts, primfunc_name_hint=op)


INTEGER_ROLES = ("weight", "bias", "multiplier", "shift")
_ROLE_DTYPES = {"weight": np.int8, "bias": np.int32, "multiplier": np.int32, "shift": np.int32}


def check_integer_params(node_name: str, params: Mapping[str, np.ndarray]) -> None:
    """Reject missing roles or wrong dtypes with an error naming the node and the role."""
    for role in INTEGER_ROLES:
        if role not in params:
            raise ValueError(f"node {node_name}: parameter {role!r} is missing")
        if params[role].dtype != _ROLE_DTYPES[role]:
            raise TypeError(f"node {node_name}: parameter {role!r} must be "
                            f"{np.dtype(_ROLE_DTYPES[role]).name}, got {params[role].dtype}")
    n = params["weight"].shape[0]
    for role in INTEGER_ROLES[1:]:
        if params[role].shape != (n,):
            raise ValueError(f"node {node_name}: parameter {role!r} must have shape ({n},) "
                             f"(one per output channel), got {params[role].shape}")
    int8_te.check_multipliers(node_name, params["multiplier"], params["shift"])


def compile_qnode(op: str, attrs: Mapping, params: Mapping[str, np.ndarray],
                  input_shape: Sequence[int], name: str) -> CGraph:
    """One `qlinear`/`qconv` node as a C graph: `<name>_run(const int8_t *x, int8_t *y, arena)`,
    its weight, bias, multiplier and shift as `const` arrays."""
    check_integer_params(name, params)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([int(d) for d in input_shape], "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(_emit_integer(bb, op, attrs, x, params))
        bb.emit_func_output(out)
    return compile_relax_to_c(bb.get(), name, ["x"], ["y"])


FMATH_INCLUDE = '#include "lumamba_fmath.h"\n'


def _shape(graph, name: str) -> tuple[int, ...]:
    """Static shape of a constant, graph input or node output of `graph`."""
    if name in graph.constants:
        return tuple(graph.constants[name].shape)
    inputs = dict(graph.inputs)
    if name in inputs:
        return tuple(int(d) for d in inputs[name])
    return tuple(int(d) for d in graph.tensors[name]["shape"])


def _const_input(graph, node, folded: dict, k: int) -> np.ndarray | None:
    """Input `k` of `node` as a compile-time constant (None when omitted), or an error naming it."""
    if k >= len(node.inputs) or not node.inputs[k]:
        return None
    if node.inputs[k] not in folded:
        raise NotImplementedError(f"graph {graph.name}, node {node.name} ({node.op}): input {k} "
                                  f"({node.inputs[k]!r}) must be a constant")
    return folded[node.inputs[k]]


def _slices(graph, node, folded: dict) -> list[tuple[list[int], list[int], tuple[int, ...]]]:
    """(starts, steps, output shape) per output of a Slice or Split node (ONNX opset 18)."""
    shape = _shape(graph, node.inputs[0])
    rank = len(shape)
    if node.op == "Split":
        axis = node.attrs.get("axis", 0) % rank
        split = _const_input(graph, node, folded, 1)
        if split is None:
            n = node.attrs.get("num_outputs", len(node.outputs))
            size = -(-shape[axis] // n)
            split = [size] * (n - 1) + [shape[axis] - size * (n - 1)]
        out, start = [], 0
        for size in (int(v) for v in split):
            starts = [start if a == axis else 0 for a in range(rank)]
            out.append((starts, [1] * rank, tuple(size if a == axis else d for a, d in enumerate(shape))))
            start += size
        return out
    starts_c, ends_c = _const_input(graph, node, folded, 1), _const_input(graph, node, folded, 2)
    axes_c, steps_c = _const_input(graph, node, folded, 3), _const_input(graph, node, folded, 4)
    axes = range(len(starts_c)) if axes_c is None else [int(v) % rank for v in axes_c]
    steps_l = [1] * len(starts_c) if steps_c is None else [int(v) for v in steps_c]
    starts, steps, out_shape = [0] * rank, [1] * rank, list(shape)
    for a, s, e, st in zip(axes, starts_c, ends_c, steps_l):
        r = range(*slice(int(s), int(e), st).indices(shape[a]))
        starts[a], steps[a], out_shape[a] = r.start, r.step, len(r)
    return [(starts, steps, tuple(out_shape))]


def _emit_node(bb: relax.BlockBuilder, graph, node, args: list, folded: dict) -> list:
    """Emit one node of `graph` as call_tirs, one per output; `args` are its inputs as Relax
    expressions (None for omitted inputs). Constant attributes-as-inputs (shapes, axes, indices)
    are read from `folded`."""
    from tvm import topi

    from . import int8_float_te as ft

    op, a = node.op, node.attrs
    rank = len(_shape(graph, node.inputs[0])) if node.inputs and node.inputs[0] else 0
    if op == "quantize":
        return [bb.emit_te(int8_te.quantize, args[0], float(a["inv_scale"]), int(a["zero_point"]),
                           primfunc_name_hint="quantize")]
    if op == "dequantize":
        return [bb.emit_te(int8_te.dequantize, args[0], float(a["scale"]), int(a["zero_point"]),
                           primfunc_name_hint="dequantize")]
    if op in ("qlinear", "qconv"):
        params = {role: graph.constants[key] for role, key in node.params.items()}
        check_integer_params(node.name, params)
        return [_emit_integer(bb, op, a, args[0], params)]
    if op in ft.BINARY:
        return [bb.emit_te(ft.BINARY[op], args[0], args[1], primfunc_name_hint=op.lower())]
    if op in ft.COMPARE:
        return [bb.emit_te(ft.COMPARE[op], args[0], args[1], primfunc_name_hint=op.lower())]
    if op in ft.UNARY:
        return [bb.emit_te(ft.UNARY[op], args[0], primfunc_name_hint=op.lower())]
    if op in ft.FMATH:
        return [bb.emit_te(lambda x: ft.fmath_call(op, x), args[0], primfunc_name_hint=op.lower())]
    if op == "IsNaN":
        return [bb.emit_te(ft.isnan, args[0], primfunc_name_hint="isnan")]
    if op == "Where":
        return [bb.emit_te(ft.where, *args[:3], primfunc_name_hint="where")]
    if op == "Cast":
        if a.get("to") != 1:
            raise NotImplementedError(f"graph {graph.name}, node {node.name}: Cast to float (to=1) only")
        return [bb.emit_te(ft.cast_f32, args[0], primfunc_name_hint="cast")]
    if op in ("LayerNormalization", "InstanceNormalization"):
        eps = float(np.float32(a.get("epsilon", 1e-5)))
        if op == "InstanceNormalization":
            return [bb.emit_te(lambda x, s, b: ft.instance_norm(x, s, b, eps), *args[:3],
                               primfunc_name_hint="instance_norm")]
        if a.get("axis", -1) % rank != rank - 1:
            raise NotImplementedError(f"node {node.name}: LayerNormalization over the last axis only")
        if len(args) > 2 and args[2] is not None:
            return [bb.emit_te(lambda x, s, b: ft.layer_norm(x, s, b, eps), *args[:3],
                               primfunc_name_hint="layer_norm")]
        return [bb.emit_te(lambda x, s: ft.layer_norm(x, s, None, eps), *args[:2],
                           primfunc_name_hint="layer_norm")]
    if op == "Softmax":
        return [bb.emit_te(ft.softmax, args[0], int(a.get("axis", -1)), primfunc_name_hint="softmax")]
    if op == "MatMul":
        return [bb.emit_te(ft.matmul, args[0], args[1], primfunc_name_hint="matmul")]
    if op == "Gemm":
        if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
            raise NotImplementedError(f"graph {graph.name}, node {node.name}: Gemm with transA=0, "
                                      "alpha=beta=1 only (as the golden model)")
        trans_b = bool(a.get("transB", 0))
        if len(args) > 2 and args[2] is not None:
            return [bb.emit_te(lambda x, w, c: ft.gemm(x, w, c, trans_b), *args[:3], primfunc_name_hint="gemm")]
        return [bb.emit_te(lambda x, w: ft.gemm(x, w, None, trans_b), *args[:2], primfunc_name_hint="gemm")]
    if op == "Conv":
        if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
            raise NotImplementedError(f"graph {graph.name}, node {node.name}: Conv with group 1 and "
                                      "dilation 1 only (as the golden model)")
        pads, strides = a["pads"], a["strides"]
        if len(args) > 2 and args[2] is not None:
            return [bb.emit_te(lambda x, w, b: ft.conv2d(x, w, b, pads, strides), *args[:3],
                               primfunc_name_hint="conv")]
        return [bb.emit_te(lambda x, w: ft.conv2d(x, w, None, pads, strides), *args[:2],
                           primfunc_name_hint="conv")]
    if op in ("ReduceSum", "ReduceMean"):
        axes = _const_input(graph, node, folded, 1)
        axes = tuple(range(rank)) if axes is None or axes.size == 0 else tuple(int(v) for v in axes)
        keep, mean = bool(a.get("keepdims", 1)), op == "ReduceMean"
        return [bb.emit_te(lambda x: ft.reduce_sum(x, axes, keep, mean), args[0], primfunc_name_hint=op.lower())]
    if op in ("Reshape", "Unsqueeze"):
        return [bb.emit_te(topi.reshape, args[0], list(_shape(graph, node.outputs[0])),
                           primfunc_name_hint=op.lower())]
    if op == "Transpose":
        return [bb.emit_te(topi.transpose, args[0], a.get("perm"), primfunc_name_hint="transpose")]
    if op == "Concat":
        return [bb.emit_te(topi.concatenate, args, int(a["axis"]), primfunc_name_hint="concat")]
    if op in ("Slice", "Split"):
        return [bb.emit_te(ft.strided, args[0], starts, steps, out_shape, primfunc_name_hint=op.lower())
                for starts, steps, out_shape in _slices(graph, node, folded)]
    if op == "Gather":
        indices = _const_input(graph, node, folded, 1).astype(np.int64)
        axis = int(a.get("axis", 0)) % rank
        size = _shape(graph, node.inputs[0])[axis]
        if ((indices < -size) | (indices >= size)).any():
            raise ValueError(f"graph {graph.name}, node {node.name}: Gather index out of range [-{size}, {size})")
        indices = np.where(indices < 0, indices + size, indices)
        return [bb.emit_te(lambda x, i: ft.gather(x, i, axis), args[0], relax.const(indices),
                           primfunc_name_hint="gather")]
    raise NotImplementedError(f"graph {graph.name}, node {node.name}: op {op!r} has no C lowering in "
                              "int8_codegen yet")


def compile_qgraph(graph, name: str) -> CGraph:
    """One integer graph description (`lumamba.quant.qgraph.QGraph`) -> C, bit-exact with
    `GraphExecutor(graph)` for the ops it supports. Nodes that read constants only are evaluated
    here with the golden model's own op (exact by construction) and become `const` arrays."""
    from lumamba.quant.ops import run_node

    bb = relax.BlockBuilder()
    params = [relax.Var(n, relax.TensorType(list(s), "float32")) for n, s in graph.inputs]
    values: dict = dict(zip((n for n, _ in graph.inputs), params))
    folded = dict(graph.constants)
    with bb.function("main", params):
        with bb.dataflow():
            for node in graph.nodes:
                if node.op not in ("qlinear", "qconv") and all(i in folded for i in node.inputs if i):
                    node_params = {r: graph.constants[k] for r, k in node.params.items()}
                    with np.errstate(all="ignore"):
                        outs = run_node(node, [folded[i] if i else None for i in node.inputs], node_params)
                    folded.update(zip(node.outputs, outs))
                    continue
                args = [None if not i else values[i] if i in values else relax.const(np.ascontiguousarray(folded[i]))
                        for i in node.inputs]
                values.update(zip(node.outputs, _emit_node(bb, graph, node, args, folded)))
            outs = [bb.emit_output(values[n]) for n, _ in graph.outputs]
        bb.emit_func_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
    cgraph = compile_relax_to_c(bb.get(), name, [n for n, _ in graph.inputs], [n for n, _ in graph.outputs])
    kernels = cgraph.kernels_c.replace("#include <stdint.h>\n", "#include <stdint.h>\n" + FMATH_INCLUDE, 1)
    return dataclasses.replace(cgraph, kernels_c=kernels)
