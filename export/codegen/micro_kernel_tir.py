"""Reach a firmware micro-kernel (firmware/kernels/) from a fused int8 `qlinear` PrimFunc, so that
TVM keeps fusing, planning memory and writing the loops while the inner tile is the hand-written
kernel. The int8 front end (qgraph_frontend, with a board's `int8_gemm` form) builds qlinears with
`qlinear_te`; relax_to_c lowers every fused PrimFunc through `schedule_with_micro_kernels`.

Route (Schedule.tensorize segfaults with the pinned apache-tvm-ffi, so no TensorIntrin):
1. `qlinear_te` has two blocks: the int32 reduction `qlinear_acc` (annotated with the kernel form
   and the output zero point) and the requantisation `qlinear_out`; after FuseOps/FuseTIR its
   consumers (dequantize, bias add, GELU, quantize, ...) follow in the same PrimFunc. Split the
   token loop into tiles (up to MAX_TILE_TOKENS tokens of the last leading axis), move the
   requantisation and every consumer that can move under the tile loop (reverse_compute_at), and
   blockize the two tile bodies: `qlinear_acc_o` (T tokens x N x K) and `qlinear_out_o` (T x N).
   A qconv's im2col block (qconv_im2col, IM2COL_ATTR) is computed under the tile loop too, so its
   column buffer shrinks to the tile's T x K bytes, and stays materialised (the kernel reads it).
2. schedule.schedule_for_mcu inlines the consumers among themselves, as for any kernel.
3. Structural rewrite: the body of `qlinear_acc_o` becomes one `T.call_extern` of the
   micro-kernel, which writes the int8 output tile itself (requantisation fused in its epilogue);
   `qlinear_out_o` becomes a no-op; the int32 accumulator buffer is dropped. The call reads and
   writes tile views (match buffers) of the activations and the int8 output, so buffer compaction
   shrinks an output that only the tile's consumers read to one tile (T x N bytes) and re-bases
   the pointer; the blocks' read/write regions are what the call touches.
4. `lower.lower_primfunc` prints it as plain C: pointers via `tvm_access_ptr` -> `&p0[offset]`,
   the kernel symbol as an external call, the SMLAD form's int32 scratch as an arena buffer (or a
   local array when small, lower.LOCAL_ALLOC_BYTES).

The kernel reads its weights in its own layout (kernel_layout.relayout), which the front end
stores; bias (folded, integer_te.fold_bias), multiplier and shift are the rows of one (3, N)
table, so the rewrite finds each operand by its role.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, te, tirx
from tvm.s_tir.schedule import ScheduleError
from tvm.ir import Range
from tvm.ir.expr import TensorRegion

from .integer_te import qlinear
from .kernel_layout import KERNEL_FUNCTIONS, smlad_scratch_words
from .lower import CKernel, lower_primfunc
from .schedule import schedule_for_mcu

KERNEL_HEADER = "lumamba_kernels.h"
SUPPORTED = dict(KERNEL_FUNCTIONS)
# annotations of a qlinear accumulation block that must call a micro-kernel (qlinear_te)
FORM_ATTR = "lumamba.micro_kernel"
Y_ZERO_POINT_ATTR = "lumamba.y_zero_point"
# annotation of an im2col block feeding a qlinear (qconv_im2col): computed per token tile, its
# value (Cin, kh, kw) splits the tap loop so that the C indexes taps without division
IM2COL_ATTR = "lumamba.im2col"
# Tokens per micro-kernel call when the qlinear's consumers fuse into the tile loop: the int8
# output then lives in a tile of MAX_TILE_TOKENS x N bytes instead of M x N (weight reuse inside
# a kernel call stops at 2 tokens for SMLAD/MVE and 4 for the portable tile, so larger tiles
# would gain nothing).
MAX_TILE_TOKENS = 16


class _Row:
    """Row r of a (3, N) tensor, indexed like an (N,) tensor."""

    def __init__(self, table: te.Tensor, row: int):
        self.table, self.row = table, row

    def __getitem__(self, n):
        return self.table[self.row, n]


def qlinear_te(xq: te.Tensor, weight: te.Tensor, qparams: te.Tensor, x_zero_point: int, y_zero_point: int,
               form: str) -> te.Tensor:
    """The int8 qlinear (*M, K) x (N, K) -> (*M, N) whose accumulation `schedule_with_micro_kernels` turns into
    a call of micro-kernel `form`. `weight` is in the form's layout (kernel_layout.relayout) and
    `qparams` (3, N) int32 holds the folded bias (integer_te.fold_bias), multiplier and shift, so
    that the rewrite finds each operand by its role.

    The TE arithmetic is integer_te.qlinear's; it describes the C only after the rewrite (with a
    re-laid-out weight it is not the product any more), so code that compiles this must call
    `schedule_with_micro_kernels` (relax_to_c.lower_kernels does)."""
    if form not in SUPPORTED:
        raise ValueError(f"micro-kernel form {form!r} is unknown; supported: {', '.join(SUPPORTED)}")
    rows = [_Row(qparams, r) for r in range(3)]
    return qlinear(xq, weight, *rows, x_zero_point, y_zero_point, folded=True,
                   acc_attrs={FORM_ATTR: form, Y_ZERO_POINT_ATTR: int(y_zero_point)})


def qlinear_primfunc(m: int | Sequence[int], n: int, k: int, x_zero_point: int, y_zero_point: int,
                     form: str = "c_4x4") -> tirx.PrimFunc:
    """`qlinear_te` as a PrimFunc (xq, weight, qparams, y); `m` is the token count or the leading
    dimensions of the input."""
    lead = (int(m),) if isinstance(m, (int, np.integer)) else tuple(int(d) for d in m)
    xq = te.placeholder((*lead, k), "int8", "xq")
    w = te.placeholder((n, k), "int8", "weight")
    qparams = te.placeholder((3, n), "int32", "qparams")
    return te.create_prim_func([xq, w, qparams, qlinear_te(xq, w, qparams, x_zero_point, y_zero_point, form)])


@dataclass(frozen=True)
class _Tiled:
    """A qlinear after step 1: the names of its blockized tile bodies and the tile size."""
    acc: str          # the accumulation block (annotated by qlinear_te)
    acc_tile: str     # its blockized tile body, which becomes the call
    req_tile: str     # the requantisation's, which becomes a no-op
    tile: int         # tokens per call


def schedule_with_micro_kernels(func: tirx.PrimFunc, max_tile_tokens: int = MAX_TILE_TOKENS) -> tirx.PrimFunc:
    """schedule.schedule_for_mcu, with every `qlinear_te` accumulation of `func` (a fused
    PrimFunc) turned into calls of its micro-kernel (the module docstring's steps 1-3; `func`
    only scheduled if it has none).

    Tiles: the largest divisor of the last leading axis up to `max_tile_tokens` (if above 1) when
    every direct consumer of the qlinear's int8 output moves under the tile loop (the output then
    shrinks to one tile), else all M tokens in one call. The schedule runs between tiling and the rewrite, while every block still
    has its TE body (TVM's schedule primitives treat a block holding an external call as opaque)."""
    tiled = []
    for name in _annotated_blocks(func):
        func, t = _tile_qlinear(func, name, max_tile_tokens)
        tiled.append(t)
    func = schedule_for_mcu(func)
    for t in tiled:
        func = _rewrite_as_call(func, t)
    return func


def _tile_qlinear(func: tirx.PrimFunc, acc_name: str, max_tile_tokens: int) -> tuple[tirx.PrimFunc, _Tiled]:
    acc = _block(func, acc_name)
    *lead, _ = (int(d) for d in _product_operands(acc)[0].shape)
    m = int(np.prod(lead))
    # a tile is a run of tokens along the last leading axis; one token per call would lose the
    # kernels' reuse of each weight over two tokens, so then all of M in one call
    tile = max(d for d in range(1, min(lead[-1], max_tile_tokens) + 1) if lead[-1] % d == 0)
    if tile == 1:
        tile = m
    scheduled = _tile(func, acc_name, lead, tile, move_consumers=True)
    if scheduled is None:
        tile = m
        scheduled = _tile(func, acc_name, lead, tile, move_consumers=False)
    sch, acc_tile, req_tile = scheduled
    return sch.mod["main"], _Tiled(acc_name, sch.get(acc_tile).name_hint, sch.get(req_tile).name_hint, tile)


def _tile(func, acc_name: str, lead: list[int], tile: int, move_consumers: bool):
    """Split the token loop into tiles, requantisation (and, with move_consumers, every consumer
    of its output) under the tile loop, both tile bodies blockized. None when move_consumers and
    some direct consumer of the int8 output cannot move."""
    m = int(np.prod(lead))
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    acc = sch.get_sblock(acc_name)
    consumers = sch.get_consumers(acc)
    if len(consumers) != 1:
        raise RuntimeError(f"qlinear block {acc_name!r}: expected one requantisation consumer, got {len(consumers)}")
    req = consumers[0]
    tokens = sch.get_loops(acc)[:len(lead)]
    if tile < m:   # tiles of the last leading axis: its loop split, the outer loops stay
        io, ii = sch.split(tokens[-1], [lead[-1] // tile, tile])
    else:          # one tile: all leading loops fused into one, under a loop of one iteration
        i = sch.fuse(*tokens) if len(tokens) > 1 else tokens[0]
        if len(lead) > 1:
            sch.fuse(*sch.get_loops(req)[:len(lead)])
        io, ii = sch.split(i, [1, m])
    sch.reverse_compute_at(req, io)
    _columns_per_tile(sch, acc, io)
    if move_consumers and tile < m:
        direct = {sch.get(c).name_hint for c in sch.get_consumers(req)}
        if not _move_consumers(sch, req, io) >= direct:
            return None
    acc_tile = sch.blockize(ii)
    req_tile = sch.blockize(sch.get_loops(req)[len(lead) if tile < m else 1])   # the loop under io
    return sch, acc_tile, req_tile


def _columns_per_tile(sch, acc, loop) -> None:
    """An im2col producer of the accumulation (IM2COL_ATTR) is computed under the tile loop, so
    its buffer shrinks to one tile of columns; its tap loop is split into (Cin, kh, kw) loops,
    which the simplifier turns into plain indices."""
    for producer in sch.get_producers(acc):
        shape = sch.get(producer).annotations.get(IM2COL_ATTR)
        if shape is None:
            continue
        sch.compute_at(producer, loop)
        sch.split(sch.get_loops(producer)[-1], [int(d) for d in shape])


def _move_consumers(sch, block, loop) -> set[str]:
    """reverse_compute_at every transitive consumer of `block` that can move under `loop`; a
    consumer that also reads another consumer is retried once that one has moved. Returns the
    names of the blocks moved."""
    moved: set[str] = set()
    todo = list(sch.get_consumers(block))
    progress = True
    while todo and progress:
        progress, retry = False, []
        for c in todo:
            name = sch.get(c).name_hint
            if name in moved:
                continue
            try:
                sch.reverse_compute_at(c, loop)
            except ScheduleError:
                retry.append(c)
                continue
            moved.add(name)
            progress = True
            retry += list(sch.get_consumers(c))
        todo = retry
    return moved


def _rewrite_as_call(func: tirx.PrimFunc, t: _Tiled) -> tirx.PrimFunc:
    """Step 2: the tile body of the accumulation becomes one call of the micro-kernel (reading and
    writing tile views of the activations and the int8 output), the requantisation's a no-op, and
    the int32 accumulator buffer is dropped."""
    acc = _block(func, t.acc)
    form, y_zero_point = str(acc.annotations[FORM_ATTR]), int(acc.annotations[Y_ZERO_POINT_ATTR])
    xq, w = _product_operands(acc)
    acc_buf = acc.writes[0].source
    req = _inner_block(func, t.req_tile)
    qparams = next(r.source for r in req.reads if not r.source.same_as(acc_buf))
    out = req.writes[0].source
    *lead, k = (int(d) for d in xq.shape)
    m, n = int(np.prod(lead)), int(w.shape[0])
    scratch = (tirx.decl_buffer((smlad_scratch_words(k),), "int32", "gemm_scratch")
               if form == "smlad_2x2" else None)

    def rewrite(blk):
        if blk.name_hint == t.acc_tile:
            # the tile's first token: blockize's outer iterators are the leading indices, the
            # last one counted in tiles (or 0 when the tile is all of M)
            outer = [iv.var for iv in blk.iter_vars[:len(lead)]]
            start = outer[:-1] + [outer[-1] * t.tile] if t.tile < m else [0] * len(lead)
            x_tile = _tile_view(xq, start, t.tile, "x_tile")
            y_tile = _tile_view(out, start, t.tile, "y_tile")
            args = [x_tile.buffer.access_ptr("r"), w.access_ptr("r"), qparams.access_ptr("r", offset=0),
                    qparams.access_ptr("r", offset=n), qparams.access_ptr("r", offset=2 * n),
                    tirx.const(y_zero_point, "int32"), y_tile.buffer.access_ptr("w"), tirx.const(t.tile, "int32"),
                    tirx.const(n, "int32"), tirx.const(k, "int32")]
            writes = [y_tile.source]
            if scratch is not None:
                args.append(scratch.access_ptr("rw"))
                writes.append(_region(scratch, [(0, int(scratch.shape[0]))]))
            call = tirx.Evaluate(tirx.call_extern("void", SUPPORTED[form], *args))
            reads = [x_tile.source, _whole(w), _whole(qparams)]
            return s_tir.SBlock(blk.iter_vars, reads, writes, blk.name_hint, call, None,
                                [scratch] if scratch is not None else [], [x_tile, y_tile])
        if blk.name_hint == t.req_tile:
            return s_tir.SBlock(blk.iter_vars, [], [], blk.name_hint, tirx.Evaluate(tirx.const(0, "int32")))
        if any(b.same_as(acc_buf) for b in blk.alloc_buffers):
            return s_tir.SBlock(blk.iter_vars, blk.reads, blk.writes, blk.name_hint, blk.body, blk.init,
                                [b for b in blk.alloc_buffers if not b.same_as(acc_buf)], blk.match_buffers,
                                blk.annotations)
        return blk

    return func.with_body(tvm_ffi.structural_map(func.body, (s_tir.SBlock, rewrite)))


def lower_qlinear_with_micro_kernel(m: int | Sequence[int], n: int, k: int, x_zero_point: int, y_zero_point: int,
                                    symbol: str, tile_tokens: int | None = None, form: str = "c_4x4") -> CKernel:
    """The C kernel `symbol(p0 xq, p1 weight, p2 qparams, p3 y[, s0 scratch])` that calls the
    micro-kernel per tile of `tile_tokens` (default: all of M, one call); p1 in the form's layout
    (kernel_layout.relayout), p2 the rows folded bias, multiplier, shift; the SMLAD form's scratch
    is a local array when it is small (lower.LOCAL_ALLOC_BYTES)."""
    lead = (m,) if isinstance(m, (int, np.integer)) else tuple(m)
    total = int(np.prod(lead))
    tile = total if tile_tokens is None else int(tile_tokens)
    if tile < 1 or total % tile:
        raise ValueError(f"tile_tokens={tile_tokens} must be >= 1 and divide the token count {total}")
    if tile != total and len(lead) != 1:
        raise ValueError(f"tile_tokens={tile_tokens}: tiles of a {len(lead) + 1}-D input must hold all {total} tokens")
    func = qlinear_primfunc(lead, n, k, x_zero_point, y_zero_point, form)
    return lower_primfunc(func, symbol, tvm_name=f"qlinear via {SUPPORTED[form]}",
                          schedule=lambda f: schedule_with_micro_kernels(f, max_tile_tokens=tile))


def _annotated_blocks(func: tirx.PrimFunc) -> list[str]:
    names: list[str] = []

    def visit(block):
        if FORM_ATTR in block.annotations:
            names.append(block.name_hint)

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit))
    return names


def _block(func: tirx.PrimFunc, name: str):
    found = []
    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, lambda b: found.append(b) if b.name_hint == name else None))
    if len(found) != 1:
        raise RuntimeError(f"expected one block {name!r} in the qlinear's PrimFunc, found {len(found)}")
    return found[0]


def _inner_block(func: tirx.PrimFunc, outer: str):
    """The block directly inside the blockized block `outer` (its loop nest's body)."""
    inner = []
    tvm_ffi.structural_walk(_block(func, outer).body, (s_tir.SBlock, inner.append))
    if not inner:
        raise RuntimeError(f"blockized block {outer!r} holds no block")
    return inner[0]


def _product_operands(block):
    """(x, w) buffers of the accumulation acc += x * w (TE order: activation first)."""
    loads: list = []
    tvm_ffi.structural_walk(block.body, (tvm.ir.TensorLoad, lambda ld: loads.append(ld.source)))
    acc = block.writes[0].source
    operands = [b for b in loads if not b.same_as(acc)]
    if len(operands) != 2:
        raise RuntimeError(f"qlinear block {block.name_hint!r}: expected x * w, read {[b.name for b in operands]}")
    return operands[0], operands[1]


def _tile_view(buf, start: list, tile: int, name: str):
    """A MatchBufferRegion binding the tokens of one tile of `buf` (*lead, last): leading indices
    `start`, the last of them the first of `tile` tokens (or all of M when tile is M). TVM's
    buffer compaction re-bases the kernel's pointer through it when it shrinks `buf` to a tile."""
    *lead, last = buf.shape
    dtype = str(last.ty.dtype)
    m = int(np.prod([int(d) for d in lead]))
    if tile == m:
        ranges = [(tirx.const(0, dtype), d) for d in buf.shape]
    else:
        ranges = [(tirx.Cast(dtype, v) if not isinstance(v, int) else tirx.const(v, dtype), tirx.const(1, dtype))
                  for v in start[:-1]]
        ranges += [(tirx.Cast(dtype, start[-1]), tirx.const(tile, dtype)), (tirx.const(0, dtype), last)]
    view = tirx.decl_buffer([r[1] for r in ranges], buf.dtype, name, elem_offset=tirx.Var(f"{name}_offset", dtype),
                            offset_factor=1)
    return s_tir.MatchBufferRegion(view, _region(buf, ranges))


def _whole(buf) -> TensorRegion:
    return tirx.BufferRegion(buf, [Range.from_min_extent(0, d) for d in buf.shape])


def _region(buf, ranges) -> TensorRegion:
    return tirx.BufferRegion(buf, [Range.from_min_extent(lo, ext) for lo, ext in ranges])
