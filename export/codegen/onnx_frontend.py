"""Front end from ONNX: a small static-shape ONNX graph -> Relax -> `relax_to_c` -> C99.

Steps (see TOOLCHAIN.md, "TVM 0.27: from ONNX to dependency-free C"):

1. ONNX clean-up: chosen initializers become graph inputs (`weights_as_inputs`), then
   onnxscript's optimizer folds shape arithmetic (torch's `chunk`/`split` export Shape/Gather
   chains that Relax cannot legalize with static shapes), and weight-only computations move to
   a host-side preparation graph (`weight_prep`).
2. Relax: from_onnx, then the fusion passes DecomposeOpsForInference -> LegalizeOps ->
   AnnotateTIROpPattern -> FoldConstant -> FuseOps -> FuseTIR -> DeadCodeElimination.
3. `relax_to_c.compile_relax_to_c`: memory plan, lowering, emission (shared with the integer
   front end).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

from .cgraph import CGraph
from .graph_c import check_graph_name
from .plan import PortSpec
from .relax_to_c import compile_relax_to_c
from .weight_prep import split_weight_preparation

__all__ = ["compile_onnx_to_c", "prepare_model"]

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


# --- ONNX preparation ---------------------------------------------------------------------


def _value_info_spec(vi: onnx.ValueInfoProto) -> PortSpec:
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
    return PortSpec(vi.name, tuple(dims), _ONNX_DTYPES[tt.elem_type])


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


def fuse_passes() -> tvm.transform.Pass:
    """Legalize every Relax op to TE/TIR, fold constants, fuse."""
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
    check_graph_name(name)
    prepared, weight_prep = prepare_model(model, weights_as_inputs)
    specs = [_value_info_spec(vi) for vi in prepared.graph.input]
    n_weights = len(weight_prep.graph.output) if weight_prep is not None else 0
    out_names = [o.name for o in prepared.graph.output]

    with warnings.catch_warnings():  # from_onnx warns for every name it sanitises
        warnings.filterwarnings("ignore", message="Renaming name", category=UserWarning)
        mod = from_onnx(prepared, keep_params_in_input=False)
    graph = compile_relax_to_c(mod, name, [s.name for s in specs], out_names, fuse_passes(), n_weights=n_weights)
    for spec, got in zip(specs, graph.inputs):
        if (spec.shape, spec.dtype) != (got.shape, got.dtype):
            raise RuntimeError(f"input {spec.name}: TVM sees {got.dtype}{list(got.shape)}, "
                               f"ONNX declares {spec.dtype}{list(spec.shape)}")
    graph.weight_prep = weight_prep
    return graph
