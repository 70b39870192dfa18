"""Stage 2 of the export, code generation: a graph -> plain C99 through TVM 0.27.

Contract: in, one static-shape graph (an ONNX graph of the `onnx` stage, or an integer graph
description of `lumamba.quant`); out, a `CGraph`: C sources of `int <name>_run(inputs...,
outputs..., uint8_t *arena)` with no TVM runtime, no allocation and a fixed arena size.

    onnx_frontend.compile_onnx_to_c(model, name)   ONNX -> Relax (from_onnx, legalised)   \\
    qgraph_frontend.compile_qgraph(graph, name)    QGraph -> Relax (the op table, TE)     -> relax_to_c.compile_relax_to_c
                                                                                             (plan, lower, arena, emit)

Modules: `relax_to_c` (the one entry from Relax to C), `plan` (kernel calls and storages out of
Relax's memory plan), `arena` (the one arena planner, also used for the model driver's arena),
`schedule` + `lower` (TIR schedule and lowering of each fused kernel), `graph_c` (the C text of
one graph), `integer_te` / `float_island_te` (TE definitions of the integer graph's ops),
`weight_prep` (weight-only computations moved to the host), `host_graph` (a graph built as a host
shared library, for tests).

Public names are imported on first use, so importing the package does not load TVM.
"""
from __future__ import annotations

from lumamba.lazy import lazy_attributes

_LAZY = {
    "CGraph": "cgraph",
    "compile_relax_to_c": "relax_to_c",
    "compile_onnx_to_c": "onnx_frontend",
    "compile_qgraph": "qgraph_frontend",
    "compile_qnode": "qgraph_frontend",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
