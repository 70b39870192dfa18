"""The one static-arena planner: where each block of memory lives, given when it is alive.

Both arenas of a firmware project are planned here: a compiled graph's intermediate tensors and
kernel scratch (`relax_to_c`, lifetimes in kernel calls) and the model driver's buffers and
per-stage scratch (`project.model_driver`, lifetimes in schedule stages).

`lower_bound` is what any placement needs: the most bytes alive at one step. The memory report
prints it next to the planned size, so a user sees how close the plan is to the limit.

Greedy by size, as TensorFlow Lite Micro's GreedyMemoryPlanner: blocks are placed largest first
(ties: earlier first use, then the caller's key), each at the lowest aligned offset that no
already-placed block overlapping its lifetime occupies. No allocation happens at run time; the
arena's size is the end of the highest block.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

# bytes; the caller's arena, every block in it and every kernel scratch buffer start on this
# boundary (wide enough for any scalar and for SIMD loads of 16 bytes)
ALIGN = 16


def aligned(nbytes: int, align: int = ALIGN) -> int:
    """`nbytes` rounded up to a multiple of `align`."""
    return (nbytes + align - 1) // align * align


@dataclass(frozen=True)
class Lifetime:
    """A block to place: `nbytes` alive from step `first` to step `last` (inclusive); `key`
    identifies it to the caller and breaks ties between blocks of equal size and first use."""

    key: Hashable
    nbytes: int
    first: int
    last: int


def plan_arena(blocks: Sequence[Lifetime]) -> tuple[dict[Hashable, int], int]:
    """(offset per key, total bytes): blocks alive at the same step never share bytes."""
    order = sorted(blocks, key=lambda b: (-aligned(b.nbytes), b.first, b.key))
    placed: list[tuple[int, int, int, int]] = []   # (offset, aligned size, first, last)
    offsets: dict[Hashable, int] = {}
    for b in order:
        if b.key in offsets:
            raise ValueError(f"arena block {b.key!r} given twice")
        if b.first > b.last:
            raise ValueError(f"arena block {b.key!r}: lifetime {b.first}..{b.last} is empty")
        size = aligned(b.nbytes)
        busy = sorted((o, s) for o, s, first, last in placed if first <= b.last and b.first <= last)
        offset = 0
        for o, s in busy:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, b.first, b.last))
        offsets[b.key] = offset
    return offsets, max((o + s for o, s, _, _ in placed), default=0)


def lower_bound(blocks: Sequence[Lifetime], extra: Sequence[int] = ()) -> int:
    """The most bytes alive at one step (unaligned): no placement of `blocks` is smaller.
    `extra[t]`, when given, adds bytes alive at step t only (e.g. a nested arena's own bound)."""
    steps = {t for b in blocks for t in (b.first, b.last)} | set(range(len(extra)))
    return max((sum(b.nbytes for b in blocks if b.first <= t <= b.last) + (extra[t] if t < len(extra) else 0)
                for t in steps), default=0)
