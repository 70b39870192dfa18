"""The integer graph description: one JSON file plus one .npz per manifest graph.

    <graph>.json   {"format": "lumamba-qgraph", "version": 1, "name", "kind",
                    "inputs"/"outputs": [{"name", "shape"}]  (float32, as in the manifest),
                    "tensors": {name: {"dtype", "shape"}}    (every value a node produces),
                    "taps": {layer: {"tensor", "scale"?, "zero_point"?}},
                    "nodes": [{"op", "name", "inputs", "outputs", "attrs", "params"?, "layer"?}, ...]}
    <graph>.npz    constants: the float graph's initializers under their ONNX names, and per int8 node
                   `<node>.weight` (int8), `.bias` (int32), `.multiplier` (int32), `.shift` (int32),
                   `.w_scale` (float32, informative).

Nodes are in execution order. A node input is a graph input, an earlier node's output or a key of
the .npz. The ops and their exact arithmetic are specified in `golden.py`; `quantize`,
`dequantize`, `qlinear` and `qconv` are the integer ones, `lut` a 256-entry table of an int8
tensor (quant/lut.py, `<node>.table` in the .npz), every other op is an ONNX (opset 18) op
computed in float32. Scales in the JSON are float32 values written as the shortest decimal that
reads back to the same float32. A tap names the tensor holding a Linear/Conv/MatMul node's output
(int8 with its scale and zero point, or float32), for per-layer error measurements.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "lumamba-qgraph"
VERSION = 1
INTEGER_OPS = ("quantize", "dequantize", "qlinear", "qconv", "lut")


@dataclass
class QNode:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)   # role -> .npz key (int8 nodes)
    layer: str | None = None

    def to_dict(self) -> dict:
        d = {"op": self.op, "name": self.name, "inputs": self.inputs, "outputs": self.outputs, "attrs": self.attrs}
        if self.params:
            d["params"] = self.params
        if self.layer is not None:
            d["layer"] = self.layer
        return d


@dataclass
class QGraph:
    name: str
    kind: str
    inputs: list[tuple[str, tuple[int, ...]]]
    outputs: list[tuple[str, tuple[int, ...]]]
    nodes: list[QNode]
    constants: dict[str, np.ndarray]
    tensors: dict[str, dict] = field(default_factory=dict)
    taps: dict[str, dict] = field(default_factory=dict)

    def int8_nodes(self) -> list[QNode]:
        return [n for n in self.nodes if n.op in ("qlinear", "qconv")]

    def validate(self) -> None:
        """Every input defined before use, every output defined once, params present."""
        defined = {name for name, _ in self.inputs} | set(self.constants)
        for node in self.nodes:
            for name in node.inputs:
                if name and name not in defined:
                    raise ValueError(f"qgraph {self.name}: node {node.name} ({node.op}) reads {name!r} before it is defined")
            for key in node.params.values():
                if key not in self.constants:
                    raise ValueError(f"qgraph {self.name}: node {node.name} names missing parameter {key!r}")
            for name in node.outputs:
                if name in defined:
                    raise ValueError(f"qgraph {self.name}: {name!r} is defined twice")
                defined.add(name)
        for name, _ in self.outputs:
            if name not in defined:
                raise ValueError(f"qgraph {self.name}: output {name!r} is never computed")

    def save(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.validate()
        doc = {"format": FORMAT, "version": VERSION, "name": self.name, "kind": self.kind,
               "params": f"{self.name}.npz",
               "inputs": [{"name": n, "shape": list(s)} for n, s in self.inputs],
               "outputs": [{"name": n, "shape": list(s)} for n, s in self.outputs],
               "tensors": self.tensors, "taps": self.taps,
               "nodes": [n.to_dict() for n in self.nodes]}
        json_path, npz_path = out_dir / f"{self.name}.json", out_dir / f"{self.name}.npz"
        json_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        np.savez(npz_path, **self.constants)
        return json_path, npz_path

    @classmethod
    def load(cls, json_path: str | os.PathLike) -> "QGraph":
        json_path = Path(json_path)
        if not json_path.is_file():
            raise FileNotFoundError(f"integer graph not found: {json_path}")
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise ValueError(f"{json_path}: not a {FORMAT} file of version {VERSION} "
                             f"(found {doc.get('format')!r} version {doc.get('version')!r})")
        npz_path = json_path.parent / doc["params"]
        if not npz_path.is_file():
            raise FileNotFoundError(f"{json_path}: parameter file {npz_path} is missing")
        with np.load(npz_path, allow_pickle=False) as f:
            constants = {k: f[k] for k in f.files}
        nodes = [QNode(n["op"], n["name"], n["inputs"], n["outputs"], n.get("attrs", {}), n.get("params", {}),
                       n.get("layer")) for n in doc["nodes"]]
        graph = cls(doc["name"], doc["kind"], [(t["name"], tuple(t["shape"])) for t in doc["inputs"]],
                    [(t["name"], tuple(t["shape"])) for t in doc["outputs"]], nodes, constants,
                    doc.get("tensors", {}), doc.get("taps", {}))
        try:
            graph.validate()
        except ValueError as e:
            raise ValueError(f"{json_path}: {e}") from e
        return graph
