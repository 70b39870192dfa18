"""Read the kernel call sequence and static storage plan out of a lowered Relax `main`.

After CallTIRRewrite and StaticPlanBlockMemory, Relax's `main` is a flat list of bindings:

    storage = R.memory.alloc_storage(R.shape([bytes]), ...)        -> one arena block
    alloc   = R.memory.alloc_tensor(storage, offset, shape, dtype)  -> a tensor in that block
    alloc   = R.builtin.alloc_tensor(shape, dtype, ...)             -> escapes: a graph output
    _       = kernel(arg0, ..., out0, ...)                          -> a kernel call
    lv      = alloc | R.reshape(x, shape) | (a, b) | t[i]            -> aliases (no data moves)

`plan_from_relax` turns that into a `GraphPlan`: storages with sizes, and kernel calls whose
arguments are `TensorRef`s (which slot, byte offset, shape).  Slots are graph inputs, graph
outputs, constants or arena storages.  An output that is not produced in place by a kernel
(an input, a constant, or a value returned twice) gets an explicit copy at the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from .arena import Lifetime, lower_bound, plan_arena


@dataclass(frozen=True)
class PortSpec:
    """Name, static shape and dtype of a graph input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass(eq=False)
class Slot:
    """A block of memory: kind is 'input', 'output', 'const', 'arena' or 'pending'.

    'pending' marks an escaping allocation (R.builtin.alloc_tensor) until it is bound to an
    output pointer, or, if it is not returned, to an arena storage of its own.
    """

    kind: str
    index: int
    nbytes: int


@dataclass(frozen=True)
class TensorRef:
    slot: Slot
    offset: int  # bytes from the start of the slot
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def overlaps(self, other: "TensorRef") -> bool:
        return (
            self.slot is other.slot
            and self.offset < other.offset + other.nbytes
            and other.offset < self.offset + self.nbytes
        )


@dataclass(frozen=True)
class KernelCall:
    func: str  # name of the PrimFunc in the Relax module
    args: tuple[TensorRef, ...]


@dataclass(frozen=True)
class Copy:
    src: TensorRef
    dst: TensorRef


@dataclass
class GraphPlan:
    inputs: list[PortSpec]
    outputs: list[PortSpec]
    storages: list[int] = field(default_factory=list)  # bytes per arena storage
    constants: list[np.ndarray] = field(default_factory=list)
    steps: list[KernelCall | Copy] = field(default_factory=list)


def _ints(shape_expr) -> tuple[int, ...]:
    values = shape_expr.values if hasattr(shape_expr, "values") else shape_expr
    try:
        return tuple(int(v) for v in values)
    except TypeError as err:
        raise NotImplementedError(f"symbolic shape {shape_expr} is not supported") from err


def _tensor_type(ty) -> tuple[tuple[int, ...], str]:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise NotImplementedError(f"only tensors of static shape are supported, got {ty}")
    return _ints(ty.shape), str(ty.dtype)


def _op_name(call) -> str:
    op = call.op
    return getattr(op, "name", None) or getattr(op, "name_hint", "")


class _PlanBuilder:
    def __init__(self, main, input_names):
        self.plan = GraphPlan(inputs=[], outputs=[])
        self.env: dict = {}  # relax Var -> TensorRef | tuple of TensorRef | Slot (storage)
        self.pending: list[Slot] = []
        self.const_index: dict[tuple, int] = {}  # (dtype, shape, digest) -> constant index
        for i, (param, name) in enumerate(zip(main.params, input_names, strict=True)):
            shape, dtype = _tensor_type(param.ty)
            spec = PortSpec(name, shape, dtype)
            self.plan.inputs.append(spec)
            self.env[param] = TensorRef(Slot("input", i, spec.nbytes), 0, shape, dtype)

    def value(self, expr):
        """The TensorRef (or tuple of them) an argument expression denotes."""
        if isinstance(expr, tvm.ir.expr.GenericConst) and isinstance(
            expr.value, tvm.runtime.Tensor
        ):
            return self.constant(expr)
        if isinstance(expr, relax.Tuple):
            return tuple(self.value(f) for f in expr.fields)
        if expr in self.env:
            return self.env[expr]
        raise NotImplementedError(f"unsupported argument in Relax main: {expr}")

    def constant(self, expr) -> TensorRef:
        """Constants are numbered in order of first use; equal contents share one array."""
        array = expr.value.numpy()
        key = (str(array.dtype), array.shape, hashlib.sha256(array.tobytes()).hexdigest())
        if key not in self.const_index:
            self.const_index[key] = len(self.plan.constants)
            self.plan.constants.append(array)
        index = self.const_index[key]
        return TensorRef(Slot("const", index, array.nbytes), 0, tuple(array.shape),
                         str(array.dtype))

    def bind(self, var, value) -> None:
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
            args = tuple(self.value(a) for a in value.args)
            if any(isinstance(a, tuple) for a in args):
                raise NotImplementedError(f"tuple argument to kernel {value.op.name_hint}")
            self.plan.steps.append(KernelCall(value.op.name_hint, args))
            return
        if isinstance(value, relax.Call):
            self.env[var] = self.builtin(_op_name(value), value)
            return
        if isinstance(value, relax.TupleGetItem):
            self.env[var] = self.value(value.tuple_value)[value.index]
            return
        self.env[var] = self.value(value)  # Var alias or Tuple

    def builtin(self, name: str, call):
        if name == "relax.memory.alloc_storage":
            nbytes = _ints(call.args[0])[0]
            self.plan.storages.append(nbytes)
            return Slot("arena", len(self.plan.storages) - 1, nbytes)
        if name == "relax.memory.alloc_tensor":
            slot = self.env[call.args[0]]
            offset = int(call.args[1].value)
            shape = _ints(call.args[2])
            return TensorRef(slot, offset, shape, str(call.args[3].value))
        if name == "relax.builtin.alloc_tensor":
            shape = _ints(call.args[0])
            dtype = str(call.args[1].value)
            slot = Slot("pending", len(self.pending), 0)
            self.pending.append(slot)
            ref = TensorRef(slot, 0, shape, dtype)
            slot.nbytes = ref.nbytes
            return ref
        if name == "relax.reshape":
            src = self.value(call.args[0])
            shape, dtype = _tensor_type(call.ty)
            return TensorRef(src.slot, src.offset, shape, dtype)
        raise NotImplementedError(f"Relax main calls {name}, which the C driver cannot express")

    def finish(self, result, output_names) -> GraphPlan:
        refs = result if isinstance(result, tuple) else (result,)
        if len(refs) != len(output_names):
            raise ValueError(f"graph has {len(refs)} outputs, expected {len(output_names)} names")
        copies = []
        for i, (ref, name) in enumerate(zip(refs, output_names)):
            spec = PortSpec(name, ref.shape, ref.dtype)
            self.plan.outputs.append(spec)
            if ref.slot.kind == "pending" and ref.offset == 0 and ref.nbytes == ref.slot.nbytes:
                ref.slot.kind, ref.slot.index = "output", i  # the kernel writes it in place
            else:
                dst = TensorRef(Slot("output", i, spec.nbytes), 0, ref.shape, ref.dtype)
                copies.append(Copy(ref, dst))
        for slot in self.pending:
            if slot.kind == "pending":  # escaping but not returned: give it arena space
                self.plan.storages.append(slot.nbytes)
                slot.kind, slot.index = "arena", len(self.plan.storages) - 1
        self.plan.steps.extend(copies)
        return self.plan


def plan_from_relax(main, input_names, output_names) -> GraphPlan:
    """Build the GraphPlan of a Relax `main` lowered through StaticPlanBlockMemory."""
    builder = _PlanBuilder(main, input_names)
    body = main.body
    for block in body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                raise NotImplementedError(f"unsupported binding {type(binding).__name__}")
            builder.bind(binding.var, binding.value)
    return builder.finish(builder.value(body.body), output_names)


def check_no_alias(plan: GraphPlan, writes: dict[str, set[int]]) -> None:
    """Raise if a kernel's output may overlap one of its inputs (kernels use `restrict`).

    `writes` maps each kernel to the indices of the arguments it writes.
    """
    for step in plan.steps:
        if not isinstance(step, KernelCall):
            continue
        outs = [a for i, a in enumerate(step.args) if i in writes[step.func]]
        ins = [a for i, a in enumerate(step.args) if i not in writes[step.func]]
        for o in outs:
            if o.slot.kind in ("input", "const"):
                raise ValueError(f"kernel {step.func} would write to a graph input or constant")
            for a in ins:
                if o.overlaps(a):
                    raise ValueError(f"kernel {step.func}: output overlaps an input in the plan")
        for j, o in enumerate(outs):
            if any(o.overlaps(p) for p in outs[j + 1:]):
                raise ValueError(f"kernel {step.func}: two outputs overlap in the plan")


@dataclass(frozen=True)
class ArenaLayout:
    """Byte offsets in the caller's arena: one per storage, one per kernel call's scratch."""

    storage_offsets: tuple[int, ...]
    scratch_offsets: tuple[int, ...]  # per step; meaningless where that step has no scratch
    total: int
    lower_bound: int = 0              # the most bytes alive at one step (arena.lower_bound)


def layout_arena(plan: GraphPlan, scratch_bytes: Sequence[int]) -> ArenaLayout:
    """Place storages and per-call scratch with the arena planner (`arena.plan_arena`): a storage
    lives from the first to the last step that touches it, a call's scratch during that call."""
    if len(scratch_bytes) != len(plan.steps):
        raise ValueError("need one scratch size per step")
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t, step in enumerate(plan.steps):
        refs = step.args if isinstance(step, KernelCall) else (step.src, step.dst)
        for ref in refs:
            if ref.slot.kind == "arena":
                first.setdefault(ref.slot.index, t)
                last[ref.slot.index] = t
    # key ("s", i) for storage i, ("k", t) for the scratch of step t
    blocks = [Lifetime(("s", i), n, first[i], last[i]) for i, n in enumerate(plan.storages) if i in first and n > 0]
    blocks += [Lifetime(("k", t), n, t, t) for t, n in enumerate(scratch_bytes) if n > 0]
    offsets, total = plan_arena(blocks)
    return ArenaLayout(
        lower_bound=lower_bound(blocks),
        storage_offsets=tuple(offsets.get(("s", i), 0) for i in range(len(plan.storages))),
        scratch_offsets=tuple(offsets.get(("k", t), 0) for t in range(len(plan.steps))),
        total=total,
    )
