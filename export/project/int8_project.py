"""Compile a quantised export (`lumamba.quant.quantize`'s directory) to an int8 firmware project.

The float path's project layout, driver and build are reused unchanged (`firmware_project`,
`model_driver`); what differs:

- every manifest graph's integer description is compiled with `lumamba.export.codegen.compile_qgraph`.
  Graphs are not shared between encoder blocks as in the float path: each block has its own
  activation scales, which the integer kernels hold as compile-time constants.
- the graphs' ports stay float32 buffers (quantise/dequantise happen inside the graphs), so the
  driver's arena and schedule are the float path's.
- the kernels call the bit-exact transcendentals of `firmware/runtime/lumamba_fmath.c`, a
  runtime source of every build (firmware/project.mk, host_c_runner), and every qlinear calls the
  int8 GEMM micro-kernel of the board (`firmware/kernels/`, the board profile's `int8_gemm`), with
  its weights in that kernel's layout; the kernels of the other forms build everywhere too (portable
  fallbacks), so the same sources still run on every board.
- the quantised directory is copied into the project (`INT8_DIR`), so verification can run the
  golden model the C must match bit for bit.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..codegen.graph_c import c_identifier
from ..codegen.qgraph_frontend import compile_qgraph
from .firmware_project import SYMBOL_PREFIX, CompiledModel, write_project
from .model_driver import GraphCall

INT8_DIR = "int8"                  # the quantised model's copy inside a project


def compile_int8_model(quant_dir: str | Path, onnx_dir: str | Path,
                       progress: Callable[[str], None] | None = None,
                       gemm_form: str | None = None) -> CompiledModel:
    """Compile every integer graph of `quant_dir` to C. `onnx_dir` is the float export the
    quantised model came from (copied into the project as the float path does). `gemm_form`: the
    int8 micro-kernel every qlinear calls (the board's `int8_gemm`; None: TVM's loop nests)."""
    from lumamba.quant import load_golden

    golden = load_golden(quant_dir)   # the graphs compiled are exactly those the golden model runs
    manifest = golden.manifest
    compiled = CompiledModel(manifest, Path(onnx_dir), {}, {})
    for g in manifest.graphs:
        cname = SYMBOL_PREFIX + c_identifier(g.name)
        if cname in compiled.cgraphs:
            raise ValueError(f"graphs {g.name!r} and another one both map to the C name {cname!r}")
        if progress is not None:
            progress(f"  compiling {cname} (int8)")
        cgraph = compile_qgraph(golden.executors[g.name].graph, cname, gemm_form)
        compiled.cgraphs[cname] = cgraph
        compiled.calls[g.name] = GraphCall(cname, cgraph)
        compiled.weights[g.name] = []
    return compiled


def write_int8_project(compiled: CompiledModel, quant_dir: str | Path, project_dir: str | Path,
                       windows: np.ndarray, board: str = "cortex-m4f") -> Path:
    """`write_project` for an int8 model, plus the quantised model's copy."""
    project = write_project(compiled, project_dir, windows, board=board)
    source, target = Path(quant_dir), project / INT8_DIR
    if source.resolve() != target.resolve():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
    return project
