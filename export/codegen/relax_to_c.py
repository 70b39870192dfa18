"""The code generator's one entry point: a Relax module -> a `CGraph` of plain C99.

Both front ends build a Relax `main` (`onnx_frontend` from an ONNX graph, `qgraph_frontend`
from an integer graph description) and hand it here with their fusion passes. Then:

1. fusion (the front end's passes), then Relax's memory plan: RewriteDataflowReshape ->
   ToNonDataflow -> RemovePurityChecking -> CallTIRRewrite -> StaticPlanBlockMemory;
2. `plan.plan_from_relax` reads the kernel calls and storages out of the planned `main`;
3. each fused PrimFunc is scheduled and lowered to a C kernel (`lower`), its int8 qlinears that
   the front end marked for a firmware micro-kernel rewritten as calls of it
   (`micro_kernel_tir.schedule_with_micro_kernels`);
4. storages and kernel scratch get arena offsets (`plan.layout_arena` through `arena`) and the
   header, kernels, constants and `<name>_run()` driver are written (`graph_c`).
"""
from __future__ import annotations

from collections.abc import Sequence

import tvm
from tvm import relax

from . import graph_c
from .cgraph import CGraph
from .lower import CKernel, lower_primfunc
from .micro_kernel_tir import schedule_with_micro_kernels
from .plan import GraphPlan, KernelCall, check_no_alias, layout_arena, plan_from_relax


def _plan_passes() -> tvm.transform.Pass:
    return tvm.transform.Sequential(
        [
            relax.transform.RewriteDataflowReshape(),
            relax.transform.ToNonDataflow(),
            relax.transform.RemovePurityChecking(),
            relax.transform.CallTIRRewrite(),
            relax.transform.StaticPlanBlockMemory(),
        ]
    )


def compile_relax_to_c(mod: tvm.IRModule, name: str, input_names: Sequence[str], output_names: Sequence[str],
                       fuse: tvm.transform.Pass, *, n_weights: int = 0,
                       headers: Sequence[str] = ()) -> CGraph:
    """Fuse (`fuse`), plan, lower and emit `mod`'s `main` as `<name>_run()`.

    `input_names`/`output_names` name `main`'s parameters and results in order; the last
    `n_weights` inputs are weight arguments (named `w_*` in C). `headers` are runtime headers
    the kernels call into (e.g. the bit-exact transcendentals of the int8 path).
    """
    graph_c.check_graph_name(name)
    planned = _plan_passes()(fuse(mod))
    plan = plan_from_relax(planned["main"], list(input_names), list(output_names))
    return _emit(name, plan, lower_kernels(name, plan, planned), n_weights, headers)


def _kernel_symbol(name: str, index: int, tvm_name: str) -> str:
    short = tvm_name.removeprefix("fused_")
    if len(short) > 32:
        short = short[:32].rsplit("_", 1)[0]
    return f"{name}_k{index}_{graph_c.c_identifier(short)}"


def lower_kernels(name: str, plan: GraphPlan, planned: tvm.IRModule) -> dict[str, CKernel]:
    """Lower every fused PrimFunc the plan calls to plain C (once per function, symbols prefixed
    with the graph name), and check that no kernel writes a buffer it also reads."""
    kernels: dict[str, CKernel] = {}
    for step in plan.steps:
        if isinstance(step, KernelCall) and step.func not in kernels:
            gv = planned.get_global_var(step.func)
            symbol = _kernel_symbol(name, len(kernels), step.func)
            kernels[step.func] = lower_primfunc(planned[gv], symbol, step.func, schedule=schedule_with_micro_kernels)
    check_no_alias(plan, {f: {i for i, p in enumerate(k.params) if not p.readonly}
                          for f, k in kernels.items()})
    return kernels


def _emit(name: str, plan: GraphPlan, kernels: dict[str, CKernel], n_weights: int,
          headers: Sequence[str]) -> CGraph:
    n_data = len(plan.inputs) - n_weights
    unique = graph_c.unique_identifiers
    in_names = unique([s.name for s in plan.inputs[:n_data]], "in_")
    in_names += unique([s.name for s in plan.inputs[n_data:]], "w_")
    out_names = unique([s.name for s in plan.outputs], "out_")
    const_names = [f"{name}_c{i}" for i in range(len(plan.constants))]
    scratch = [kernels[s.func].scratch_bytes if isinstance(s, KernelCall) else 0
               for s in plan.steps]
    arena = layout_arena(plan, scratch)
    signature = graph_c.run_signature(name, plan, in_names, out_names)
    ordered = list(kernels.values())
    return CGraph(
        name=name,
        kernels_c=graph_c.emit_kernels(name, ordered, headers),
        driver_c=graph_c.emit_driver(name, plan, kernels, arena, signature, in_names, out_names,
                                     const_names),
        header_c=graph_c.emit_header(name, plan, ordered, arena, signature, const_names),
        weights_c=graph_c.emit_weights(name, plan, const_names),
        arena_bytes=arena.total,
        arena_lower_bound=arena.lower_bound,
        inputs=list(plan.inputs),
        outputs=list(plan.outputs),
        weights=list(plan.inputs[n_data:]),
        kernel_symbols=[k.symbol for k in ordered],
    )
