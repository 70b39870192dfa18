"""numpy implementations of the integer graph's ops, one function per op (semantics in golden.py).

Each op takes the node and its input values (None for an omitted optional input) and returns the
list of its outputs. Float ops insist on float32 inputs so that no silent float64 promotion
changes the arithmetic; reductions and float matmuls accumulate sequentially, left to right, in
float32 (never numpy's pairwise `sum` or BLAS).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import fmath
from .fixed_point import INT8_MAX, INT8_MIN, dequantize_f32, quantize_f32, requantize
from .qgraph import QNode

F32 = np.float32
OPS: dict[str, Callable] = {}


def op(name: str):
    def register(fn):
        OPS[name] = fn
        return fn
    return register


def _f32(node: QNode, *values) -> None:
    for v in values:
        if v is not None and v.dtype != np.float32:
            raise TypeError(f"node {node.name} ({node.op}): expected float32 input, got {v.dtype}")


# ---- sequential float32 reductions -------------------------------------------------------------

def seq_sum_last(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis: acc = 0.0f; acc = acc + x[i] for i = 0, 1, ... (float32)."""
    acc = np.zeros(x.shape[:-1], np.float32)
    for i in range(x.shape[-1]):
        acc = acc + x[..., i]
    return acc


def seq_sum(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Sum over `axes`, visiting their elements in row-major order (keepdims=False)."""
    axes = tuple(sorted(a % x.ndim for a in axes))
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, rest + list(axes))
    return seq_sum_last(moved.reshape(moved.shape[:len(rest)] + (-1,)))


def seq_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (..., M, K) @ b (..., K, N): acc = 0.0f; acc = acc + a[m, k] * b[k, n] for k = 0.. K-1
    (a separate multiply and add: no fused multiply-add)."""
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    acc = np.zeros(shape, np.float32)
    for k in range(a.shape[-1]):
        acc = acc + a[..., :, k:k + 1] * b[..., k:k + 1, :]
    return acc


def _normalise(d_axes_last: np.ndarray, epsilon: np.float32) -> np.ndarray:
    """Given x reshaped so the normalised elements lie on the last axis: (x - mean) * (1 / sqrt(var + eps))."""
    x = d_axes_last
    n = F32(x.shape[-1])
    mean = seq_sum_last(x) / n
    d = x - mean[..., None]
    var = seq_sum_last(d * d) / n
    inv = F32(1.0) / fmath.sqrt(var + epsilon)
    return d * inv[..., None]


# ---- integer ops -------------------------------------------------------------------------------

@op("quantize")
def _quantize(node, x, *, params=None):
    _f32(node, x)
    return [quantize_f32(x, F32(node.attrs["inv_scale"]), node.attrs["zero_point"])]


@op("dequantize")
def _dequantize(node, q, *, params=None):
    return [dequantize_f32(q, F32(node.attrs["scale"]), node.attrs["zero_point"])]


def _requantize_out(node, acc, params, channel_axis):
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    m = params["multiplier"].astype(np.int64).reshape(shape)
    s = params["shift"].astype(np.int64).reshape(shape)
    y = requantize(acc, m, s) + node.attrs["y_zero_point"]
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)


@op("qlinear")
def _qlinear(node, xq, *, params=None):
    if xq.dtype != np.int8:
        raise TypeError(f"node {node.name} (qlinear): input must be int8, got {xq.dtype}")
    x = xq.astype(np.int64) - node.attrs["x_zero_point"]
    acc = x @ params["weight"].astype(np.int64).T + params["bias"].astype(np.int64)
    return [_requantize_out(node, acc, params, -1)]


@op("qconv")
def _qconv(node, xq, *, params=None):
    if xq.dtype != np.int8:
        raise TypeError(f"node {node.name} (qconv): input must be int8, got {xq.dtype}")
    x = xq.astype(np.int64) - node.attrs["x_zero_point"]           # padding below adds (zp - zp) = 0
    acc = _conv_taps(x, params["weight"].astype(np.int64), node.attrs, np.int64)
    acc = acc + params["bias"].astype(np.int64)[None, :, None, None]
    return [_requantize_out(node, acc, params, 1)]


def _conv_taps(x: np.ndarray, w: np.ndarray, attrs: dict, dtype) -> np.ndarray:
    """2-D convolution, group 1, by accumulating the taps in (c_in, kh, kw) order; x is zero-padded."""
    (pt, pl, pb, pr), (sh, sw) = attrs["pads"], attrs["strides"]
    n, c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.zeros((n, c_in, h + pt + pb, wd + pl + pr), dtype)
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    ho, wo = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    acc = np.zeros((n, c_out, ho, wo), dtype)
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, c:c + 1, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                acc = acc + patch * w[None, :, c, i, j, None, None]
    return acc


@op("lut")
def _lut(node, q, *, params=None):
    """y[..., c] = table[c, q[..., c] + 128]; table (1 or C, 256), int8 or float32 (see lut.py)."""
    return [lookup(q, params["table"], node.name)]


def lookup(q: np.ndarray, table: np.ndarray, name: str = "lut") -> np.ndarray:
    """The `lut` op on an int8 tensor q (..., C): table[0 or c, q + 128]."""
    if q.dtype != np.int8:
        raise TypeError(f"node {name} (lut): input must be int8, got {q.dtype}")
    channels = q.shape[-1] if q.ndim else 1
    if table.ndim != 2 or table.shape[1] != 256 or table.shape[0] not in (1, channels):
        raise ValueError(f"node {name} (lut): table of shape {table.shape} does not fit an input of shape "
                         f"{q.shape} (expected (1, 256) or ({channels}, 256))")
    index = q.astype(np.int64) + 128
    return table[0][index] if table.shape[0] == 1 else table[np.arange(channels), index]


# ---- float ops: element-wise -------------------------------------------------------------------

def _binary(fn):
    def run(node, a, b, *, params=None):
        _f32(node, a, b)
        return [fn(a, b)]
    return run


for _name, _fn in {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}.items():
    op(_name)(_binary(_fn))


def _unary(fn):
    def run(node, x, *, params=None):
        _f32(node, x)
        return [fn(x)]
    return run


for _name, _fn in {"Neg": np.negative, "Abs": np.abs, "Sqrt": fmath.sqrt, "Exp": fmath.exp, "Erf": fmath.erf,
                   "Atan": fmath.atan, "Sigmoid": fmath.sigmoid, "Softplus": fmath.softplus}.items():
    op(_name)(_unary(_fn))


@op("IsNaN")
def _isnan(node, x, *, params=None):
    return [np.isnan(x)]


for _name, _fn in {"Greater": np.greater, "Less": np.less, "LessOrEqual": np.less_equal}.items():
    op(_name)(_binary(_fn))


@op("Where")
def _where(node, cond, a, b, *, params=None):
    return [np.where(cond, a, b)]


@op("Cast")
def _cast(node, x, *, params=None):
    if node.attrs.get("to") != 1:
        raise ValueError(f"node {node.name} (Cast): only casts to float (to=1) are supported, got {node.attrs.get('to')}")
    return [x.astype(np.float32)]


# ---- float ops: reductions, normalisations, matmuls -------------------------------------------------

@op("ReduceSum")
def _reduce_sum(node, x, axes=None, *, params=None):
    _f32(node, x)
    axes = tuple(range(x.ndim)) if axes is None or axes.size == 0 else tuple(int(a) for a in axes)
    y = seq_sum(x, axes)
    if node.attrs.get("keepdims", 1):
        y = np.expand_dims(y, tuple(sorted(a % x.ndim for a in axes)))
    return [y]


@op("ReduceMean")
def _reduce_mean(node, x, axes=None, *, params=None):
    """ReduceSum, then one float32 division by the number of reduced elements."""
    y = _reduce_sum(node, x, axes)[0]
    return [y / F32(x.size // y.size)]


@op("LayerNormalization")
def _layer_norm(node, x, scale, bias=None, *, params=None):
    _f32(node, x, scale, bias)
    if node.attrs.get("axis", -1) % x.ndim != x.ndim - 1:
        raise ValueError(f"node {node.name}: LayerNormalization over the last axis only")
    y = _normalise(x, F32(node.attrs["epsilon"])) * scale
    return [y + bias if bias is not None else y]


@op("InstanceNormalization")
def _instance_norm(node, x, scale, bias, *, params=None):
    _f32(node, x, scale, bias)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    y = _normalise(flat, F32(node.attrs["epsilon"])).reshape(x.shape)
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    return [y * scale.reshape(per_channel) + bias.reshape(per_channel)]


@op("Softmax")
def _softmax(node, x, *, params=None):
    _f32(node, x)
    axis = node.attrs.get("axis", -1) % x.ndim
    moved = np.moveaxis(x, axis, -1)
    e = fmath.exp(moved - moved.max(axis=-1, keepdims=True))
    return [np.moveaxis(e / seq_sum_last(e)[..., None], -1, axis)]


@op("MatMul")
def _matmul(node, a, b, *, params=None):
    _f32(node, a, b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"node {node.name}: MatMul needs operands of rank >= 2")
    return [seq_matmul(a, b)]


@op("Gemm")
def _gemm(node, a, b, c=None, *, params=None):
    _f32(node, a, b, c)
    if node.attrs.get("transB", 0):
        b = b.T
    y = seq_matmul(a, b)
    return [y + c if c is not None else y]


@op("Conv")
def _conv(node, x, w, b=None, *, params=None):
    _f32(node, x, w, b)
    y = _conv_taps(x, w, node.attrs, np.float32)
    return [y + b[None, :, None, None] if b is not None else y]


# ---- layout ops (exact) ----------------------------------------------------------------------

@op("Reshape")
def _reshape(node, x, shape, *, params=None):
    shape = [int(s) for s in shape]
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


@op("Transpose")
def _transpose(node, x, *, params=None):
    return [np.ascontiguousarray(np.transpose(x, node.attrs.get("perm")))]


@op("Gather")
def _gather(node, x, indices, *, params=None):
    return [np.take(x, indices.astype(np.int64), axis=node.attrs.get("axis", 0))]


@op("Concat")
def _concat(node, *xs, params=None):
    return [np.concatenate(xs, axis=node.attrs["axis"])]


@op("Split")
def _split(node, x, split=None, *, params=None):
    axis = node.attrs.get("axis", 0) % x.ndim
    if split is None:
        n = node.attrs.get("num_outputs", len(node.outputs))
        size = -(-x.shape[axis] // n)
        split = [size] * (n - 1) + [x.shape[axis] - size * (n - 1)]
    edges = np.cumsum([int(s) for s in split])[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, edges, axis=axis)]


@op("Slice")
def _slice(node, x, starts, ends, axes=None, steps=None, *, params=None):
    axes = range(len(starts)) if axes is None else [int(a) % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = slice(*slice(int(s), int(e), st).indices(x.shape[a]))
    return [np.ascontiguousarray(x[tuple(index)])]


@op("Unsqueeze")
def _unsqueeze(node, x, axes, *, params=None):
    ndim = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(sorted(int(a) % ndim for a in axes)))]


def run_node(node: QNode, values: list, params: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Execute one node; `values` are its inputs in order (None for an omitted optional input)."""
    fn = OPS.get(node.op)
    if fn is None:
        raise NotImplementedError(f"node {node.name}: op {node.op!r} has no golden-model implementation; "
                                  f"supported: {', '.join(sorted(OPS))}")
    return fn(node, *values, params=params)
