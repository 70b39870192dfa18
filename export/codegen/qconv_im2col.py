"""An int8 `qconv` (group 1) as im2col + the int8 GEMM micro-kernel, bit-exact with the golden model.

The golden qconv (lumamba.quant.ops._qconv) pads with zeros after subtracting the input zero
point, i.e. it pads the int8 input with the zero point. Here the taps of each output position are
gathered into a row of a column tile (`im2col`: padded taps hold the input zero point), and that
tile is the activation operand of `micro_kernel_tir.qlinear_te`, whose folded bias
(integer_te.fold_bias) cancels the zero point for real and padded taps alike:
sum_k (x_k - zp) w_k + b == sum_k x_k w_k + (b - zp sum_k w_k). The weights (Cout, Cin, kh, kw)
are the GEMM's (N, K) rows with K ordered (c, ri, rj), so im2col writes taps in that order.

The GEMM's output is position-major, (1, Ho, Wo, Cout); a last stage transposes it to the conv's
(1, Cout, Ho, Wo). `micro_kernel_tir` tiles the output positions along Wo, computes the column
tile under the tile loop (so the im2col scratch is one tile, T x K bytes, a buffer of the
kernel that the memory plan places in the arena) and moves the transposition under it too.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import te, tirx

from .micro_kernel_tir import IM2COL_ATTR, qlinear_te
from .schedule import NO_INLINE_ATTR


def conv_output_size(h: int, w: int, kh: int, kw: int, pads: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """(Ho, Wo) of a convolution with pads (top, left, bottom, right) and strides (sh, sw)."""
    pt, pl, pb, pr = (int(p) for p in pads)
    sh, sw = (int(s) for s in strides)
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def im2col(xq: te.Tensor, kernel: Sequence[int], x_zero_point: int, pads: Sequence[int],
           strides: Sequence[int]) -> te.Tensor:
    """xq (1, Cin, H, W) int8 -> (1, Ho, Wo, Cin * kh * kw) int8: row (i, j) holds the taps of
    output position (i, j) in (c, ri, rj) order, a tap in the padding the input zero point."""
    n, c_in, h, w = (int(d) for d in xq.shape)
    kh, kw = (int(d) for d in kernel)
    pt, pl = int(pads[0]), int(pads[1])
    sh, sw = (int(s) for s in strides)
    ho, wo = conv_output_size(h, w, kh, kw, pads, strides)

    def tap(b, i, j, kk):
        c, ri, rj = kk // (kh * kw), kk // kw % kh, kk % kw
        y, x = i * sh + ri - pt, j * sw + rj - pl
        return tirx.if_then_else(tirx.all(y >= 0, y < h, x >= 0, x < w), xq[b, c, y, x],
                                 tirx.const(x_zero_point, "int8"))

    return te.compute((n, ho, wo, c_in * kh * kw), tap, name="qconv_im2col",
                      attrs={IM2COL_ATTR: [c_in, kh, kw], NO_INLINE_ATTR: 1})


def qconv_te(xq: te.Tensor, weight: te.Tensor, qparams: te.Tensor, kernel: Sequence[int], x_zero_point: int,
             y_zero_point: int, pads: Sequence[int], strides: Sequence[int], form: str) -> te.Tensor:
    """The int8 qconv (1, Cin, H, W) -> (1, Cout, Ho, Wo) through micro-kernel `form`: `weight`
    (Cout, Cin * kh * kw) in the form's layout (kernel_layout.relayout of the reshaped weights),
    `qparams` (3, Cout) the folded bias, multiplier and shift (as micro_kernel_tir.qlinear_te)."""
    if int(xq.shape[0]) != 1:
        raise ValueError(f"qconv through a micro-kernel needs a batch of 1, got input shape {list(xq.shape)}")
    cols = im2col(xq, kernel, x_zero_point, pads, strides)
    y = qlinear_te(cols, weight, qparams, x_zero_point, y_zero_point, form)
    n, ho, wo, c_out = (int(d) for d in y.shape)
    return te.compute((n, c_out, ho, wo), lambda b, co, i, j: y[b, i, j, co], name="qconv_nchw")


def conv_gemm_weight(weight: np.ndarray) -> np.ndarray:
    """Conv weights (Cout, Cin, kh, kw) as the GEMM's (Cout, Cin * kh * kw) rows, K in (c, ri, rj) order."""
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"qconv weights must be (Cout, Cin, kh, kw), got shape {weight.shape}")
    return np.ascontiguousarray(weight.reshape(weight.shape[0], -1))
