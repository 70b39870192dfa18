"""The manifest's schedule for any per-graph executor (float ORT, the golden model, the QDQ set).

Same loop as `lumamba.export.ort_runner` (see `lumamba.export.manifest` for the semantics), with
the graph call passed in, so calibration can record each graph's inputs on the way.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from lumamba.export.manifest import Manifest

# (graph name, {port: array}) -> {port: array}
GraphCall = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


def run_schedule(manifest: Manifest, window: np.ndarray, call: GraphCall) -> dict[str, np.ndarray]:
    """Run one window (C, T) or (1, C, T) through the schedule; returns every buffer by name.
    Feeds are copies, so a caller may keep them after the buffers change."""
    buffers = {b.name: np.zeros(b.shape, dtype=np.float32) for b in manifest.buffers}
    buffers[manifest.input_buffer][...] = window
    steps = {"once": [None], "forward": range(manifest.n_patches), "reverse": range(manifest.n_patches - 1, -1, -1)}
    for stage in manifest.schedule:
        for name in stage.zero:
            buffers[name].fill(0.0)
        for t in steps[stage.loop]:
            feeds = {b.port: (buffers[b.buffer][t:t + 1] if b.row else buffers[b.buffer]).copy()
                     for b in stage.inputs}
            results = call(stage.graph, feeds)
            for b in stage.outputs:
                if b.row:
                    buffers[b.buffer][t] = results[b.port][0]
                else:
                    buffers[b.buffer][...] = results[b.port]
    return buffers


def check_windows(manifest: Manifest, x) -> np.ndarray:
    """(B, C, T) float32 windows matching the export, or a ValueError saying what differs."""
    if hasattr(x, "detach"):          # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    expected = (manifest.n_channels, manifest.n_samples)
    if x.ndim != 3 or x.shape[1:] != expected:
        raise ValueError(f"windows must have shape (B, {expected[0]}, {expected[1]}) for this export "
                         f"({', '.join(manifest.channel_names)}), got {x.shape}")
    if len(x) == 0:
        raise ValueError("no windows given (B=0)")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"windows must be floating point, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        b, c, t = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"windows contain non-finite values (first at window {b}, channel "
                         f"{manifest.channel_names[c]!r}, time {t})")
    return x
