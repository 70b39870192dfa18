"""Compile a small static-shape ONNX graph to dependency-free C99 with TVM 0.27.

Pipeline (see docs in TOOLCHAIN.md, "TVM 0.27: from ONNX to dependency-free C"):

1. ONNX clean-up: chosen initializers become graph inputs (`weights_as_inputs`), then
   onnxscript's optimizer folds shape arithmetic (torch's `chunk`/`split` export Shape/Gather
   chains that Relax cannot legalize with static shapes), and weight-only computations move to
   a host-side preparation graph (`tvm_weight_prep`).
2. Relax: from_onnx -> DecomposeOpsForInference -> LegalizeOps -> AnnotateTIROpPattern ->
   FoldConstant -> FuseOps -> FuseTIR -> DeadCodeElimination.
3. Each fused PrimFunc -> scheduled, lowered TIR -> plain C kernel (`tvm_lower`).
4. Relax memory plan: RewriteDataflowReshape -> ToNonDataflow -> RemovePurityChecking ->
   CallTIRRewrite -> StaticPlanBlockMemory; its `main` becomes the call list (`tvm_plan`).
5. Emission: header, kernels, constant weights, one driver over a static arena (`c_emit`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

from . import c_emit
from .tvm_lower import CKernel, lower_primfunc
from .tvm_plan import (GraphPlan, KernelCall, TensorSpec, check_no_alias, layout_arena,
                       plan_from_relax)
from .tvm_weight_prep import run_preparation, split_weight_preparation

__all__ = ["CGraph", "TensorSpec", "compile_onnx_to_c"]

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass
class CGraph:
    """One ONNX graph compiled to C.

    `driver_c` defines `int <name>_run(inputs..., outputs..., uint8_t *arena)`; `inputs` lists
    the pointer arguments in order (data inputs, then the prepared weights when weights are
    inputs).  `kernels_c` holds the kernels (symbols `<name>_k<i>_...`), `weights_c` the
    constants that stayed constants (`const` arrays, so they go to flash), `header_c` the
    prototypes and the `<NAME>_ARENA_BYTES`, `<NAME>_IN<i>_SIZE/_SHAPE`, ... macros.
    """

    name: str
    kernels_c: str
    driver_c: str
    header_c: str
    weights_c: str
    arena_bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    weights: list[TensorSpec] = field(default_factory=list)  # prepared weights, last in inputs
    kernel_symbols: list[str] = field(default_factory=list)
    # Host-side graph mapping the raw weights (`weights_as_inputs`) to the prepared `weights`
    # the C takes (e.g. transposed matrices); None when no weight is an input.
    weight_prep: onnx.ModelProto | None = None

    def prepare_weights(self, raw: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The weight arguments of `<name>_run()` (in order) from the raw initializer values."""
        if self.weight_prep is None:
            return []
        return run_preparation(self.weight_prep, raw)

    def sources(self) -> dict[str, str]:
        """File name -> content of the four files that make up the graph."""
        return {
            f"{self.name}.h": self.header_c,
            f"{self.name}_kernels.c": self.kernels_c,
            f"{self.name}_weights.c": self.weights_c,
            f"{self.name}_driver.c": self.driver_c,
        }

    def write(self, directory: str | Path) -> list[Path]:
        """Write `sources()` into `directory`; returns the paths written."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for fname, text in self.sources().items():
            path = out / fname
            path.write_text(text)
            paths.append(path)
        return paths


# --- ONNX preparation ---------------------------------------------------------------------


def _value_info_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    if tt.elem_type not in _ONNX_DTYPES:
        raise NotImplementedError(
            f"input {vi.name!r}: ONNX element type {onnx.TensorProto.DataType.Name(tt.elem_type)}"
            " is not supported"
        )
    dims = []
    for axis, dim in enumerate(tt.shape.dim):
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            raise ValueError(
                f"input {vi.name!r}: dimension {axis} is dynamic ({dim.dim_param or '?'}); "
                "export the graph with static shapes"
            )
        dims.append(dim.dim_value)
    return TensorSpec(vi.name, tuple(dims), _ONNX_DTYPES[tt.elem_type])


def prepare_model(
    model: onnx.ModelProto, weights_as_inputs: Sequence[str] = ()
) -> tuple[onnx.ModelProto, onnx.ModelProto | None]:
    """(device model, weight preparation model or None) for compiling `model`.

    The named initializers become graph inputs; onnxscript then folds constants so every shape
    is static; finally the weight-only computations move to the preparation model, whose
    outputs are the device model's last inputs.
    """
    import onnxscript.optimizer

    model = copy.deepcopy(model)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    input_names = {i.name for i in graph.input}
    if len(set(weights_as_inputs)) != len(weights_as_inputs):
        raise ValueError(f"weights_as_inputs lists a name twice: {list(weights_as_inputs)}")
    for name in weights_as_inputs:
        if name not in inits:
            known = ", ".join(sorted(inits)[:8])
            raise ValueError(f"weights_as_inputs: {name!r} is not an initializer of graph "
                             f"{graph.name!r} (some are: {known})")
    # Initializers that double as graph inputs are overridable defaults: keep them constant.
    for vi in list(graph.input):
        if vi.name in inits and vi.name not in weights_as_inputs:
            graph.input.remove(vi)
    for name in weights_as_inputs:
        tensor = inits[name]
        graph.initializer.remove(tensor)
        if name not in input_names:
            graph.input.append(onnx.helper.make_tensor_value_info(name, tensor.data_type,
                                                                  list(tensor.dims)))
    for vi in graph.input:
        _value_info_spec(vi)  # rejects dynamic shapes and unsupported dtypes early
    model = onnxscript.optimizer.optimize(model)
    if not weights_as_inputs:
        return model, None
    data = [vi for vi in model.graph.input if vi.name not in weights_as_inputs]
    weights = [vi for n in weights_as_inputs for vi in model.graph.input if vi.name == n]
    del model.graph.input[:]
    model.graph.input.extend(data + weights)
    return split_weight_preparation(model, [vi.name for vi in weights])


# --- Relax --------------------------------------------------------------------------------


def _fuse_passes() -> tvm.transform.Pass:
    return tvm.transform.Sequential(
        [
            relax.transform.DecomposeOpsForInference(),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
        ]
    )


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


def _kernel_symbol(name: str, index: int, tvm_name: str) -> str:
    short = tvm_name.removeprefix("fused_")
    if len(short) > 32:
        short = short[:32].rsplit("_", 1)[0]
    return f"{name}_k{index}_{c_emit.c_identifier(short)}"


def lower_kernels(name: str, plan: GraphPlan, planned: tvm.IRModule) -> dict[str, CKernel]:
    """Lower every fused PrimFunc the plan calls to plain C (once per function, symbols prefixed
    with the graph name), and check that no kernel writes a buffer it also reads."""
    kernels: dict[str, CKernel] = {}
    for step in plan.steps:
        if isinstance(step, KernelCall) and step.func not in kernels:
            gv = planned.get_global_var(step.func)
            symbol = _kernel_symbol(name, len(kernels), step.func)
            kernels[step.func] = lower_primfunc(planned[gv], symbol, step.func)
    check_no_alias(plan, {f: {i for i, p in enumerate(k.params) if not p.readonly}
                          for f, k in kernels.items()})
    return kernels


def compile_onnx_to_c(
    model: onnx.ModelProto, name: str, weights_as_inputs: Sequence[str] = ()
) -> CGraph:
    """Compile `model` (static shapes) to the C sources of `<name>_run()`.

    Initializers listed in `weights_as_inputs` become pointer arguments of `<name>_run()`
    (after the data inputs), so graphs that differ only in those weights share the same
    kernels and driver; all other initializers are folded into `const` arrays.  What the graph
    computes from those weights alone (transposes, -exp(A_log), ...) is done once on the host:
    pass `graph.prepare_weights(raw)` as the weight arguments.
    """
    if not name.isidentifier() or not name.isascii() or name in c_emit.C_KEYWORDS:
        raise ValueError(f"graph name {name!r} is not a C identifier")
    prepared, weight_prep = prepare_model(model, weights_as_inputs)
    specs = [_value_info_spec(vi) for vi in prepared.graph.input]
    n_weights = len(weight_prep.graph.output) if weight_prep is not None else 0
    out_names = [o.name for o in prepared.graph.output]

    with warnings.catch_warnings():  # from_onnx warns for every name it sanitises
        warnings.filterwarnings("ignore", message="Renaming name", category=UserWarning)
        mod = from_onnx(prepared, keep_params_in_input=False)
    mod = _fuse_passes()(mod)
    planned = _plan_passes()(mod)
    plan = plan_from_relax(planned["main"], [s.name for s in specs], out_names)
    for spec, got in zip(specs, plan.inputs):
        if (spec.shape, spec.dtype) != (got.shape, got.dtype):
            raise RuntimeError(f"input {spec.name}: TVM sees {got.dtype}{list(got.shape)}, "
                               f"ONNX declares {spec.dtype}{list(spec.shape)}")

    graph = _emit(name, plan, lower_kernels(name, plan, planned), n_weights)
    graph.weight_prep = weight_prep
    return graph


def _emit(name: str, plan: GraphPlan, kernels: dict[str, CKernel], n_weights: int) -> CGraph:
    n_data = len(plan.inputs) - n_weights
    unique = c_emit.unique_identifiers
    in_names = unique([s.name for s in plan.inputs[:n_data]], "in_")
    in_names += unique([s.name for s in plan.inputs[n_data:]], "w_")
    out_names = unique([s.name for s in plan.outputs], "out_")
    const_names = [f"{name}_c{i}" for i in range(len(plan.constants))]
    scratch = [kernels[s.func].scratch_bytes if isinstance(s, KernelCall) else 0
               for s in plan.steps]
    arena = layout_arena(plan, scratch, c_emit.ARENA_ALIGN)
    signature = c_emit.run_signature(name, plan, in_names, out_names)
    ordered = list(kernels.values())
    return CGraph(
        name=name,
        kernels_c=c_emit.emit_kernels(name, ordered),
        driver_c=c_emit.emit_driver(name, plan, kernels, arena, signature, in_names, out_names,
                                    const_names),
        header_c=c_emit.emit_header(name, plan, ordered, arena, signature, const_names),
        weights_c=c_emit.emit_weights(name, plan, const_names),
        arena_bytes=arena.total,
        inputs=list(plan.inputs),
        outputs=list(plan.outputs),
        weights=list(plan.inputs[n_data:]),
        kernel_symbols=[k.symbol for k in ordered],
    )
