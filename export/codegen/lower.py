"""Lower one fused TIR PrimFunc to a plain C99 kernel.

TVM 0.27 only emits C in its packed FFI ABI (TVMFFIAny arguments, TVM headers).  This module
schedules it for a microcontroller (`schedule`), runs the CPU subset of TVM's default TIR
pipeline, then replaces MakePackedAPI with an
"unpacked" step of our own:

* buffer parameters (``BufferType`` variables) become plain data pointers ``p0, p1, ...``;
* every intermediate allocation larger than LOCAL_ALLOC_BYTES becomes an extra pointer
  parameter ``s0, s1, ...`` into scratch that the driver carves out of its static arena
  (TVMBackendAllocWorkspace is never generated, nothing is malloc'ed; smaller ones such as
  accumulators stay local arrays);
* float immediates are printed as C99 hex floats, so folded constants stay bit-exact
  (CodeGenC would print seven significant digits).

The C text of the function body comes from ``target.build.c``; its signature is rewritten with
``const`` on the read-only pointers and the TVM preamble is dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir import PointerType, PrimType

from .arena import aligned
from .schedule import schedule_for_mcu

C_TYPES = {
    "float32": "float",
    "float64": "double",
    "int8": "int8_t",
    "int16": "int16_t",
    "int32": "int32_t",
    "int64": "int64_t",
    "uint8": "uint8_t",
    "uint16": "uint16_t",
    "uint32": "uint32_t",
    "bool": "bool",
}
# Allocations up to this size stay local arrays in the kernel (accumulators the C compiler
# keeps in registers); larger ones live in the driver's arena.
LOCAL_ALLOC_BYTES = 64
_HEXF = "LMBHEXF"  # placeholder call name that carries a float immediate through CodeGenC


@dataclass(frozen=True)
class KernelParam:
    """One pointer parameter of a generated kernel."""

    name: str  # C parameter name
    dtype: str  # TVM dtype string, e.g. "float32"
    elems: int  # number of elements the kernel may touch
    readonly: bool  # printed as `const T *`

    @property
    def nbytes(self) -> int:
        return self.elems * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class CKernel:
    """A kernel in plain C: `void symbol(<tensor params>, <scratch params>)`."""

    symbol: str
    tvm_name: str  # name of the fused PrimFunc it came from (kept in a comment)
    params: tuple[KernelParam, ...]  # the tensor arguments, in Relax call order
    scratch: tuple[KernelParam, ...]  # scratch buffers, passed after the tensors
    signature: str  # `void symbol(...)`
    source: str  # C definition, ending in a newline

    @property
    def prototype(self) -> str:
        return self.signature + ";"

    @property
    def scratch_bytes(self) -> int:
        return sum(aligned(p.nbytes) for p in self.scratch)


def c_type(dtype: str) -> str:
    """C spelling of a TVM scalar dtype; rejects what the C emitter cannot print."""
    if dtype not in C_TYPES:
        raise NotImplementedError(f"dtype {dtype!r} has no C99 type in the code generator")
    return C_TYPES[dtype]


def hex_float(value: float, dtype: str = "float32") -> str:
    """A C99 literal that denotes exactly `value` rounded to `dtype` (e.g. `0x1.8p+3f`)."""
    if dtype not in ("float32", "float64"):
        raise NotImplementedError(f"float immediates of type {dtype} are not supported")
    v = float(np.float32(value)) if dtype == "float32" else float(value)
    if math.isnan(v):
        return "NAN" if dtype == "float32" else "((double)NAN)"
    if math.isinf(v):
        text = "INFINITY" if dtype == "float32" else "((double)INFINITY)"
        return f"(-{text})" if v < 0 else text
    mantissa, exponent = v.hex().split("p")
    mantissa = mantissa.rstrip("0").rstrip(".")
    text = f"{mantissa}p{exponent}" + ("f" if dtype == "float32" else "")
    return f"({text})" if text.startswith("-") else text


# --- intrinsics CodeGenC has no C rule for --------------------------------------------------


def _libm_rule(name32: str, name64: str):
    def lower(call):
        arg = call.args[0]
        dtype = str(arg.ty.dtype)
        if dtype not in ("float32", "float64"):
            return call
        return tirx.call_pure_extern(dtype, name32 if dtype == "float32" else name64, *call.args)

    return lower


def _exp10_rule(call):
    arg = call.args[0]
    dtype = str(arg.ty.dtype)
    if dtype not in ("float32", "float64"):
        return call
    ten = tirx.FloatImm(dtype, 10.0)
    return tirx.call_pure_extern(dtype, "powf" if dtype == "float32" else "pow", ten, arg)


# TVM 0.27's `c` target has no rule for these; everything else (exp, erf, tanh, sqrt, ...)
# already lowers to the C99 libm function.
_EXTRA_C_INTRINSICS = {
    "tirx.fabs": _libm_rule("fabsf", "fabs"),  # ONNX Softplus and Abs lower through it
    "tirx.exp2": _libm_rule("exp2f", "exp2"),
    "tirx.exp10": _exp10_rule,  # C99 has no exp10f
}
_registered = False


def register_c_intrinsics() -> None:
    """Teach LowerIntrin the libm names of the intrinsics TVM's `c` target lacks (once)."""
    global _registered
    if _registered:
        return
    for op_name, rule in _EXTRA_C_INTRINSICS.items():
        tirx.op.register_intrin_lowering(op_name, "c", f=rule, level=99)
    _registered = True


# --- TIR lowering -------------------------------------------------------------------------


def _tir_pipeline() -> tvm.transform.Pass:
    """The CPU passes of TVM's default s_tir pipeline, stopping before MakePackedAPI."""
    return tvm.transform.Sequential(
        [
            s_tir.transform.CanonicalizeLoop(),
            s_tir.transform.LowerInitBlock(),
            s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
            s_tir.transform.ConvertBlocksToOpaque(),
            s_tir.transform.CompactBufferAllocation(),
            s_tir.transform.LowerMatchBuffer(),
            s_tir.transform.StmtSimplify(),
            s_tir.transform.LowerOpaqueBlock(),
            tirx.transform.FlattenBuffer(),
            tirx.transform.NarrowDataType(32),  # int32 loop counters, not int64
            s_tir.transform.LoopPartition(),
            tirx.transform.VectorizeLoop(False),
            tirx.transform.StorageRewrite(),  # reuse intermediate buffers
            s_tir.transform.HoistIfThenElse(),
            tirx.transform.UnrollLoop(),
            s_tir.transform.RenormalizeSplitPattern(),
            tirx.transform.StmtSimplify(),
            tirx.transform.RemoveNoOp(),
            s_tir.transform.RewriteUnsafeSelect(),
            tirx.transform.CommonSubexprElim(),
            tirx.transform.VerifyMemory(),
        ]
    )


def _buffer_elems(buf) -> int:
    n = 1
    for dim in buf.shape:
        if not isinstance(dim, tvm.tirx.IntImm):
            raise NotImplementedError(f"buffer {buf.name} has a symbolic shape {list(buf.shape)}")
        n *= int(dim)
    return n


def _written_params(func: tirx.PrimFunc) -> set[int]:
    """Indices of the parameters some block writes (the rest are passed as `const`)."""
    written = []

    def visit(block):
        for region in block.writes:
            written.append(region.source)

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit))
    return {i for i, p in enumerate(func.params) if any(w.same_as(p) for w in written)}


def _unpack_params(func: tirx.PrimFunc):
    """Turn buffer parameters into data pointers `p<i>` and intermediates into scratch `s<i>`."""
    params, decls = [], []
    for i, buf in enumerate(func.params):
        ptr = tirx.Var(f"p{i}", tirx.buffer_data_pointer_type(buf))
        params.append(ptr)
        decls.append(tirx.DeclBuffer(buf, data=ptr))

    scratch: list = []

    def to_scratch(alloc):
        buf = alloc.buffer
        if _buffer_elems(buf) * np.dtype(str(buf.dtype)).itemsize <= LOCAL_ALLOC_BYTES:
            return alloc
        ptr = tirx.Var(f"s{len(scratch)}", PointerType(PrimType(buf.dtype), "global"))
        scratch.append((ptr, buf))
        return tirx.DeclBuffer(buf, data=ptr)

    body = tvm_ffi.structural_map(func.body, (tirx.AllocBuffer, to_scratch))
    new = tirx.PrimFunc(params + [p for p, _ in scratch], tirx.SeqStmt(decls + [body]),
                        attrs=func.attrs)
    return new, [buf for _, buf in scratch]


def _mark_float_immediates(func: tirx.PrimFunc):
    """Replace float immediates by placeholder calls `LMBHEXF<i>()`; returns their literals."""
    literals: list[str] = []

    def mark(imm):
        literals.append(hex_float(imm.value, str(imm.ty.dtype)))
        return tirx.call_pure_extern(str(imm.ty.dtype), f"{_HEXF}{len(literals) - 1}")

    body = tvm_ffi.structural_map(func.body, (tvm.tirx.FloatImm, mark))
    return func.with_body(body), literals


def lower_primfunc(func: tirx.PrimFunc, symbol: str, tvm_name: str = "",
                   schedule: Callable[[tirx.PrimFunc], tirx.PrimFunc] = schedule_for_mcu) -> CKernel:
    """Schedule (`schedule`), lower and print one fused PrimFunc as the C function `symbol`."""
    register_c_intrinsics()
    func = schedule(func)
    written = _written_params(func)
    shapes = [(str(p.dtype), _buffer_elems(p)) for p in func.params]

    target = tvm.target.Target("c")
    func = func.with_attr("global_symbol", symbol)
    mod = tvm.IRModule({symbol: func})
    mod = tirx.transform.BindTarget(target)(mod)
    mod = _tir_pipeline()(mod)

    lowered, scratch_bufs = _unpack_params(mod[symbol])
    mod = tvm.IRModule({symbol: lowered.with_attr("calling_conv", 0)})
    mod = tirx.transform.LowerIntrin()(mod)
    marked, literals = _mark_float_immediates(mod[symbol])
    mod = tvm.IRModule({symbol: marked})
    text = tvm.get_global_func("target.build.c")(mod, target).inspect_source()

    params = tuple(
        KernelParam(f"p{i}", dtype, elems, readonly=i not in written)
        for i, (dtype, elems) in enumerate(shapes)
    )
    scratch = tuple(
        KernelParam(f"s{i}", str(buf.dtype), _buffer_elems(buf), readonly=False)
        for i, buf in enumerate(scratch_bufs)
    )
    body = _extract_body(text, symbol)
    body = re.sub(rf"\b{_HEXF}(\d+)\(\)", lambda m: literals[int(m.group(1))], body)
    if _HEXF in body:
        raise RuntimeError(f"kernel {symbol}: a float immediate escaped hex printing")
    unused = [p.name for p in params + scratch if not re.search(rf"\b{p.name}\b", body)]
    body = "".join(f"  (void){name};\n" for name in unused) + body
    signature = _signature(symbol, params + scratch)
    comment = f"/* {tvm_name} */\n" if tvm_name else ""
    return CKernel(symbol, tvm_name, params, scratch, signature,
                   f"{comment}{signature} {{\n{body}")


def _signature(symbol: str, params) -> str:
    args = []
    for p in params:
        const = "const " if p.readonly else ""
        args.append(f"{const}{c_type(p.dtype)} *restrict {p.name}")
    return f"void {symbol}({', '.join(args) or 'void'})"


def _extract_body(text: str, symbol: str) -> str:
    """The statements of `symbol`'s definition in CodeGenC output (after the opening brace)."""
    match = re.search(rf"^(?:TVM_DLL )?void {re.escape(symbol)}\(.*\) \{{\n", text, re.M)
    if match is None:
        raise RuntimeError(f"CodeGenC output has no definition of {symbol}")
    body = text[match.end():].rstrip() + "\n"
    if not body.endswith("}\n"):
        raise RuntimeError(f"unexpected end of CodeGenC output for {symbol}")
    if "TVM" in body or "tvm" in body:
        raise RuntimeError(f"kernel {symbol} still refers to the TVM runtime:\n{body}")
    return body
