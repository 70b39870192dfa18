"""TE definitions of the float32 ops of an integer graph, with the golden model's arithmetic.

TVM's own legalisations are not used for these: their reduction orders, their lowering of exp /
erf to libm and their rewrites differ from `lumamba.quant.ops`. Here every reduction is one TE
`sum` (sequential from 0.0f in the order of its axes), transcendentals call the C port of
`quant/fmath.py` (`firmware/runtime/lumamba_fmath.c`), and composite ops (LayerNormalization,
Softmax) are spelled out in the golden model's order of operations.
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


def layer_norm(x: te.Tensor, scale: te.Tensor, bias: te.Tensor | None, epsilon: float) -> te.Tensor:
    """Last axis: mean = sum/n; d = x - mean; var = sum(d*d)/n; inv = 1/sqrtf(var + eps);
    y = (d * inv) * scale + bias."""
    n = _f32(int(x.shape[-1]))
    total = _last_axis_sum(x, "ln_sum")
    d = te.compute(x.shape, lambda *i: x[i] - total[i[:-1]] / n, name="ln_d")
    sq = te.compute(x.shape, lambda *i: d[i] * d[i], name="ln_sq")
    var = _last_axis_sum(sq, "ln_var")
    inv = te.compute(var.shape, lambda *i: _f32(1.0) / tirx.sqrt(var[i] / n + _f32(epsilon)), name="ln_inv")

    def out(*i):
        y = (d[i] * inv[i[:-1]]) * scale[i[-1]]
        return y + bias[i[-1]] if bias is not None else y

    return te.compute(x.shape, out, name="layer_norm")


def softmax_last(x: te.Tensor) -> te.Tensor:
    """m = max; e = exp(x - m); y = e / sum(e), along the last axis."""
    *lead, n = (int(d) for d in x.shape)
    k = te.reduce_axis((0, n), name="k")
    m = te.compute(tuple(lead), lambda *i: te.max(x[(*i, k)], axis=k), name="sm_max")
    e = te.compute(x.shape, lambda *i: tirx.call_pure_extern("float32", "lmb_expf", x[i] - m[i[:-1]]),
                   name="sm_exp")
    s = _last_axis_sum(e, "sm_sum")
    return te.compute(x.shape, lambda *i: e[i] / s[i[:-1]], name="softmax")


def matmul(a: te.Tensor, b: te.Tensor) -> te.Tensor:
    """a (..., M, K) @ b (K, N) or (..., K, N) of the same batch: acc = 0; acc += a * b over k."""
    *batch, m, kd = (int(d) for d in a.shape)
    n = int(b.shape[-1])
    k = te.reduce_axis((0, kd), name="k")
    if len(b.shape) == 2:
        return te.compute((*batch, m, n), lambda *i: te.sum(a[(*i[:-1], k)] * b[k, i[-1]], axis=k),
                          name="matmul")
    if [int(d) for d in b.shape[:-2]] != batch:
        raise NotImplementedError(f"MatMul with broadcast batch {list(a.shape)} @ {list(b.shape)}")
    return te.compute((*batch, m, n),
                      lambda *i: te.sum(a[(*i[:-1], k)] * b[(*i[:-2], k, i[-1])], axis=k), name="matmul")


BINARY = {"Add": topi.add, "Sub": topi.subtract, "Mul": topi.multiply, "Div": topi.divide}
UNARY = {"Neg": topi.negative, "Abs": topi.abs, "Sqrt": topi.sqrt}
