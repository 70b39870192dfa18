"""Host executor of an ONNX export: the manifest's schedule (`schedule.run_schedule`) with onnxruntime.

Sessions use ORT_ENABLE_BASIC graph optimisation: its rewrites (constant folding, removal of
redundant nodes) preserve the graph's arithmetic, so the runner computes what the C generator
compiles; the extended levels would swap in fused kernels (LayerNorm, GELU, attention) with
their own rounding. One intra-op thread: the graphs are small, and a fixed reduction order keeps
results reproducible.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .manifest import Manifest
from .schedule import check_manifest_windows, run_schedule

OPTIMIZATION_LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


class Runner:
    """Callable LuMamba from an export directory: `runner(x)` -> logits (B, n_classes)."""

    def __init__(self, out_dir: str | os.PathLike, optimization: str = "basic"):
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {sorted(OPTIMIZATION_LEVELS)}, got {optimization!r}")
        self.out_dir = Path(out_dir)
        self.manifest = Manifest.load(self.out_dir)
        options = ort.SessionOptions()
        options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.sessions = {}
        for g in self.manifest.graphs:
            path = self.out_dir / g.file
            if not path.is_file():
                raise FileNotFoundError(f"{path}: graph {g.name!r} listed in the manifest is missing")
            self.sessions[g.name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x) -> np.ndarray:
        """Logits (B, n_classes) of float32 windows x (B, C, T)."""
        if self.manifest.logits_buffer is None:
            raise ValueError(f"{self.out_dir} holds an encoder-only export (pre-training model): "
                             "it has no logits; use latent()")
        return self.stages(x)[self.manifest.logits_buffer][:, 0]

    def latent(self, x) -> np.ndarray:
        """Encoder output (B, S, d_model): the input of the classification head."""
        return self.stages(x)[self.manifest.latent_buffer]

    def stages(self, x) -> dict[str, np.ndarray]:
        """Every buffer of the schedule after a run, stacked over the batch: name -> (B, *shape)."""
        x = check_manifest_windows(self.manifest, x)
        runs = [run_schedule(self.manifest, sample[None], self._run_graph) for sample in x]
        return {name: np.stack([r[name] for r in runs]) for name in runs[0]}

    def _run_graph(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ports = [o.name for o in self.sessions[graph].get_outputs()]
        return dict(zip(ports, self.sessions[graph].run(ports, feeds)))


def load(out_dir: str | os.PathLike, optimization: str = "basic") -> Runner:
    """Open an export directory written by `export_onnx`; `optimization` is "basic" or "off"."""
    return Runner(out_dir, optimization)
