"""Compile an ONNX export (manifest + graphs) to C and write a self-contained firmware project.

    project/
      onnx/                          the export the C was generated from (manifest.json, *.onnx)
      model.h model.c                driver (model_driver): lumamba_init(), lumamba_infer()
      model_weights.h                declarations of the shared graphs' weight arrays
      lumamba_<graph>.h              per compiled graph (lumamba.export.codegen): header, kernels, driver
      lumamba_<graph>_kernels.c
      lumamba_<graph>_driver.c
      weights_lumamba_<graph>.c      constants TVM folded into that graph (const: flash)
      weights_<graph>.c              prepared weights of a graph that runs a shared kernel set
      test_vectors.h                 fixed windows for the test application
      Makefile, firmware/            `make BOARD=...` rebuilds without Python (lumamba.export.project.build)

Graphs with the same `structure` in the manifest (the encoder steps of every block and
direction) are compiled once, with their weights as arguments: code size does not grow with
depth, and each graph contributes only its weight arrays. Generation is deterministic: the same
export gives byte-identical sources.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..codegen.cgraph import CGraph
from ..codegen.graph_c import c_identifier, unique_identifiers
from ..codegen.lower import c_type, hex_float
from ..codegen.onnx_frontend import compile_onnx_to_c
from ..onnx.manifest import MANIFEST_NAME, Manifest
from .build import prepare_project
from .model_driver import GraphCall, generate_driver
from .test_vectors import fixed_count_windows, write_test_vectors

ONNX_DIR = "onnx"        # the export's copy inside a project
SYMBOL_PREFIX = "lumamba_"  # compiled graphs' C names, so their symbols do not clash with the application's
_VALUES_PER_LINE = 8
GENERATOR = "lumamba.export.project.firmware_project"


@dataclass
class CompiledModel:
    """An export compiled to C: one CGraph per structure group and each graph's weight arrays."""

    manifest: Manifest
    onnx_dir: Path
    cgraphs: dict[str, CGraph]                      # C name -> compiled graph
    calls: dict[str, GraphCall]                     # manifest graph -> how the driver runs it
    weights: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)  # graph -> (C array, values)


def _log(progress: Callable[[str], None] | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _float_initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT}


def shared_weight_names(models: list[onnx.ModelProto]) -> list[str]:
    """Initializers of a structure group that become run-time arguments: every float tensor of
    rank >= 1 (the weights), and any scalar whose value differs between the group's graphs.
    Scalars equal in all of them (export constants such as softplus's threshold) stay folded."""
    inits = [_float_initializers(m) for m in models]
    names = []
    for name, value in inits[0].items():
        if any(name not in other for other in inits[1:]):
            raise ValueError(f"graphs of one structure group differ in initializer {name!r}")
        if value.ndim >= 1 or any(not np.array_equal(value, other[name]) for other in inits[1:]):
            names.append(name)
    return names


def _c_names(manifest: Manifest) -> dict[str, tuple[str, list[str]]]:
    """C name -> (structure, member graphs): a shared group is named after its members' kind,
    a single graph after itself."""
    taken: dict[str, tuple[str, list[str]]] = {}
    for structure, members in manifest.shared_structures().items():
        base = manifest.graph(members[0]).kind if len(members) > 1 else members[0]
        name = SYMBOL_PREFIX + c_identifier(base)
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name}_{n}", n + 1
        taken[candidate] = (structure, members)
    return taken


def compile_model(manifest: Manifest, onnx_dir: str | Path,
                  progress: Callable[[str], None] | None = None) -> CompiledModel:
    """Compile every graph of the export in `onnx_dir` with TVM (shared structures once)."""
    onnx_dir = Path(onnx_dir)
    compiled = CompiledModel(manifest, onnx_dir, {}, {})
    for cname, (_, members) in _c_names(manifest).items():
        models = []
        for g in members:
            path = onnx_dir / manifest.graph(g).file
            if not path.is_file():
                raise FileNotFoundError(f"{path}: graph {g!r} listed in the manifest is missing")
            models.append(onnx.load(str(path)))
        shared = len(members) > 1
        names = shared_weight_names(models) if shared else []
        label = f"{cname} (shared by {', '.join(members)})" if shared else cname
        _log(progress, f"  compiling {label}")
        cgraph = compile_onnx_to_c(models[0], cname, weights_as_inputs=names)
        compiled.cgraphs[cname] = cgraph
        for g, model in zip(members, models):
            arrays = []
            if shared:
                values = cgraph.prepare_weights(_float_initializers(model))
                idents = unique_identifiers([s.name for s in cgraph.weights], f"{SYMBOL_PREFIX}{c_identifier(g)}_")
                for ident, spec, value in zip(idents, cgraph.weights, values):
                    value = np.asarray(value)
                    if value.size != int(np.prod(spec.shape)) or str(value.dtype) != spec.dtype:
                        raise ValueError(f"graph {g!r}: prepared weight {spec.name!r} is {value.dtype}"
                                         f"{list(value.shape)}, the C expects {spec.dtype}{list(spec.shape)}")
                    arrays.append((ident, value))
            compiled.weights[g] = arrays
            compiled.calls[g] = GraphCall(cname, cgraph, tuple(name for name, _ in arrays))
    return compiled


def _array_text(name: str, comment: str, values: np.ndarray) -> str:
    dtype = str(values.dtype)
    flat = np.ascontiguousarray(values).reshape(-1)
    if dtype in ("float32", "float64"):
        items = [hex_float(v, dtype) for v in flat.tolist()]
    else:
        items = [str(int(v)) for v in flat.tolist()]
    rows = [", ".join(items[i:i + _VALUES_PER_LINE]) for i in range(0, len(items), _VALUES_PER_LINE)]
    body = ",\n".join("    " + r for r in rows) or "    0"
    return (f"/* {comment}: {dtype}{list(values.shape)} */\n"
            f"const {c_type(dtype)} {name}[{max(flat.size, 1)}] = {{\n{body}\n}};\n")


def _weights_file(graph: str, cgraph: CGraph, arrays: list[tuple[str, np.ndarray]]) -> str:
    parts = [f"/* Weights of graph {graph} for the shared {cgraph.name}_run(), prepared on the host.",
             f" * Generated by {GENERATOR}; do not edit. */",
             "#include <math.h>", "#include <stdint.h>", "", '#include "model_weights.h"', ""]
    parts += [_array_text(name, spec.name, value) for (name, value), spec in zip(arrays, cgraph.weights)]
    return "\n".join(parts)


def model_sources(compiled: CompiledModel) -> dict[str, str]:
    """Every generated C source of the model: file name -> text (deterministic)."""
    files: dict[str, str] = {}

    def add(name: str, text: str) -> None:
        if name in files:
            raise ValueError(f"two generated sources would be named {name!r}")
        files[name] = text

    for cname, cg in compiled.cgraphs.items():
        add(f"{cname}.h", cg.header_c)
        add(f"{cname}_kernels.c", cg.kernels_c)
        add(f"{cname}_driver.c", cg.driver_c)
        add(f"weights_{cname}.c", cg.weights_c)  # the memory report counts weights*.c as weights
    for graph, arrays in compiled.weights.items():
        if arrays:
            add(f"weights_{c_identifier(graph)}.c", _weights_file(graph, compiled.calls[graph].cgraph, arrays))
    for name, text in generate_driver(compiled.manifest, compiled.calls).items():
        add(name, text)
    return dict(sorted(files.items()))


def write_project(compiled: CompiledModel, project_dir: str | Path, windows: np.ndarray,
                  board: str = "cortex-m4f") -> Path:
    """Write the complete project for `compiled` into `project_dir` (created; generated files
    already there are replaced), with `windows` (n, C, T) as its test vectors and `board` as the
    Makefile's default; the test application also runs fixed_count_windows through
    lumamba_infer_counts(). Returns the project directory."""
    project = Path(project_dir)
    project.mkdir(parents=True, exist_ok=True)
    for old in [*project.glob("*.c"), *project.glob("*.h")]:
        if _is_generated(old):
            old.unlink()   # make builds every *.c here: a stale graph's sources would be linked too
    for name, text in model_sources(compiled).items():
        (project / name).write_text(text, encoding="utf-8")
    _copy_export(compiled, project / ONNX_DIR)
    write_test_vectors(project, windows, fixed_count_windows(compiled.manifest.n_channels, compiled.manifest.n_samples))
    prepare_project(project, board)
    return project


def _is_generated(path: Path) -> bool:
    """Whether a source was written by this package (its first comment says so); others are kept."""
    head = path.read_bytes()[:300].lower()
    return b"do not edit" in head or b"generated by lumamba" in head


def _copy_export(compiled: CompiledModel, target: Path) -> None:
    source = compiled.onnx_dir
    if source.resolve() == target.resolve():
        return
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(source / MANIFEST_NAME, target / MANIFEST_NAME)
    for g in compiled.manifest.graphs:
        shutil.copy2(source / g.file, target / g.file)
