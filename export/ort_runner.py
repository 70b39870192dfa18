"""Host executor of an ONNX export: runs the manifest's schedule with onnxruntime.

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

from .manifest import Manifest, Stage

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
        x = self._check_input(x)
        runs = [self._run_one(sample[None]) for sample in x]
        return {name: np.stack([r[name] for r in runs]) for name in runs[0]}

    def _run_one(self, window: np.ndarray) -> dict[str, np.ndarray]:
        m = self.manifest
        buffers = {b.name: np.zeros(b.shape, dtype=np.float32) for b in m.buffers}
        buffers[m.input_buffer][...] = window
        for stage in m.schedule:
            for name in stage.zero:
                buffers[name].fill(0.0)
            steps = {"once": [None], "forward": range(m.n_patches), "reverse": range(m.n_patches - 1, -1, -1)}
            for t in steps[stage.loop]:
                self._run_stage(stage, t, buffers)
        return buffers

    def _run_stage(self, stage: Stage, t: int | None, buffers: dict[str, np.ndarray]) -> None:
        feeds = {b.port: buffers[b.buffer][t:t + 1] if b.row else buffers[b.buffer] for b in stage.inputs}
        results = self.sessions[stage.graph].run([b.port for b in stage.outputs], feeds)
        for b, value in zip(stage.outputs, results):
            if b.row:
                buffers[b.buffer][t] = value[0]
            else:
                buffers[b.buffer][...] = value

    def _check_input(self, x) -> np.ndarray:
        m = self.manifest
        if hasattr(x, "detach"):  # a torch tensor, without importing torch here
            x = x.detach().cpu().numpy()
        if not isinstance(x, np.ndarray):
            raise ValueError(f"x must be a numpy array or torch tensor of shape (B, C, T), got {type(x).__name__}")
        if x.ndim != 3:
            raise ValueError(f"x must have shape (B, C, T) = (B, {m.n_channels}, {m.n_samples}), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"x must be floating point (float32), got {x.dtype}")
        B, C, T = x.shape
        if B == 0:
            raise ValueError("x is an empty batch (B=0)")
        if C != m.n_channels:
            raise ValueError(f"x has {C} channels but this export is for {m.n_channels} "
                             f"({', '.join(m.channel_names)})")
        if T != m.n_samples:
            raise ValueError(f"x has {T} samples per channel but this export is for windows of {m.n_samples}")
        converted = np.ascontiguousarray(x, dtype=np.float32)
        bad = ~np.isfinite(converted)
        if bad.any():
            b, c, t = np.argwhere(bad)[0]
            note = "" if x.dtype == np.float32 else f" (after conversion from {x.dtype} to float32)"
            raise ValueError(f"x contains non-finite values (first at sample {b}, channel "
                             f"{m.channel_names[c]!r}, time {t}){note}")
        return converted


def load(out_dir: str | os.PathLike, optimization: str = "basic") -> Runner:
    """Open an export directory written by `export_onnx`; `optimization` is "basic" or "off"."""
    return Runner(out_dir, optimization)
