"""Schedule a fused TIR PrimFunc for a microcontroller: fewer materialised intermediates.

Unscheduled TIR from FuseTIR materialises every fused stage in memory.  The rules here cut that
down without changing the arithmetic of any output element (inlining changes where values are
stored, never how they are computed), so the C stays bit-identical to the naive TIR.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError

# Annotation of a block that must stay materialised (never inlined into its consumers): the
# im2col tile of a qconv, which a micro-kernel reads from memory (qconv_im2col).
NO_INLINE_ATTR = "lumamba.no_inline"

_CHEAP_CALLS = {"prim.if_then_else", "tirx.if_then_else", "prim.likely", "tirx.likely"}


def _calls(stmt) -> list[str]:
    names: list[str] = []
    tvm_ffi.structural_walk(stmt, (tvm.ir.Call, lambda c: names.append(getattr(c.op, "name", ""))))
    return names


def _is_spatial(block) -> bool:
    return all(iv.iter_type == tirx.IterVar.DataPar for iv in block.iter_vars)


def _domain_size(block) -> int:
    size = 1
    for iv in block.iter_vars:
        size *= int(iv.dom.extent)
    return size


def _loads_of(stmt, buf) -> int:
    """How many times `stmt` reads buffer `buf`."""
    count = [0]

    def visit(load):
        if load.source.same_as(buf):
            count[0] += 1

    tvm_ffi.structural_walk(stmt, (tvm.ir.TensorLoad, visit))
    return count[0]


def _is_movement(value) -> bool:
    """True for a value that only moves data: a load, an immediate, or a select/cast of those."""
    if isinstance(value, (tvm.ir.TensorLoad, tvm.tirx.IntImm, tvm.tirx.FloatImm)):
        return True
    if isinstance(value, tvm.tirx.Cast):
        return _is_movement(value.value)
    if isinstance(value, tvm.tirx.Select):
        return _is_movement(value.true_value) and _is_movement(value.false_value)
    if isinstance(value, tvm.ir.Call) and getattr(value.op, "name", "") in _CHEAP_CALLS:
        return all(_is_movement(a) for a in value.args[1:])
    return False


def _inlining_recomputes(sch, rv) -> bool:
    """Would inlining this block repeat its arithmetic for the same element?

    Data movement (pad, transpose, slice, broadcast, concat) is always worth inlining.  A block
    that computes is inlined only where no consumer iterates over more points than it has
    (no broadcast, no matmul re-reading it); one that calls (exp, sigmoid, ...) also needs a
    single consumer reading it once.
    """
    block = sch.get(rv)
    if isinstance(block.body, tvm.tirx.BufferStore) and _is_movement(block.body.value):
        return False
    consumers = [sch.get(c) for c in sch.get_consumers(rv)]
    buf = block.writes[0].source
    size = _domain_size(block)
    if any(_domain_size(c) > size for c in consumers):
        return True
    if all(name in _CHEAP_CALLS for name in _calls(block.body)):
        return False
    return not (len(consumers) == 1 and _loads_of(consumers[0].body, buf) == 1)


def _all_blocks(sch) -> list:
    """The blocks directly under the root block, in program order."""
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _try(primitive, *args) -> bool:
    try:
        primitive(*args)
    except ScheduleError:
        return False
    return True


UNROLL_FACTORS = (4, 3, 2)


def _is_sum(block) -> bool:
    """A sum reduction (`acc = acc + ...`). Only these are unrolled: TVM 0.27's C printer binds a
    max/min reduction's running value to a temporary, and in an unrolled body that stale temporary
    is reused after the next store (a wrong result, caught by tests/test_tvm_codegen.py)."""
    return isinstance(block.body, tvm.tirx.BufferStore) and isinstance(block.body.value, tvm.tirx.Add)


def _unroll_innermost(sch, rv) -> None:
    """Unroll the innermost reduction loop by the largest of UNROLL_FACTORS dividing it (whole
    when it is that short). The terms are still added in their order, so the arithmetic, float
    included, is unchanged; a Cortex-M then spends ~3 instead of ~5 instructions on an int8 MAC
    (two loads and a multiply-accumulate, without the compare and branch). Sums only (_is_sum)."""
    if _is_sum(sch.get(rv)):
        _unroll_a_little(sch, sch.get_loops(rv)[-1])


def _unroll_a_little(sch, loop) -> None:
    """Unroll `loop` whole when at most max(UNROLL_FACTORS) long, else by the largest factor dividing it."""
    extent = sch.get(loop).extent
    if not isinstance(extent, tirx.IntImm) or int(extent) < 2:
        return
    n = int(extent)
    if n <= max(UNROLL_FACTORS):
        sch.unroll(loop)
        return
    factor = next((f for f in UNROLL_FACTORS if n % f == 0), None)
    if factor is not None:
        _, inner = sch.split(loop, [None, factor])
        sch.unroll(inner)


REGISTER_TILES = (4, 3, 2)


def _register_tile(sch, rv, n_spatial: int):
    """A float32 reduction (a matmul's dot products): its innermost spatial loop split by the
    largest of REGISTER_TILES dividing it, the tile moved inside the reduction loops. Each input
    element read along the reduction then serves the tile's outputs at once, and the tile's
    accumulators stay in registers (the tile loop is unrolled). Every output still adds its terms
    in the same order, so the floats are unchanged. Returns the loop over tiles, or None."""
    block = sch.get(rv)
    if block.writes[0].source.dtype != "float32" or n_spatial < 1 or not _is_sum(block):
        return None
    loops = sch.get_loops(rv)
    extent = sch.get(loops[n_spatial - 1]).extent
    if not isinstance(extent, tirx.IntImm):
        return None
    factor = next((f for f in REGISTER_TILES if int(extent) % f == 0 and int(extent) > f), None)
    if factor is None:
        return None
    outer, lane = sch.split(loops[n_spatial - 1], [None, factor])
    sch.reorder(*loops[n_spatial:], lane)
    _unroll_a_little(sch, loops[-1])   # the innermost reduction loop, around the tile
    return outer


def _unroll_tile_loops(sch, tiles) -> None:
    """Unroll the tile loop of every block under `tiles` (the init, the update, the epilogue)."""
    for rv in sch.get_child_blocks(tiles):
        inner = sch.get_loops(rv)[-1]
        if not sch.get(inner).same_as(sch.get(tiles)):
            sch.unroll(inner)


def schedule_for_mcu(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Inline cheap or single-use stages; fuse reduction epilogues into the reduction loop.

    1. Spatial stages are inlined into their consumers unless that would repeat work (or they
       are annotated NO_INLINE_ATTR).
    2. An elementwise consumer of a reduction (bias add, activation) moves under the
       reduction's spatial loops, and the reduction's init is hoisted out of its reduction
       loop, so the accumulator shrinks to one element held in a local variable.
    3. The innermost reduction loop is unrolled by a small factor (_unroll_innermost).
    """
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    changed = True
    while changed:
        changed = False
        for rv in _all_blocks(sch):
            block = sch.get(rv)
            if not _is_spatial(block) or not sch.get_consumers(rv) or NO_INLINE_ATTR in block.annotations:
                continue
            if _inlining_recomputes(sch, rv):
                continue
            if _try(sch.compute_inline, rv):
                changed = True
                break
    for rv in _all_blocks(sch):
        block = sch.get(rv)
        if _is_spatial(block):
            continue
        loops = sch.get_loops(rv)
        n_spatial = sum(iv.iter_type == tirx.IterVar.DataPar for iv in block.iter_vars)
        consumers = sch.get_consumers(rv)
        tiles = _register_tile(sch, rv, n_spatial) if 0 < n_spatial < len(loops) else None
        if len(consumers) == 1 and 0 < n_spatial < len(loops) and _is_spatial(sch.get(consumers[0])):
            _try(sch.reverse_compute_at, consumers[0], loops[n_spatial - 1] if tiles is None else tiles)
        if n_spatial < len(loops):
            _try(sch.decompose_reduction, rv, sch.get_loops(rv)[n_spatial])
            _unroll_innermost(sch, rv)
            if tiles is not None:
                _unroll_tile_loops(sch, tiles)
    return sch.mod["main"]
