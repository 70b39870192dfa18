"""Prototype: reach a firmware micro-kernel (firmware/kernels/) from a scheduled int8 `qlinear`
PrimFunc, so that TVM keeps fusing, planning memory and writing the loops while the inner tile is
the hand-written kernel.

Route (Schedule.tensorize segfaults with the pinned apache-tvm-ffi, so no TensorIntrin):
1. `qlinear` (integer_te, folded bias) has two blocks: the int32 reduction `qlinear_acc` and the
   requantisation `qlinear_out`. Split the token loop into tiles of `tile_tokens`, move the
   requantisation under the tile loop (reverse_compute_at) and blockize each of the two tile
   bodies: `qlinear_acc_o` (T tokens x N x K) and `qlinear_out_o` (T x N).
2. Structural rewrite of the scheduled PrimFunc: the body of `qlinear_acc_o` becomes one
   `T.call_extern` of the micro-kernel, which writes the int8 output tile itself (requantisation
   fused in its epilogue); `qlinear_out_o` becomes a no-op; the int32 accumulator buffer is
   dropped. The blocks' read/write regions are set to what the call touches, so TVM's later
   passes (buffer compaction, memory planning) see the true dependencies.
3. `lower.lower_primfunc` prints it as plain C: pointers into the tile via
   `tvm_access_ptr` -> `&p0[offset]`, the kernel symbol as an external call.

The kernel reads its weights in its own layout (kernels_layout.relayout), so the code generator
must store that parameter re-laid out; the folded bias is integer_te.fold_bias.
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, te, tirx
from tvm.ir import Range
from tvm.ir.expr import TensorRegion

from .integer_te import qlinear
from .lower import CKernel, lower_primfunc

KERNEL_HEADER = "lumamba_kernels.h"
# kernel forms reachable this way (the SMLAD form also needs a scratch pointer, see the report)
SUPPORTED = {"c_4x4": "lumamba_s8_gemm_4x4_c", "mve_4x2": "lumamba_s8_gemm_4x2_mve"}


def qlinear_primfunc(m: int, n: int, k: int, x_zero_point: int, y_zero_point: int,
                     left_shift: bool = True) -> tirx.PrimFunc:
    """The int8 qlinear (M, K) x (N, K) -> (M, N) with a folded bias, as the int8 code generator builds it."""
    xq = te.placeholder((m, k), "int8", "xq")
    w = te.placeholder((n, k), "int8", "weight")
    bias = te.placeholder((n,), "int32", "bias")
    mult = te.placeholder((n,), "int32", "multiplier")
    shift = te.placeholder((n,), "int32", "shift")
    y = qlinear(xq, w, bias, mult, shift, x_zero_point, y_zero_point, folded=True, left_shift=left_shift)
    return te.create_prim_func([xq, w, bias, mult, shift, y])


def tile_with_micro_kernel(func: tirx.PrimFunc, y_zero_point: int, tile_tokens: int | None = None,
                           form: str = "c_4x4") -> tirx.PrimFunc:
    """Steps 1-2 of the module docstring on a `qlinear_primfunc`; returns the rewritten PrimFunc.

    tile_tokens must divide M (blockize refuses the predicated tail of an uneven split); the
    default is all of M, one call. ValueError names the bad option otherwise."""
    if form not in SUPPORTED:
        raise ValueError(f"micro-kernel form {form!r} is not reachable from TIR yet; supported: {', '.join(SUPPORTED)}")
    xq, w, bias, mult, shift, out = func.params  # buffer-typed parameters in TVM 0.27
    m, k = (int(d) for d in xq.shape)
    n = int(w.shape[0])
    tile = m if tile_tokens is None else int(tile_tokens)
    if tile < 1 or m % tile:
        raise ValueError(f"tile_tokens={tile_tokens} must be >= 1 and divide the token count {m}")

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    acc = sch.get_sblock("qlinear_acc")
    req = sch.get_sblock("qlinear_out")
    i = sch.get_loops(acc)[0]
    io, ii = sch.split(i, [m // tile, tile])
    sch.reverse_compute_at(req, io)
    acc_tile = sch.blockize(ii)
    req_tile = sch.blockize(sch.get_loops(req)[1])
    acc_name, req_name = sch.get(acc_tile).name_hint, sch.get(req_tile).name_hint
    scheduled = sch.mod["main"]
    acc_buf = _written_buffer(scheduled, "qlinear_acc")

    def rewrite(block):
        if block.name_hint == acc_name:
            t0 = block.iter_vars[0].var * tile  # first token of the tile
            args = [xq.access_ptr("r", offset=t0 * k), w.access_ptr("r"), bias.access_ptr("r"),
                    mult.access_ptr("r"), shift.access_ptr("r"), tirx.const(y_zero_point, "int32"),
                    out.access_ptr("w", offset=t0 * n), tirx.const(tile, "int32"), tirx.const(n, "int32"),
                    tirx.const(k, "int32")]
            call = tirx.Evaluate(tirx.call_extern("void", SUPPORTED[form], *args))
            reads = [_region(xq, [(t0, tile), (0, k)]), _region(w, [(0, n), (0, k)])] + \
                    [_region(b, [(0, n)]) for b in (bias, mult, shift)]
            return s_tir.SBlock(block.iter_vars, reads, [_region(out, [(t0, tile), (0, n)])],
                                block.name_hint, call)
        if block.name_hint == req_name:
            return s_tir.SBlock(block.iter_vars, [], [], block.name_hint, tirx.Evaluate(tirx.const(0, "int32")))
        if any(b.same_as(acc_buf) for b in block.alloc_buffers):
            return s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, block.body,
                                block.init, [b for b in block.alloc_buffers if not b.same_as(acc_buf)],
                                block.match_buffers, block.annotations)
        return block

    return scheduled.with_body(tvm_ffi.structural_map(scheduled.body, (s_tir.SBlock, rewrite)))


def lower_qlinear_with_micro_kernel(m: int, n: int, k: int, x_zero_point: int, y_zero_point: int,
                                    symbol: str, tile_tokens: int | None = None, form: str = "c_4x4") -> CKernel:
    """The C kernel `symbol(p0 xq, p1 weight, p2 bias, p3 multiplier, p4 shift, p5 y)` that calls the
    micro-kernel per tile; p1 in the form's layout (kernels_layout.relayout), p2 the folded bias."""
    func = tile_with_micro_kernel(qlinear_primfunc(m, n, k, x_zero_point, y_zero_point), y_zero_point,
                                  tile_tokens, form)
    return lower_primfunc(func, symbol, tvm_name=f"qlinear via {SUPPORTED[form]}")


def _region(buf, ranges) -> TensorRegion:
    return tirx.BufferRegion(buf, [Range.from_min_extent(lo, ext) for lo, ext in ranges])


def _written_buffer(func: tirx.PrimFunc, block_name: str):
    found = []

    def visit(block):
        if block.name_hint == block_name:
            found.extend(r.source for r in block.writes)

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit))
    if not found:
        raise RuntimeError(f"no block {block_name!r} in the scheduled qlinear")
    return found[0]
