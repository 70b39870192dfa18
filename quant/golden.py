"""The host golden model: executes the integer graph description exactly as the generated C must.

This module's arithmetic is the definition of LuMamba int8. Phase B's C is bit-exact with it
when it implements the following contract.

Schedule. The manifest (`manifest.json` of the quantised directory) is run as in
`lumamba.export.onnx.manifest`: buffers are float32 (except int8 buffers, `buffer_storage.py`: written
with quantize, read with dequantize, below), state buffers zeroed at their stage's start,
per-token stages loop t = 0..S-1 (forward) or S-1..0 (reverse).

Integer ops (int8 tensors, int32 accumulators; `requantize` is TFLite Micro's
MultiplyByQuantizedMultiplier, see `fixed_point.py`):

- quantize  x(f32) -> q(i8):  v = x * inv_scale (float32 multiply by the stored float32 inv_scale);
  r = roundf(v) (half away from zero); r = fminf(fmaxf(r, -128 - zp), 127 - zp); q = (int)r + zp.
- qlinear   xq (..., K) -> yq (..., N), weight (N, K) int8, bias/multiplier/shift (N,) int32:
  acc[n] = bias[n] + sum_k (xq[k] - x_zp) * weight[n, k]      (exact in int32, bound checked
  offline); yq[n] = clamp(requantize(acc[n], multiplier[n], shift[n]) + y_zp, -128, 127).
- qconv     xq (1, Cin, H, W) -> yq (1, Cout, Ho, Wo), weight (Cout, Cin, kh, kw), group 1:
  acc = bias[co] + sum over taps (ci, i, j) inside the input of (xq - x_zp) * weight; taps in the
  padding contribute 0; then as qlinear. Strides and pads (top, left, bottom, right) in `attrs`.
- dequantize q(i8) -> x(f32): x = (float)(q - zp) * scale.
- lut       q(i8) -> y (i8 or f32): y[..., c] = table[c or 0, q[..., c] + 128], table (C or 1, 256)
  (quant/lut.py: an element-wise chain of float ops tabulated with these very ops).

Float ops (float32, IEEE 754 round-to-nearest, no fused multiply-add: -ffp-contract=off, no
-ffast-math, subnormals kept). Element-wise ops (Add, Sub, Mul, Div, Neg, Abs, Sqrt, comparisons,
Where, IsNaN, Cast bool->float) are exact per element, with ONNX broadcasting. Transcendentals
come from `fmath.py` only: Exp = fmath.exp, Erf = fmath.erf, Atan = fmath.atan,
Sigmoid(x) = 1 / (1 + fmath.exp(-x)), Softplus(x) = max(x, 0) + log1p(exp(-|x|)) (fmath.softplus).
Reductions accumulate sequentially from 0.0f in row-major order of the reduced elements:

- ReduceSum: acc = 0; acc = acc + x[i] for the reduced elements in order. ReduceMean: that sum
  divided by the element count (one float32 division).
- MatMul, Gemm (float): acc = 0; acc = acc + a[m, k] * b[k, n] for k = 0..K-1; Gemm then adds the
  bias: y = acc + c[n].  Conv (float): taps in (ci, kh, kw) order, padding taps add 0.0f * w,
  then y = acc + bias[co].
- LayerNormalization (last axis) and InstanceNormalization (per (n, c) over the spatial axes), n
  elements: mean = sum(x) / n; d = x - mean; var = sum(d * d) / n; inv = 1.0f / sqrtf(var + eps);
  y = (d * inv) * scale + bias.
- Softmax (along `axis`): m = max; e = fmath.exp(x - m); s = sum(e); y = e / s.

Layout ops (Reshape, Transpose, Gather, Concat, Split, Slice, Unsqueeze) move data only, with
ONNX opset-18 semantics. Constants are the float32 / int64 / bool arrays of the .npz.

NaN: the exported atan2 divides im / re, which is 0/0 for an all-zero bin; fmath.atan(NaN) is
NaN and the graph replaces it through IsNaN/Where, so only "is NaN" matters, not the payload.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lumamba.export.onnx.manifest import Manifest
from lumamba.export.onnx.schedule import check_manifest_windows, run_schedule

from .fixed_point import dequantize_f32
from .ops import run_node
from .qgraph import QGraph

INDEX = "quant.json"
INDEX_FORMAT = "lumamba-int8"
INDEX_VERSION = 1


class GraphExecutor:
    """Runs one QGraph on numpy feeds."""

    def __init__(self, graph: QGraph):
        self.graph = graph
        self._params = [{role: graph.constants[key] for role, key in node.params.items()} for node in graph.nodes]

    def __call__(self, feeds: dict[str, np.ndarray], keep: bool = False) -> dict[str, np.ndarray]:
        """Graph outputs by name (every value computed, constants excluded, when `keep`)."""
        env = dict(self.graph.constants)
        for name, shape in self.graph.inputs:
            if name not in feeds:
                raise ValueError(f"graph {self.graph.name}: missing input {name!r}")
            value = np.asarray(feeds[name])
            if value.dtype != np.float32 or tuple(value.shape) != tuple(shape):
                raise ValueError(f"graph {self.graph.name}: input {name!r} must be float32 {tuple(shape)}, "
                                 f"got {value.dtype} {value.shape}")
            env[name] = value
        with np.errstate(all="ignore"):     # 0/0 in atan2 of silent bins is handled by the graph (IsNaN)
            for node, params in zip(self.graph.nodes, self._params):
                values = [env[name] if name else None for name in node.inputs]
                for name, value in zip(node.outputs, run_node(node, values, params)):
                    env[name] = value
        if keep:
            return {k: v for k, v in env.items() if k not in self.graph.constants}
        return {name: env[name] for name, _ in self.graph.outputs}

    def taps(self, env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Float32 value of every tapped layer output (dequantised when int8)."""
        out = {}
        for layer, tap in self.graph.taps.items():
            v = env[tap["tensor"]]
            out[layer] = dequantize_f32(v, np.float32(tap["scale"]), tap["zero_point"]) if "scale" in tap else v
        return out


class GoldenRunner:
    """Callable int8 LuMamba: `runner(x)` -> logits (B, n_classes), x (B, C, T) float32."""

    def __init__(self, manifest: Manifest, graphs: dict[str, QGraph], source: str = "<memory>"):
        missing = sorted({g.name for g in manifest.graphs} - set(graphs))
        if missing:
            raise ValueError(f"{source}: integer graphs missing for {missing}")
        self.manifest, self.source = manifest, source
        self.executors = {name: GraphExecutor(g) for name, g in graphs.items()}

    def __call__(self, x) -> np.ndarray:
        if self.manifest.logits_buffer is None:
            raise ValueError(f"{self.source}: encoder-only export (no logits); use latent()")
        return self.stages(x)[self.manifest.logits_buffer][:, 0]

    def latent(self, x) -> np.ndarray:
        """Encoder output (B, S, d_model)."""
        return self.stages(x)[self.manifest.latent_buffer]

    def stages(self, x) -> dict[str, np.ndarray]:
        """Every schedule buffer after the run, stacked over the batch."""
        runs = [self.run(w)[0] for w in check_manifest_windows(self.manifest, x, single=True)]
        return {name: np.stack([r[name] for r in runs]) for name in runs[0]}

    def run(self, window: np.ndarray, taps: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One window (C, T): (buffers, taps). Taps map "graph/layer" to that layer's float32 output
        at every call of its graph, stacked: (n_calls, *shape)."""
        window = check_manifest_windows(self.manifest, window, single=True)[0]
        recorded: dict[str, list[np.ndarray]] = {}

        def call(name, feeds):
            executor = self.executors[name]
            env = executor(feeds, keep=taps)
            if taps:
                for layer, value in executor.taps(env).items():
                    recorded.setdefault(f"{name}/{layer}", []).append(value)
            return env

        buffers = run_schedule(self.manifest, window, call)
        return buffers, {k: np.stack(v) for k, v in recorded.items()}


def load_golden(quant_dir: str | os.PathLike) -> GoldenRunner:
    """The golden model of a directory written by `lumamba.quant.quantize`."""
    quant_dir = Path(quant_dir)
    index_path = quant_dir / INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"no quantised model at {quant_dir} ({INDEX} missing)")
    index = json.loads(index_path.read_text())
    if index.get("format") != INDEX_FORMAT or index.get("version") != INDEX_VERSION:
        raise ValueError(f"{index_path}: not a {INDEX_FORMAT} index of version {INDEX_VERSION}")
    manifest = Manifest.load(quant_dir / index["manifest"])
    graphs = {name: QGraph.load(quant_dir / entry["qgraph"]) for name, entry in index["graphs"].items()}
    return GoldenRunner(manifest, graphs, str(quant_dir))


def float_reference(export_dir: str | os.PathLike) -> GoldenRunner:
    """The same interpreter on the float graphs (no int8 node): the float32 reference of the
    golden model's float islands, and of per-layer errors."""
    import onnx

    from .convert import build_qgraph

    export_dir = Path(export_dir)
    manifest = Manifest.load(export_dir)
    graphs = {g.name: build_qgraph(onnx.load(str(export_dir / g.file)), g, set()) for g in manifest.graphs}
    return GoldenRunner(manifest, graphs, f"{export_dir} (float)")
