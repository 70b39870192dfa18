"""Front end from integer graphs: `lumamba.quant.qgraph.QGraph` -> Relax -> `relax_to_c` -> C99,
bit-exact with the golden model.

TVM computes QDQ graphs in float, so the int8 arithmetic is spelled out here: every node becomes
a TE computation through the op table below (`integer_te` for the integer ops, `float_island_te`
for the float ops between them), the TE functions are assembled into a Relax `main` with
`relax.BlockBuilder`, and `relax_to_c` does the rest (fusion, memory plan, TIR -> C lowering,
static driver), as for the ONNX front end. int8 weights stay `const int8_t` arrays (a quarter of
their float32 size).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tvm
from tvm import relax, topi

from . import float_island_te as ft
from . import integer_te, micro_kernel_tir, qconv_im2col
from .cgraph import CGraph
from .kernel_layout import KERNEL_FUNCTIONS, relayout
from .relax_to_c import compile_relax_to_c

__all__ = ["compile_qgraph", "compile_qnode", "fuse_passes", "LOWERINGS"]

# The int8 kernels call the bit-exact transcendentals of firmware/runtime/lumamba_fmath.c.
FMATH_HEADER = "lumamba_fmath.h"


# PrimFuncs carrying this attribute are element-wise per output element (a table lookup).
ELEMENTWISE_ATTR = "lumamba_elementwise"
_ELEMWISE_PATTERN = 0          # relax OpPatternKind kElemWise


@tvm.transform.module_pass(opt_level=0, name="LumambaMarkElementwise")
def mark_elementwise(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """op_pattern = element-wise for the PrimFuncs marked ELEMENTWISE_ATTR. AnnotateTIROpPattern
    calls a table lookup injective (its index into the constant table depends on the data), and
    FuseOps fuses only element-wise consumers into a qlinear's tile: unfused, the frontend's
    704 x 168 int8 GELU input would live in RAM between two kernels. The fused loop computes the
    same values: each output element reads only its own input element (and the constant table)."""
    for gv, func in list(mod.functions.items()):
        if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and ELEMENTWISE_ATTR in func.attrs:
            mod[gv] = func.with_attr("op_pattern", _ELEMWISE_PATTERN)
    return mod


def fuse_passes() -> tvm.transform.Pass:
    """The ONNX front end's fusion passes without LegalizeOps/FoldConstant: every computation
    here is already a TE function, and folding would run it through TVM's own (LLVM) arithmetic."""
    return tvm.transform.Sequential([
        relax.transform.AnnotateTIROpPattern(),
        mark_elementwise,
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ])


def _integer_te(op: str, attrs: Mapping, xq, params: Mapping, folded: bool, left_shift: bool):
    """The TE computation of one integer node on te tensors (`params` are te tensors too)."""
    zx, zy = int(attrs["x_zero_point"]), int(attrs["y_zero_point"])
    options = dict(folded=folded, left_shift=left_shift)
    if op == "qlinear":
        return integer_te.qlinear(xq, params["weight"], params["bias"], params["multiplier"], params["shift"],
                               zx, zy, **options)
    if op == "qconv":
        return integer_te.qconv(xq, params["weight"], params["bias"], params["multiplier"], params["shift"],
                             zx, zy, attrs["pads"], attrs["strides"], **options)
    raise NotImplementedError(f"no TE definition for integer op {op!r}")


def _emit_integer(bb: relax.BlockBuilder, op: str, attrs: Mapping, x, params: Mapping[str, np.ndarray],
                  gemm_form: str | None = None):
    """emit_te of one qlinear/qconv node, its parameters as constants; the bias folded with the
    input zero point (integer_te.fold_bias) wherever that stays inside int32, and the left shift of
    the requantisation compiled only when some channel needs it. With `gemm_form` (a
    kernel_layout form), a qlinear or qconv whose bias folds calls that int8 micro-kernel instead
    (a qconv through im2col, qconv_im2col)."""
    bias = integer_te.fold_bias(params["weight"], params["bias"], int(attrs["x_zero_point"]))
    folded = bias is not None
    if gemm_form is not None and folded and op in ("qlinear", "qconv"):
        return _emit_micro_kernel(bb, op, attrs, x, dict(params, bias=bias), gemm_form)
    left_shift = bool((params["shift"] > 0).any())
    values = dict(params, bias=bias) if folded else params
    consts = [relax.const(np.ascontiguousarray(values[role])) for role in INTEGER_ROLES]

    def compute(xq, weight, bias, multiplier, shift):
        tensors = dict(weight=weight, bias=bias, multiplier=multiplier, shift=shift)
        return _integer_te(op, attrs, xq, tensors, folded, left_shift)

    return bb.emit_te(compute, x, *consts, primfunc_name_hint=op)


def _emit_micro_kernel(bb: relax.BlockBuilder, op: str, attrs: Mapping, x, params: Mapping[str, np.ndarray],
                       form: str):
    """A qlinear or qconv (folded bias in `params`) whose accumulation calls micro-kernel `form`
    (micro_kernel_tir.qlinear_te, qconv_im2col.qconv_te; relax_to_c rewrites it after fusion):
    the weights stored in the form's layout, bias, multiplier and shift as the rows of one (3, N)
    int32 constant, the requantisation in the micro-kernel's epilogue. It fuses with its
    consumers as before."""
    zx, zy = int(attrs["x_zero_point"]), int(attrs["y_zero_point"])
    gemm_weight = qconv_im2col.conv_gemm_weight(params["weight"]) if op == "qconv" else params["weight"]
    weight = relax.const(np.ascontiguousarray(relayout(form, gemm_weight)))
    qparams = relax.const(np.stack([params["bias"], params["multiplier"], params["shift"]]).astype(np.int32))
    if op == "qconv":
        kernel, pads, strides = params["weight"].shape[2:], attrs["pads"], attrs["strides"]
        return bb.emit_te(lambda xq, w, qp: qconv_im2col.qconv_te(xq, w, qp, kernel, zx, zy, pads, strides, form),
                          x, weight, qparams, primfunc_name_hint="qconv")
    return bb.emit_te(lambda xq, w, qp: micro_kernel_tir.qlinear_te(xq, w, qp, zx, zy, form), x, weight, qparams,
                      primfunc_name_hint="qlinear")


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
    integer_te.check_multipliers(node_name, params["multiplier"], params["shift"])


def compile_qnode(op: str, attrs: Mapping, params: Mapping[str, np.ndarray],
                  input_shape: Sequence[int], name: str, gemm_form: str | None = None) -> CGraph:
    """One `qlinear`/`qconv` node as a C graph: `<name>_run(const int8_t *x, int8_t *y, arena)`,
    its weight, bias, multiplier and shift as `const` arrays; `gemm_form` as in compile_qgraph."""
    check_integer_params(name, params)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([int(d) for d in input_shape], "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(_emit_integer(bb, op, attrs, x, params, gemm_form))
        bb.emit_func_output(out)
    headers = [micro_kernel_tir.KERNEL_HEADER] if gemm_form is not None else []
    return compile_relax_to_c(bb.get(), name, ["x"], ["y"], fuse_passes(), headers=headers)


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


# --- the op table: each integer-graph op with its TE lowering -------------------------------------
#
# A lowering gets (bb, graph, node, args, folded) and returns one Relax expression per output of
# the node; `args` are the node's inputs as Relax expressions (None for omitted inputs), `folded`
# the compile-time values of constant inputs (shapes, axes, indices).

Lowering = Callable[..., list]
LOWERINGS: dict[str, Lowering] = {}


def lowering(*ops: str) -> Callable[[Lowering], Lowering]:
    """Register a function as the TE lowering of `ops` (as `lumamba.quant.ops` registers the
    golden model's definitions)."""
    def register(fn: Lowering) -> Lowering:
        for op in ops:
            LOWERINGS[op] = fn
        return fn
    return register


def _rank(graph, node) -> int:
    return len(_shape(graph, node.inputs[0])) if node.inputs and node.inputs[0] else 0


@lowering("quantize")
def _quantize(bb, graph, node, args, folded):
    a = node.attrs
    return [bb.emit_te(integer_te.quantize, args[0], float(a["inv_scale"]), int(a["zero_point"]),
                       primfunc_name_hint="quantize")]


@lowering("dequantize")
def _dequantize(bb, graph, node, args, folded):
    a = node.attrs
    return [bb.emit_te(integer_te.dequantize, args[0], float(a["scale"]), int(a["zero_point"]),
                       primfunc_name_hint="dequantize")]


@lowering("qlinear", "qconv")
def _integer(bb, graph, node, args, folded, gemm_form: str | None = None):
    params = {role: graph.constants[key] for role, key in node.params.items()}
    check_integer_params(node.name, params)
    return [_emit_integer(bb, node.op, node.attrs, args[0], params, gemm_form)]


@lowering("lut")
def _lut(bb, graph, node, args, folded):
    """The table lookup, marked element-wise (see `mark_elementwise`)."""
    table = graph.constants[node.params["table"]]
    out = bb.emit_te(ft.lookup_table, args[0], relax.const(np.ascontiguousarray(table)), primfunc_name_hint="lut")
    gv = bb.lookup_binding(out).args[0]
    bb.update_func(gv, bb.get()[gv].with_attr(ELEMENTWISE_ATTR, 1))
    return [out]


@lowering(*ft.BINARY, *ft.COMPARE)
def _binary(bb, graph, node, args, folded):
    fn = ft.BINARY.get(node.op) or ft.COMPARE[node.op]
    return [bb.emit_te(fn, args[0], args[1], primfunc_name_hint=node.op.lower())]


@lowering(*ft.UNARY)
def _unary(bb, graph, node, args, folded):
    return [bb.emit_te(ft.UNARY[node.op], args[0], primfunc_name_hint=node.op.lower())]


@lowering(*ft.FMATH)
def _fmath(bb, graph, node, args, folded):
    op = node.op
    return [bb.emit_te(lambda x: ft.fmath_call(op, x), args[0], primfunc_name_hint=op.lower())]


@lowering("IsNaN")
def _isnan(bb, graph, node, args, folded):
    return [bb.emit_te(ft.isnan, args[0], primfunc_name_hint="isnan")]


@lowering("Where")
def _where(bb, graph, node, args, folded):
    return [bb.emit_te(ft.where, *args[:3], primfunc_name_hint="where")]


@lowering("Cast")
def _cast(bb, graph, node, args, folded):
    if node.attrs.get("to") != 1:
        raise NotImplementedError(f"graph {graph.name}, node {node.name}: Cast to float (to=1) only")
    return [bb.emit_te(ft.cast_f32, args[0], primfunc_name_hint="cast")]


@lowering("InstanceNormalization")
def _instance_norm(bb, graph, node, args, folded):
    eps = float(np.float32(node.attrs.get("epsilon", 1e-5)))
    return [bb.emit_te(lambda x, s, b: ft.instance_norm(x, s, b, eps), *args[:3],
                       primfunc_name_hint="instance_norm")]


@lowering("LayerNormalization")
def _layer_norm(bb, graph, node, args, folded):
    a, rank = node.attrs, _rank(graph, node)
    eps = float(np.float32(a.get("epsilon", 1e-5)))
    if a.get("axis", -1) % rank != rank - 1:
        raise NotImplementedError(f"node {node.name}: LayerNormalization over the last axis only")
    if len(args) > 2 and args[2] is not None:
        return [bb.emit_te(lambda x, s, b: ft.layer_norm(x, s, b, eps), *args[:3],
                           primfunc_name_hint="layer_norm")]
    return [bb.emit_te(lambda x, s: ft.layer_norm(x, s, None, eps), *args[:2],
                       primfunc_name_hint="layer_norm")]


@lowering("Softmax")
def _softmax(bb, graph, node, args, folded):
    return [bb.emit_te(ft.softmax, args[0], int(node.attrs.get("axis", -1)), primfunc_name_hint="softmax")]


@lowering("MatMul")
def _matmul(bb, graph, node, args, folded):
    return [bb.emit_te(ft.matmul, args[0], args[1], primfunc_name_hint="matmul")]


@lowering("Gemm")
def _gemm(bb, graph, node, args, folded):
    a = node.attrs
    if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
        raise NotImplementedError(f"graph {graph.name}, node {node.name}: Gemm with transA=0, "
                                  "alpha=beta=1 only (as the golden model)")
    trans_b = bool(a.get("transB", 0))
    if len(args) > 2 and args[2] is not None:
        return [bb.emit_te(lambda x, w, c: ft.gemm(x, w, c, trans_b), *args[:3], primfunc_name_hint="gemm")]
    return [bb.emit_te(lambda x, w: ft.gemm(x, w, None, trans_b), *args[:2], primfunc_name_hint="gemm")]


@lowering("Conv")
def _conv(bb, graph, node, args, folded):
    a = node.attrs
    if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise NotImplementedError(f"graph {graph.name}, node {node.name}: Conv with group 1 and "
                                  "dilation 1 only (as the golden model)")
    pads, strides = a["pads"], a["strides"]
    if len(args) > 2 and args[2] is not None:
        return [bb.emit_te(lambda x, w, b: ft.conv2d(x, w, b, pads, strides), *args[:3],
                           primfunc_name_hint="conv")]
    return [bb.emit_te(lambda x, w: ft.conv2d(x, w, None, pads, strides), *args[:2],
                       primfunc_name_hint="conv")]


@lowering("ReduceSum", "ReduceMean")
def _reduce(bb, graph, node, args, folded):
    rank = _rank(graph, node)
    axes = _const_input(graph, node, folded, 1)
    axes = tuple(range(rank)) if axes is None or axes.size == 0 else tuple(int(v) for v in axes)
    keep, mean = bool(node.attrs.get("keepdims", 1)), node.op == "ReduceMean"
    return [bb.emit_te(lambda x: ft.reduce_sum(x, axes, keep, mean), args[0], primfunc_name_hint=node.op.lower())]


@lowering("Reshape", "Unsqueeze")
def _reshape(bb, graph, node, args, folded):
    return [bb.emit_te(topi.reshape, args[0], list(_shape(graph, node.outputs[0])),
                       primfunc_name_hint=node.op.lower())]


@lowering("Transpose")
def _transpose(bb, graph, node, args, folded):
    return [bb.emit_te(topi.transpose, args[0], node.attrs.get("perm"), primfunc_name_hint="transpose")]


@lowering("Concat")
def _concat(bb, graph, node, args, folded):
    return [bb.emit_te(topi.concatenate, args, int(node.attrs["axis"]), primfunc_name_hint="concat")]


@lowering("Slice", "Split")
def _slice(bb, graph, node, args, folded):
    return [bb.emit_te(ft.strided, args[0], starts, steps, out_shape, primfunc_name_hint=node.op.lower())
            for starts, steps, out_shape in _slices(graph, node, folded)]


@lowering("Gather")
def _gather(bb, graph, node, args, folded):
    indices = _const_input(graph, node, folded, 1).astype(np.int64)
    axis = int(node.attrs.get("axis", 0)) % _rank(graph, node)
    size = _shape(graph, node.inputs[0])[axis]
    if ((indices < -size) | (indices >= size)).any():
        raise ValueError(f"graph {graph.name}, node {node.name}: Gather index out of range [-{size}, {size})")
    indices = np.where(indices < 0, indices + size, indices)
    return [bb.emit_te(lambda x, i: ft.gather(x, i, axis), args[0], relax.const(indices),
                       primfunc_name_hint="gather")]


def _emit_node(bb: relax.BlockBuilder, graph, node, args: list, folded: dict, gemm_form: str | None) -> list:
    """Emit one node of `graph` through its entry in the op table; the integer ops also get the
    micro-kernel form (the only lowering option that depends on the board)."""
    if node.op not in LOWERINGS:
        raise NotImplementedError(f"graph {graph.name}, node {node.name}: op {node.op!r} has no C lowering in "
                                  "qgraph_frontend yet")
    if node.op in ("qlinear", "qconv"):
        return LOWERINGS[node.op](bb, graph, node, args, folded, gemm_form=gemm_form)
    return LOWERINGS[node.op](bb, graph, node, args, folded)


def compile_qgraph(graph, name: str, gemm_form: str | None = None) -> CGraph:
    """One integer graph description (`lumamba.quant.qgraph.QGraph`) -> C, bit-exact with
    `GraphExecutor(graph)` for the ops it supports. Nodes that read constants only are evaluated
    here with the golden model's own op (exact by construction) and become `const` arrays.

    `gemm_form`: the int8 GEMM micro-kernel (`kernel_layout.KERNEL_FUNCTIONS`, a board's
    `int8_gemm`) that every qlinear calls (firmware/kernels/, its weights re-laid out here);
    None keeps TVM's scalar loop nests."""
    from lumamba.quant.ops import run_node

    if gemm_form is not None and gemm_form not in KERNEL_FUNCTIONS:
        raise ValueError(f"gemm_form {gemm_form!r}: known forms are {', '.join(KERNEL_FUNCTIONS)}")

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
                values.update(zip(node.outputs, _emit_node(bb, graph, node, args, folded, gemm_form)))
            outs = [bb.emit_output(values[n]) for n, _ in graph.outputs]
        bb.emit_func_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
    headers = [FMATH_HEADER] + ([micro_kernel_tir.KERNEL_HEADER] if gemm_form is not None else [])
    return compile_relax_to_c(bb.get(), name, [n for n, _ in graph.inputs], [n for n, _ in graph.outputs],
                              fuse_passes(), headers=headers)
