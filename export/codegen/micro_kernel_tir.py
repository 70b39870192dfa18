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

from collections.abc import Sequence

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, te, tirx
from tvm.ir import Range
from tvm.ir.expr import TensorRegion

from .integer_te import qlinear
from .kernel_layout import KERNEL_FUNCTIONS
from .lower import CKernel, lower_primfunc

KERNEL_HEADER = "lumamba_kernels.h"
# kernel forms reachable this way: all of kernel_layout's (the SMLAD form gets an int32 scratch buffer)
SUPPORTED = dict(KERNEL_FUNCTIONS)
# Relax's pattern kind "opaque" (TVM's OpPatternKind::kOpaque): FuseOps leaves such a function alone
OPAQUE_PATTERN = 8


def smlad_scratch_words(k: int) -> int:
    """LUMAMBA_S8_GEMM_SMLAD_BUF_WORDS(k) of lumamba_kernels.h (at least 1: no zero-size buffer)."""
    return max(1, 4 * (k // 4))


def qlinear_primfunc(m: int | Sequence[int], n: int, k: int, x_zero_point: int, y_zero_point: int,
                     left_shift: bool = True) -> tirx.PrimFunc:
    """The int8 qlinear (*M, K) x (N, K) -> (*M, N) with a folded bias, as the int8 code generator
    builds it; `m` is the token count or the leading dimensions of the input."""
    lead = (int(m),) if isinstance(m, (int, np.integer)) else tuple(int(d) for d in m)
    xq = te.placeholder((*lead, k), "int8", "xq")
    w = te.placeholder((n, k), "int8", "weight")
    bias = te.placeholder((n,), "int32", "bias")
    mult = te.placeholder((n,), "int32", "multiplier")
    shift = te.placeholder((n,), "int32", "shift")
    y = qlinear(xq, w, bias, mult, shift, x_zero_point, y_zero_point, folded=True, left_shift=left_shift)
    return te.create_prim_func([xq, w, bias, mult, shift, y])


def tile_with_micro_kernel(func: tirx.PrimFunc, y_zero_point: int, tile_tokens: int | None = None,
                           form: str = "c_4x4") -> tirx.PrimFunc:
    """Steps 1-2 of the module docstring on a `qlinear_primfunc`; returns the rewritten PrimFunc.

    The leading loops of the input are fused into one token loop first. tile_tokens must divide
    the token count M (blockize refuses the predicated tail of an uneven split), and tiles smaller
    than M need a 2-D input; the default is all of M, one call. ValueError names the bad option
    otherwise."""
    if form not in SUPPORTED:
        raise ValueError(f"micro-kernel form {form!r} is unknown; supported: {', '.join(SUPPORTED)}")
    xq, w, bias, mult, shift, out = func.params  # buffer-typed parameters in TVM 0.27
    *lead, k = (int(d) for d in xq.shape)
    m, n = int(np.prod(lead)), int(w.shape[0])
    tile = m if tile_tokens is None else int(tile_tokens)
    if tile < 1 or m % tile:
        raise ValueError(f"tile_tokens={tile_tokens} must be >= 1 and divide the token count {m}")
    if tile != m and len(lead) != 1:
        raise ValueError(f"tile_tokens={tile_tokens}: tiles of a {len(lead) + 1}-D input must hold all {m} tokens")

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    acc = sch.get_sblock("qlinear_acc")
    req = sch.get_sblock("qlinear_out")
    tokens = sch.get_loops(acc)[:len(lead)]
    i = sch.fuse(*tokens) if len(tokens) > 1 else tokens[0]
    if len(lead) > 1:
        sch.fuse(*sch.get_loops(req)[:len(lead)])
    io, ii = sch.split(i, [m // tile, tile])
    sch.reverse_compute_at(req, io)
    acc_tile = sch.blockize(ii)
    req_tile = sch.blockize(sch.get_loops(req)[1])
    acc_name, req_name = sch.get(acc_tile).name_hint, sch.get(req_tile).name_hint
    scheduled = sch.mod["main"]
    acc_buf = _written_buffer(scheduled, "qlinear_acc")
    # the SMLAD form widens activations into an int32 scratch: a block-local buffer, which
    # lower.py turns into a pointer into the arena (or a local array when it is small)
    scratch = (tirx.decl_buffer((smlad_scratch_words(k),), "int32", "gemm_scratch")
               if form == "smlad_2x2" else None)

    def rewrite(block):
        if block.name_hint == acc_name:
            t0 = block.iter_vars[len(lead) - 1].var * tile  # first token of the tile (outer lead axes are 1 long)
            args = [xq.access_ptr("r", offset=t0 * k), w.access_ptr("r"), bias.access_ptr("r"),
                    mult.access_ptr("r"), shift.access_ptr("r"), tirx.const(y_zero_point, "int32"),
                    out.access_ptr("w", offset=t0 * n), tirx.const(tile, "int32"), tirx.const(n, "int32"),
                    tirx.const(k, "int32")]
            writes = [_token_region(out, t0, tile, n)]
            if scratch is not None:
                args.append(scratch.access_ptr("rw"))
                writes.append(_region(scratch, [(0, int(scratch.shape[0]))]))
            call = tirx.Evaluate(tirx.call_extern("void", SUPPORTED[form], *args))
            reads = [_token_region(xq, t0, tile, k), _region(w, [(0, n), (0, k)])] + \
                    [_region(b, [(0, n)]) for b in (bias, mult, shift)]
            return s_tir.SBlock(block.iter_vars, reads, writes, block.name_hint, call, None,
                                [scratch] if scratch is not None else [])
        if block.name_hint == req_name:
            return s_tir.SBlock(block.iter_vars, [], [], block.name_hint, tirx.Evaluate(tirx.const(0, "int32")))
        if any(b.same_as(acc_buf) for b in block.alloc_buffers):
            return s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, block.body,
                                block.init, [b for b in block.alloc_buffers if not b.same_as(acc_buf)],
                                block.match_buffers, block.annotations)
        return block

    rewritten = scheduled.with_body(tvm_ffi.structural_map(scheduled.body, (s_tir.SBlock, rewrite)))
    return rewritten.with_attr("op_pattern", OPAQUE_PATTERN)


def lower_qlinear_with_micro_kernel(m: int, n: int, k: int, x_zero_point: int, y_zero_point: int,
                                    symbol: str, tile_tokens: int | None = None, form: str = "c_4x4") -> CKernel:
    """The C kernel `symbol(p0 xq, p1 weight, p2 bias, p3 multiplier, p4 shift, p5 y[, s0 scratch])`
    that calls the micro-kernel per tile; p1 in the form's layout (kernel_layout.relayout), p2 the
    folded bias; the SMLAD form's scratch is a local array when it is small (lower.LOCAL_ALLOC_BYTES)."""
    func = tile_with_micro_kernel(qlinear_primfunc(m, n, k, x_zero_point, y_zero_point), y_zero_point,
                                  tile_tokens, form)
    return lower_primfunc(func, symbol, tvm_name=f"qlinear via {SUPPORTED[form]}")


def _token_region(buf, t0, tile: int, last: int) -> TensorRegion:
    """Rows t0 .. t0 + tile of a 2-D buffer, or all of a buffer with more leading dimensions
    (tile_with_micro_kernel allows only whole-buffer tiles there)."""
    if len(buf.shape) == 2:
        return _region(buf, [(t0, tile), (0, last)])
    return _region(buf, [(0, int(d)) for d in buf.shape])


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
