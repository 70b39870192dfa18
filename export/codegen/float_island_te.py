"""TE definitions of the float32 ops of an integer graph, with the golden model's arithmetic.

TVM's own legalisations are not used for these: their reduction orders, their lowering of exp /
erf to libm and their rewrites differ from `lumamba.quant.ops`. Here every reduction is one TE
`sum` (sequential from 0.0f in the order of its axes), transcendentals call the C port of
`quant/fmath.py` (`firmware/runtime/lumamba_fmath.c`), composite ops (Layer/InstanceNormalization,
Softmax, Gemm and Conv with their bias) are spelled out in the golden model's order of operations,
and layout ops (Slice, Split, Gather) are plain index maps.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx, topi

FMATH = {"Exp": "lmb_expf", "Erf": "lmb_erff", "Atan": "lmb_atanf", "Sigmoid": "lmb_sigmoidf",
         "Softplus": "lmb_softplusf"}


def fmath_call(op: str, x: te.Tensor) -> te.Tensor:
    """Element-wise `lumamba_fmath` function of a float32 tensor."""
    fn = FMATH[op]
    return te.compute(x.shape, lambda *i: tirx.call_pure_extern("float32", fn, x[i]), name=fn)


def _f32(v: float):
    return tirx.const(np.float32(v), "float32")


def _last_axis_sum(x: te.Tensor, name: str) -> te.Tensor:
    *lead, n = (int(d) for d in x.shape)
    k = te.reduce_axis((0, n), name="k")
    return te.compute(tuple(lead), lambda *i: te.sum(x[(*i, k)], axis=k), name=name)


def _normalise(x: te.Tensor, first: int, epsilon: float, scale_bias) -> te.Tensor:
    """Normalise over the axes `first..`: mean = sum/n; d = x - mean; var = sum(d*d)/n;
    inv = 1/sqrtf(var + eps); y = scale_bias(d * inv, index) (sums in row-major order)."""
    shape = tuple(int(d) for d in x.shape)
    lead, inner = shape[:first], shape[first:]
    n = _f32(int(np.prod(inner)))

    def total(t: te.Tensor, name: str) -> te.Tensor:
        ks = [te.reduce_axis((0, d), name=f"k{j}") for j, d in enumerate(inner)]
        return te.compute(lead, lambda *i: te.sum(t[(*i, *ks)], axis=ks), name=name)

    s = total(x, "norm_sum")
    d = te.compute(shape, lambda *i: x[i] - s[i[:first]] / n, name="norm_d")
    sq = te.compute(shape, lambda *i: d[i] * d[i], name="norm_sq")
    var = total(sq, "norm_var")
    inv = te.compute(lead, lambda *i: _f32(1.0) / tirx.sqrt(var[i] / n + _f32(epsilon)), name="norm_inv")
    return te.compute(shape, lambda *i: scale_bias(d[i] * inv[i[:first]], i), name="normalise")


def layer_norm(x: te.Tensor, scale: te.Tensor, bias: te.Tensor | None, epsilon: float) -> te.Tensor:
    """Last axis: y = (d * inv) * scale + bias (see `_normalise`)."""
    def affine(v, i):
        y = v * scale[i[-1]]
        return y + bias[i[-1]] if bias is not None else y

    return _normalise(x, len(x.shape) - 1, epsilon, affine)


def instance_norm(x: te.Tensor, scale: te.Tensor, bias: te.Tensor, epsilon: float) -> te.Tensor:
    """(N, C, *spatial), per (n, c) over the spatial axes: y = (d * inv) * scale[c] + bias[c]."""
    return _normalise(x, 2, epsilon, lambda v, i: v * scale[i[1]] + bias[i[1]])


def softmax(x: te.Tensor, axis: int) -> te.Tensor:
    """m = max; e = exp(x - m); y = e / sum(e), along `axis`."""
    shape = tuple(int(d) for d in x.shape)
    axis %= len(shape)
    lead = shape[:axis] + shape[axis + 1:]

    def at(i, k):           # the index of x for reduced index i (axis removed) and position k
        return (*i[:axis], k, *i[axis:])

    k = te.reduce_axis((0, shape[axis]), name="k")
    m = te.compute(lead, lambda *i: te.max(x[at(i, k)], axis=k), name="sm_max")
    drop = lambda i: (*i[:axis], *i[axis + 1:])     # noqa: E731
    e = te.compute(shape, lambda *i: tirx.call_pure_extern("float32", "lmb_expf", x[i] - m[drop(i)]),
                   name="sm_exp")
    k2 = te.reduce_axis((0, shape[axis]), name="k2")
    s = te.compute(lead, lambda *i: te.sum(e[at(i, k2)], axis=k2), name="sm_sum")
    return te.compute(shape, lambda *i: e[i] / s[drop(i)], name="softmax")


def _broadcast_index(i: tuple, shape: tuple[int, ...]) -> tuple:
    """The index into an operand of `shape` for output batch index `i` (numpy broadcasting)."""
    i = i[len(i) - len(shape):]
    return tuple(0 if d == 1 else j for j, d in zip(i, shape))


def matmul(a: te.Tensor, b: te.Tensor) -> te.Tensor:
    """a (..., M, K) @ b (..., K, N), batches broadcast: acc = 0; acc += a * b over k = 0..K-1."""
    a_batch, b_batch = tuple(int(d) for d in a.shape[:-2]), tuple(int(d) for d in b.shape[:-2])
    batch = tuple(np.broadcast_shapes(a_batch, b_batch))
    m, kd, n = int(a.shape[-2]), int(a.shape[-1]), int(b.shape[-1])
    k = te.reduce_axis((0, kd), name="k")

    def acc(*i):
        bi = i[:-2]
        return te.sum(a[(*_broadcast_index(bi, a_batch), i[-2], k)]
                      * b[(*_broadcast_index(bi, b_batch), k, i[-1])], axis=k)

    return te.compute((*batch, m, n), acc, name="matmul")


def gemm(a: te.Tensor, b: te.Tensor, c: te.Tensor | None, trans_b: bool) -> te.Tensor:
    """a (M, K) @ b (K, N) (or b (N, K) with transB): acc = 0; acc += a*b over k; y = acc + c."""
    m, kd = (int(d) for d in a.shape)
    n = int(b.shape[0] if trans_b else b.shape[1])
    k = te.reduce_axis((0, kd), name="k")
    dot = te.compute((m, n), lambda i, j: te.sum(a[i, k] * (b[j, k] if trans_b else b[k, j]), axis=k),
                     name="gemm_acc")
    if c is None:
        return dot
    c_shape = tuple(int(d) for d in c.shape)
    return te.compute((m, n), lambda i, j: dot[i, j] + c[_broadcast_index((i, j), c_shape)], name="gemm")


def conv2d(x: te.Tensor, w: te.Tensor, bias: te.Tensor | None, pads, strides) -> te.Tensor:
    """x (N, Cin, H, W), w (Cout, Cin, kh, kw), group 1: acc = 0; acc += x * w over taps in
    (ci, kh, kw) order, padding taps adding 0.0f * w; y = acc + bias[co]."""
    n, c_in, h, wd = (int(d) for d in x.shape)
    c_out, _, kh, kw = (int(d) for d in w.shape)
    pt, pl, pb, pr = (int(p) for p in pads)
    sh, sw = (int(s) for s in strides)
    ho, wo = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    xp = te.compute((n, c_in, h + pt + pb, wd + pl + pr),
                    lambda b, c, i, j: tirx.if_then_else(
                        tirx.all(i >= pt, i < pt + h, j >= pl, j < pl + wd), x[b, c, i - pt, j - pl], _f32(0.0)),
                    name="conv_pad")
    rc, ri, rj = (te.reduce_axis((0, d), name=nm) for d, nm in ((c_in, "rc"), (kh, "ri"), (kw, "rj")))
    acc = te.compute((n, c_out, ho, wo),
                     lambda b, co, i, j: te.sum(xp[b, rc, i * sh + ri, j * sw + rj] * w[co, rc, ri, rj],
                                                axis=[rc, ri, rj]), name="conv_acc")
    if bias is None:
        return acc
    return te.compute(acc.shape, lambda b, co, i, j: acc[b, co, i, j] + bias[co], name="conv")


def reduce_sum(x: te.Tensor, axes: tuple[int, ...], keepdims: bool, mean: bool) -> te.Tensor:
    """Sum over `axes` in row-major order from 0.0f (then one division by the count for a mean)."""
    shape = tuple(int(d) for d in x.shape)
    axes = tuple(sorted(a % len(shape) for a in axes))
    ks = {a: te.reduce_axis((0, shape[a]), name=f"k{a}") for a in axes}
    kept = [a for a in range(len(shape)) if a not in axes]
    out_shape = tuple(1 if a in axes else d for a, d in enumerate(shape)) if keepdims \
        else tuple(shape[a] for a in kept)

    def total(*i):
        if keepdims:
            i = [i[a] for a in kept]
        free = dict(zip(kept, i))
        return te.sum(x[tuple(ks[a] if a in ks else free[a] for a in range(len(shape)))],
                      axis=[ks[a] for a in axes])

    s = te.compute(out_shape, total, name="reduce_sum")
    if not mean:
        return s
    count = _f32(int(np.prod([shape[a] for a in axes])))
    return te.compute(out_shape, lambda *i: s[i] / count, name="reduce_mean")


def strided(x: te.Tensor, starts: list[int], steps: list[int], out_shape: tuple[int, ...]) -> te.Tensor:
    """out[i] = x[starts + steps * i] per axis (Slice, Split: data movement only)."""
    return te.compute(out_shape, lambda *i: x[tuple(s + st * j for s, st, j in zip(starts, steps, i))],
                      name="slice")


def gather(x: te.Tensor, indices: te.Tensor, axis: int) -> te.Tensor:
    """np.take(x, indices, axis) for in-range, non-negative `indices` (ONNX Gather; the caller
    normalises the constant indices)."""
    shape = tuple(int(d) for d in x.shape)
    axis %= len(shape)
    q = len(indices.shape)
    out_shape = shape[:axis] + tuple(int(d) for d in indices.shape) + shape[axis + 1:]
    return te.compute(out_shape, lambda *i: x[(*i[:axis], indices[i[axis:axis + q]].astype("int32"),
                                               *i[axis + q:])], name="gather")


def where(cond: te.Tensor, a: te.Tensor, b: te.Tensor) -> te.Tensor:
    """Element-wise select with numpy broadcasting of the three operands."""
    shapes = [tuple(int(d) for d in t.shape) for t in (cond, a, b)]
    out = tuple(np.broadcast_shapes(*shapes))
    return te.compute(out, lambda *i: tirx.Select(cond[_broadcast_index(i, shapes[0])],
                                                  a[_broadcast_index(i, shapes[1])],
                                                  b[_broadcast_index(i, shapes[2])]), name="where")


def isnan(x: te.Tensor) -> te.Tensor:
    return te.compute(x.shape, lambda *i: tirx.isnan(x[i]), name="isnan")


def cast_f32(x: te.Tensor) -> te.Tensor:
    return te.compute(x.shape, lambda *i: x[i].astype("float32"), name="cast")


BINARY = {"Add": topi.add, "Sub": topi.subtract, "Mul": topi.multiply, "Div": topi.divide}
COMPARE = {"Greater": topi.greater, "Less": topi.less, "LessOrEqual": topi.less_equal}
UNARY = {"Neg": topi.negative, "Abs": topi.abs, "Sqrt": topi.sqrt}


def lookup_table(q: te.Tensor, table: te.Tensor) -> te.Tensor:
    """The `lut` op (lumamba.quant.lut): y[..., c] = table[0 or c, q[..., c] + 128], table (1 or C, 256)."""
    per_channel = int(table.shape[0]) > 1
    return te.compute(q.shape, lambda *i: table[i[-1] if per_channel else 0, q[i].astype("int32") + 128],
                      name="lut")
