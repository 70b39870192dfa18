"""`quantize`: an ONNX export + a calibration (+ a config) -> integer graphs and the QDQ ONNX set.

Output directory:

    quant.json        index: format/version, graph files, int8/float decision per node, calibration
                      method, config, weight sizes
    manifest.json     the export's schedule, which the integer graphs plug into
    graphs/<g>.json   integer graph description per manifest graph (see qgraph.py), and
    graphs/<g>.npz    its constants (int8 weights, int32 bias/multipliers/shifts, float32 constants)
    qdq/              QDQ ONNX graphs + manifest for onnxruntime (see qdq.py)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from lumamba.export.onnx.manifest import Manifest

from .buffer_storage import store_int8_buffers
from .calibration import Calibration
from .config import Candidate, QuantConfig, as_config
from .convert import build_qgraph
from .lut import fold_lookup_tables
from .convert import candidates as graph_candidates
from .input_scales import fold_layers
from .golden import INDEX, INDEX_FORMAT, INDEX_VERSION, GoldenRunner, GraphExecutor
from .qdq import QDQ_DIR, load_qdq, write_qdq_set
from .qgraph import QGraph

GRAPHS_DIR = "graphs"


@dataclass
class QuantizedModel:
    """What `quantize` wrote, in memory."""

    out_dir: Path
    manifest: Manifest
    graphs: dict[str, QGraph]
    int8: dict[str, bool]        # "graph:node" -> int8?
    summary: dict

    def golden(self) -> GoldenRunner:
        return GoldenRunner(self.manifest, self.graphs, str(self.out_dir))

    def qdq(self, optimization: str = "off"):
        return load_qdq(self.out_dir, optimization)


def candidates(export_dir: str | os.PathLike) -> list[Candidate]:
    """Every quantisable node of an export (graph, node, layer name, learned)."""
    export_dir = Path(export_dir)
    manifest = Manifest.load(export_dir)
    return [c for g in manifest.graphs for c in graph_candidates(onnx.load(str(export_dir / g.file)), g)]


def _record_tensors(graph: QGraph) -> None:
    """Fill `graph.tensors` (dtype and shape of every value) from one run on fixed inputs."""
    feeds = {name: np.linspace(-1.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)
             for name, shape in graph.inputs}
    env = GraphExecutor(graph)(feeds, keep=True)
    graph.tensors = {name: {"dtype": str(v.dtype), "shape": list(v.shape)} for name, v in env.items()}


def quantize(export_dir: str | os.PathLike, calibration: Calibration,
             config: QuantConfig | dict | str | os.PathLike | None = None,
             out_dir: str | os.PathLike | None = None, qdq: bool = True, weights: str = "absmax",
             input_scales: dict[str, float] | None = None) -> QuantizedModel:
    """Quantise an export (`export_onnx`'s directory) with `calibration` (from `calibrate`).

    `config` (None, dict, JSON/TOML path or QuantConfig) moves layers between int8 and float;
    `out_dir` defaults to `<export_dir>/int8`. `qdq=False` skips the QDQ ONNX set. `weights`
    chooses the per-channel weight scales: "absmax" or "mse" (weight_scales.py; the QDQ set keeps
    onnxruntime's max-abs weights either way). `input_scales` (layer -> alpha) folds per-feature
    power-of-two input scales into those int8 Linear layers (input_scales.py; needs the
    calibration's per-feature ranges).
    """
    from .weight_scales import WEIGHT_METHODS

    if weights not in WEIGHT_METHODS:
        raise ValueError(f"weight scale method must be one of {list(WEIGHT_METHODS)}, got {weights!r}")
    export_dir = Path(export_dir)
    out_dir = Path(out_dir) if out_dir is not None else export_dir / "int8"
    manifest = Manifest.load(export_dir)
    calibration.check_export(manifest)
    cfg = as_config(config)
    models = {g.name: onnx.load(str(export_dir / g.file)) for g in manifest.graphs}
    cands = [c for g in manifest.graphs for c in graph_candidates(models[g.name], g)]
    decisions = cfg.decide(cands)
    ranges = {g: dict(r) for g, r in calibration.ranges.items()}
    folded = {}
    if input_scales:
        # a layer kept in float needs no input scale (the automatic precision may first try scales on
        # a layer, then move it to float); unknown layers are still refused by fold_layers
        kept_float = {c.layer for c in cands if not decisions[(c.graph, c.node)]}
        input_scales = {la: a for la, a in input_scales.items() if la not in kept_float}
    if input_scales:
        linear = {(c.graph, c.node): c.layer for c in cands if decisions[(c.graph, c.node)]
                  and _op(models[c.graph], c.node) in ("Gemm", "MatMul")}
        folded = fold_layers(models, linear, calibration.features, ranges, input_scales)

    graphs = {}
    for g in manifest.graphs:
        int8 = {node for (graph, node), q in decisions.items() if graph == g.name and q}
        graphs[g.name] = build_qgraph(models[g.name], g, int8, ranges.get(g.name, {}), weights)
        _record_tensors(graphs[g.name])
        fold_lookup_tables(graphs[g.name])

    manifest = store_int8_buffers(manifest, graphs)   # the stored front end's conv outputs, if any
    out_dir.mkdir(parents=True, exist_ok=True)
    for graph in graphs.values():
        graph.save(out_dir / GRAPHS_DIR)
    manifest.save(out_dir)
    if qdq:
        write_qdq_set(export_dir, out_dir, manifest, graphs, ranges, calibration.method,
                      {g: models[g] for g in {k.split(":", 1)[0] for e in folded.values() for k in e["nodes"]}})

    summary = _summary(graphs, models)
    layers = {f"{c.graph}:{c.node}": c.layer for c in cands}
    index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "manifest": "manifest.json",
             "graphs": {name: {"qgraph": f"{GRAPHS_DIR}/{name}.json",
                               **({"qdq": f"{QDQ_DIR}/{manifest.graph(name).file}"} if qdq else {})}
                        for name in graphs},
             "nodes": {key: {"layer": layers[key], "int8": decisions[tuple(key.split(":", 1))]} for key in layers},
             "calibration": {"method": calibration.method, "percentile": calibration.percentile,
                             "n_windows": calibration.n_windows, "weights": weights},
             "config": cfg.to_dict(), "input_scales": folded, "summary": summary,
             "export": {"checkpoint": manifest.checkpoint, "structures": calibration.structures}}
    (out_dir / INDEX).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return QuantizedModel(out_dir, manifest, graphs, {k: v["int8"] for k, v in index["nodes"].items()}, summary)


def _op(model: onnx.ModelProto, node: str) -> str:
    return next(n.op_type for n in model.graph.node if n.name == node)


def _summary(graphs: dict[str, QGraph], models: dict[str, onnx.ModelProto]) -> dict:
    """Node counts and weight sizes: int8 weights vs the float32 weights they replace."""
    int8_bytes = float_bytes = other_bytes = 0
    n_int8 = 0
    for name, graph in graphs.items():
        for node in graph.int8_nodes():
            n_int8 += 1
            w = graph.constants[node.params["weight"]]
            int8_bytes += w.nbytes
            float_bytes += 4 * w.size
            other_bytes += sum(graph.constants[node.params[r]].nbytes for r in ("bias", "multiplier", "shift"))
    float_total = sum(4 * int(np.prod(t.dims)) for m in models.values() for t in m.graph.initializer
                      if t.data_type == onnx.TensorProto.FLOAT)
    return {"int8_nodes": n_int8, "int8_weight_bytes": int8_bytes, "float_weight_bytes_replaced": float_bytes,
            "int32_per_channel_bytes": other_bytes, "float_model_bytes": float_total}
