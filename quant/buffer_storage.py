"""int8 storage of the activation buffers that hold an int8 layer's output.

The stored front end (`export/onnx/frontend_stream.py`, front_end="stored") keeps each patch
conv's output for the whole window in a buffer h_k that the next pass reads. In an int8 export the
conv is a `qconv` whose int8 output is dequantised into the graph's output port: storing the float
would cost four bytes per element for a value that is one int8 code. So the buffer is stored as
that very code: `BufferSpec(dtype="int8", scale, zero_point)` with the dequantize's parameters.
Writing quantize(dequantize(q)) at the same scale gives q back (|(q - zp) * s * float32(1/s) -
(q - zp)| is a few float32 ulps, far below the 0.5 that rounding would need), so the stored front
end's int8 export computes what it would with float32 buffers, at a quarter of their RAM.

Only buffers written by the stored front end's conv stages are considered (a choice of RAM, not
of arithmetic: any other buffer keeps float32), and only when every stage writing the buffer binds
a port that is such a dequantised int8 output (through value-preserving layout ops) with equal
parameters; otherwise the buffer stays float32.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lumamba.export.onnx.manifest import BufferSpec, Manifest

from .qgraph import QGraph

# graph kinds whose outputs may be stored as int8 (the stored front end's conv passes)
STORED_KINDS = ("frontend_conv1", "frontend_conv2", "frontend_conv3")
# ops that move data without changing a value: the port still holds the dequantize's values
_LAYOUT = ("Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")


def int8_output_params(graph: QGraph, port: str) -> tuple[float, int] | None:
    """(scale, zero_point) of the dequantize whose values the output `port` holds, or None."""
    producers = {out: node for node in graph.nodes for out in node.outputs}
    name = port
    while name in producers:
        node = producers[name]
        if node.op == "dequantize":
            return float(np.float32(node.attrs["scale"])), int(node.attrs["zero_point"])
        if node.op not in _LAYOUT:
            return None
        name = node.inputs[0]
    return None


def store_int8_buffers(manifest: Manifest, graphs: dict[str, QGraph]) -> Manifest:
    """`manifest` with the buffers that qualify (module doc) made int8; the others unchanged."""
    kinds = {g.name: g.kind for g in manifest.graphs}
    params: dict[str, set] = {}
    for stage in manifest.schedule:
        for b in stage.outputs:
            found = int8_output_params(graphs[stage.graph], b.port) if kinds[stage.graph] in STORED_KINDS else None
            params.setdefault(b.buffer, set()).add(found)
    buffers = []
    for buf in manifest.buffers:
        found = params.get(buf.name, {None})
        if buf.kind == "activation" and len(found) == 1 and None not in found:
            scale, zero_point = next(iter(found))
            buf = dataclasses.replace(buf, dtype="int8", scale=scale, zero_point=zero_point)
        buffers.append(buf)
    out = dataclasses.replace(manifest, buffers=tuple(buffers))
    out.validate()
    return out


def int8_buffers(manifest: Manifest) -> list[BufferSpec]:
    """The manifest's int8 buffers."""
    return [b for b in manifest.buffers if b.dtype == "int8"]
