"""The manifest's schedule, run on the host: the one interpreter every per-graph executor uses
(onnxruntime on the float graphs, the int8 golden model, the QDQ set, calibration), and the one
check of the windows they are given.

See `manifest` for the semantics: buffers start as zeros, each stage runs its graph once or
once per token (forward or reverse, over all tokens or a span), reading and writing whole buffers,
fixed rows of them, or one row per token, or reading patch t of the input window. An int8 buffer
(an int8 export's, `manifest` doc) holds int8 values: writes quantize, reads dequantize, with
golden.py's arithmetic.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np

from .manifest import BufferSpec, Manifest

# (graph name, {port: array}) -> {port: array}
GraphFn = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


def run_schedule(manifest: Manifest, window: np.ndarray, run_graph: GraphFn) -> dict[str, np.ndarray]:
    """Run one window (C, T) or (1, C, T) through the schedule; returns every buffer by name.
    Feeds are copies, so a caller may keep them after the buffers change."""
    specs = {b.name: b for b in manifest.buffers}
    buffers = {b.name: np.zeros(b.shape, dtype=np.int8 if b.dtype == "int8" else np.float32) for b in manifest.buffers}
    buffers[manifest.input_buffer][...] = window
    P = manifest.n_samples // manifest.n_patches

    def read(b, t):
        if b.patch:
            return buffers[b.buffer][:, :, t * P:(t + 1) * P]
        if b.rows is not None:
            return _load(specs[b.buffer], buffers[b.buffer][b.rows[0]:b.rows[1]])
        return _load(specs[b.buffer], buffers[b.buffer][t:t + 1] if b.row else buffers[b.buffer])

    for stage in manifest.schedule:
        for name in stage.zero:
            buffers[name].fill(0.0)
        for t in stage.steps(manifest.n_patches):
            feeds = {b.port: np.ascontiguousarray(read(b, t)).copy() for b in stage.inputs}
            results = run_graph(stage.graph, feeds)
            for b in stage.outputs:
                value = _store(specs[b.buffer], np.asarray(results[b.port], dtype=np.float32))
                if b.row:
                    buffers[b.buffer][t] = value[0]
                elif b.rows is not None:
                    buffers[b.buffer][b.rows[0]:b.rows[1]] = value
                else:
                    buffers[b.buffer][...] = value
    return {name: _load(specs[name], value) for name, value in buffers.items()}


def _store(spec: BufferSpec, value: np.ndarray) -> np.ndarray:
    """What a buffer holds for the float32 `value` written to it: for int8, golden.py's quantize
    (this package does not import lumamba.quant; tests check it against fixed_point.quantize_f32):
    v = x * float32(1/scale), rounded half away from zero (exact: truncation plus the exact
    fraction), clamped to the int8 codes, + zero_point."""
    if spec.dtype != "int8":
        return value
    v = value * np.float32(1.0 / float(np.float32(spec.scale)))
    r = np.trunc(v)
    r = r + (v - r >= 0.5) - (v - r <= -0.5)
    r = np.minimum(np.maximum(r, np.float32(-128 - spec.zero_point)), np.float32(127 - spec.zero_point))
    return (r.astype(np.int32) + spec.zero_point).astype(np.int8)


def _load(spec: BufferSpec, held: np.ndarray) -> np.ndarray:
    """The float32 value a graph reads from what a buffer holds (int8: (float)(q - zp) * scale)."""
    if spec.dtype != "int8":
        return held
    return (held.astype(np.int32) - spec.zero_point).astype(np.float32) * np.float32(spec.scale)


def check_windows(x, n_channels: int, n_samples: int, channel_names: Sequence[str] | None = None, *,
                  single: bool = False, finite: bool = True) -> np.ndarray:
    """`x` as contiguous float32 windows (B, C, T) for an export of `n_channels` x `n_samples`, or a
    ValueError saying what differs. `single`: a lone window (C, T) is accepted as B = 1.
    `finite=False` leaves non-finite values to the executor (the C driver reports them itself)."""
    names = list(channel_names) if channel_names is not None else [str(c) for c in range(n_channels)]
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"x must be a numpy array or torch tensor of shape (B, C, T), got {type(x).__name__}")
    if single and x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, C, T) = (B, {n_channels}, {n_samples}), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be floating point (float32), got {x.dtype}")
    B, C, T = x.shape
    if B == 0:
        raise ValueError("x is an empty batch (B=0)")
    if C != n_channels:
        raise ValueError(f"x has {C} channels but this export is for {n_channels} ({', '.join(names)}): "
                         f"expected shape (B, {n_channels}, {n_samples})")
    if T != n_samples:
        raise ValueError(f"x has {T} samples per channel but this export is for windows of {n_samples}: "
                         f"expected shape (B, {n_channels}, {n_samples})")
    converted = np.ascontiguousarray(x, dtype=np.float32)
    if finite:
        bad = ~np.isfinite(converted)
        if bad.any():
            b, c, t = np.argwhere(bad)[0]
            note = "" if x.dtype == np.float32 else f" (after conversion from {x.dtype} to float32)"
            raise ValueError(f"x contains non-finite values (first at sample {b}, channel {names[c]!r}, "
                             f"time {t}){note}")
    return converted


def check_manifest_windows(manifest: Manifest, x, **options) -> np.ndarray:
    """`check_windows` against an export's manifest."""
    return check_windows(x, manifest.n_channels, manifest.n_samples, manifest.channel_names, **options)
