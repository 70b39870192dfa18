"""What the demo firmware computes before the model, repeated on the host bit for bit, and the
reference logits of its windows.

The device receives int16 counts (microvolts / uv_per_count, rounded and saturated), cuts the
window [start, start + T) of every decision out of its ring buffer and normalises each channel by
the model's method (zscore, robust or fixed; lumamba.normalise) in lumamba_infer_counts(), with
the arithmetic of firmware/runtime/lumamba_normalise.c. numpy's float32 element-wise operations
round like the firmware's (IEEE-754, no fused multiply-add), so the windows below are the
firmware's to the bit, and so are the golden model's logits on them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lumamba.normalise import normalise_counts as device_normalise

__all__ = ["quantise", "device_normalise", "device_windows", "apply_gaps", "Reference"]


def quantise(uv: np.ndarray, uv_per_count: float) -> tuple[np.ndarray, int]:
    """(C, N) microvolts -> (N, C) int16 counts, rounded to nearest and saturated; also returns
    how many samples saturated."""
    counts = np.rint(np.asarray(uv, np.float64) / float(uv_per_count)).T
    clipped = int(np.count_nonzero((counts < -32768) | (counts > 32767)))
    return np.clip(counts, -32768, 32767).astype(np.int16), clipped


def device_windows(counts: np.ndarray, starts: list[int], length: int, uv_per_count: float,
                   method: str = "zscore") -> np.ndarray:
    """The windows (n, C, T) float32 the device fed the model for decisions starting at ``starts``
    (``counts``: the stream, (N, C) instant-major)."""
    return np.stack([device_normalise(counts[s:s + length].T, uv_per_count, method) for s in starts])


def apply_gaps(counts: np.ndarray, gaps: list[tuple[int, int]], instants_per_frame: int) -> np.ndarray:
    """The counts as the device holds them after frames were lost: each lost frame (seq, n_frames)
    filled with the last instant before it (sample-and-hold, as lumamba_stream.c does)."""
    out = np.array(counts, copy=True)
    for seq, n_frames in gaps:
        first = seq * instants_per_frame
        last = min(len(out), (seq + n_frames) * instants_per_frame)
        if first > 0 and first < last:
            out[first:last] = out[first - 1]
    return out


class Reference:
    """Reference logits of a project: the int8 golden model (bit for bit) if the project has one,
    else onnxruntime on its float export (within TOLERANCE)."""

    def __init__(self, project: str | Path):
        project = Path(project)
        int8 = project / "int8"
        if (int8 / "quant.json").is_file():
            from lumamba.quant import load_golden
            self.name, self.bit_exact, self.tolerance = "the int8 golden model", True, 0.0
            self._run = load_golden(int8)
        else:
            from lumamba.export.verify import TOLERANCE
            from lumamba.export.onnx.ort_runner import load
            onnx_dir = project / "onnx"
            if not (onnx_dir / "manifest.json").is_file():
                raise FileNotFoundError(f"{project}: no int8/quant.json and no onnx/manifest.json; "
                                        "is it a project written by lumamba-export?")
            self.name, self.bit_exact, self.tolerance = "onnxruntime", False, TOLERANCE
            self._run = load(onnx_dir)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Logits (n, n_classes) float32 of windows (n, C, T)."""
        return np.asarray(self._run(np.asarray(windows, np.float32)), np.float32).reshape(len(windows), -1)

    def agrees(self, logits: np.ndarray, reference: np.ndarray) -> bool:
        """Bit-identical (int8) or within the tolerance (float)."""
        if self.bit_exact:
            return bool(np.array_equal(np.asarray(logits, np.float32).view(np.uint32),
                                       np.asarray(reference, np.float32).view(np.uint32)))
        return bool(np.max(np.abs(np.asarray(logits, np.float64) - reference)) <= self.tolerance)
