"""int8 kernels generated through TVM (`lumamba.export.codegen.qgraph_frontend`) against the golden model.

The reference is `lumamba.quant.ops.run_node` (numpy, int64 arithmetic), independent of the TE
definitions; the comparison is bit-exact (`np.array_equal`), no tolerance: integer outputs have
no rounding freedom.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from lumamba.export.codegen.qgraph_frontend import compile_qnode
from lumamba.export.codegen.integer_te import fold_bias
from lumamba.export.codegen.host_graph import build_graph_library
from lumamba.quant.ops import run_node
from lumamba.quant.qgraph import QNode


def _golden(op, attrs, x, params):
    return run_node(QNode(op, "n", ["x"], ["y"], attrs), [x], params)[0]


def _random_params(rng, weight_shape, shift_range=(-31, 1)):
    n = weight_shape[0]
    return dict(weight=rng.integers(-127, 128, weight_shape).astype(np.int8),
                bias=rng.integers(-40000, 40000, n).astype(np.int32),
                multiplier=rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32),
                shift=rng.integers(*shift_range, n).astype(np.int32))


def _run(tmp_path, op, attrs, params, x):
    graph = compile_qnode(op, attrs, params, x.shape, "qk")
    return build_graph_library(graph, tmp_path)(x)[0], graph


def test_qlinear_random_with_saturation(tmp_path):
    rng = np.random.default_rng(1)
    params = _random_params(rng, (24, 37), shift_range=(-14, 3))   # positive shifts too
    attrs = {"x_zero_point": -7, "y_zero_point": 11}
    x = rng.integers(-128, 128, (6, 5, 37)).astype(np.int8)
    y, graph = _run(tmp_path, "qlinear", attrs, params, x)
    ref = _golden("qlinear", attrs, x, params)
    assert y.dtype == np.int8 and y.shape == (6, 5, 24)
    # the data exercise both clamps and the interior, so the test can fail on each path
    assert (ref == 127).any() and (ref == -128).any() and ((ref > -128) & (ref < 127)).mean() > 0.2
    np.testing.assert_array_equal(y, ref)
    # weights are stored as int8 constants (a quarter of float32), not widened
    assert "const int8_t qk_c0[888]" in graph.weights_c


def test_qlinear_rounding_ties_both_signs(tmp_path):
    """acc sweeps [-600, 600) through one weight of 1; multiplier 2^30 (x 0.5) and shifts -1..-4
    make SRDHM and RoundingDivideByPOT meet exact halves of both signs."""
    n = 8
    params = dict(weight=np.ones((n, 1), np.int8), bias=np.arange(n, dtype=np.int32) * 3 - 12,
                  multiplier=np.full(n, 1 << 30, np.int32),
                  shift=np.array([0, -1, -2, -3, -4, -1, -2, 0], np.int32))
    attrs = {"x_zero_point": 0, "y_zero_point": 0}
    x = np.arange(-128, 128, dtype=np.int8).reshape(256, 1)
    y, _ = _run(tmp_path, "qlinear", attrs, params, x)
    ref = _golden("qlinear", attrs, x, params)
    np.testing.assert_array_equal(y, ref)
    # hand-computed from TFLM's definition: SRDHM rounds -1.5 toward zero (nudge 1 - 2^30),
    # RoundingDivideByPOT rounds -1.5 away from zero
    row = {v: i for i, v in enumerate(range(-128, 128))}
    assert y[row[9], 0] == -1 and y[row[15], 0] == 2      # channel 0: acc -3 / 2, 3 / 2
    assert y[row[3], 1] == -2 and y[row[15], 1] == 2      # channel 1: h = -3, 3, then / 2


def test_qconv_1d_patch_and_2d_padding(tmp_path):
    rng = np.random.default_rng(2)
    cases = [((1, 1, 4, 40), (6, 1, 1, 8), (0, 0, 0, 0), (1, 8)),      # patch conv along time
             ((1, 3, 5, 17), (4, 3, 3, 5), (1, 2, 1, 2), (2, 3))]      # padding taps, strides
    for i, (xs, ws, pads, strides) in enumerate(cases):
        params = _random_params(rng, ws, shift_range=(-12, 0))
        attrs = {"x_zero_point": 9, "y_zero_point": -4, "pads": list(pads), "strides": list(strides)}
        x = rng.integers(-128, 128, xs).astype(np.int8)
        y, _ = _run(tmp_path / str(i), "qconv", attrs, params, x)
        ref = _golden("qconv", attrs, x, params)
        assert y.shape == ref.shape
        np.testing.assert_array_equal(y, ref)


def test_zero_point_folding_and_its_int32_fallback(tmp_path):
    """The kernels fold the input zero point into the bias (one subtraction less per MAC) when
    that form provably stays inside int32, else keep it in the inner loop; both are exact."""
    rng = np.random.default_rng(4)
    w = rng.integers(-127, 128, (5, 33)).astype(np.int8)
    bias = rng.integers(-1000, 1000, 5).astype(np.int32)
    folded = fold_bias(w, bias, -77)
    np.testing.assert_array_equal(folded, bias + 77 * w.astype(np.int64).sum(axis=1))
    x = rng.integers(-128, 128, (200, 33))
    np.testing.assert_array_equal(x @ w.T.astype(np.int64) + folded, (x + 77) @ w.T.astype(np.int64) + bias)
    # positive weights, zero point -128: the folded form's bound b + 128 S + 128 S passes int32
    # where the unfolded b + 255 S does not, so that bias stays unfolded
    wp = np.abs(w).astype(np.int8)
    s_w = int(wp.astype(np.int64).sum(axis=1).max())
    big = np.full(5, (1 << 31) - 1 - 255 * s_w - s_w // 4, np.int32)
    assert fold_bias(wp, big, -128) is None and fold_bias(wp, bias, -128) is not None
    attrs = {"x_zero_point": -128, "y_zero_point": 3}
    params = dict(_random_params(rng, (5, 33), shift_range=(-31, -20)), weight=wp)
    xq = x[:8].astype(np.int8)
    for b in (bias, big):
        graph = compile_qnode("qlinear", attrs, {**params, "bias": b}, xq.shape, "qk")
        inner = "+ 128)" in graph.kernels_c           # the zero point's subtraction, in the inner loop
        assert inner == (b is big)
        y = build_graph_library(graph, tmp_path / str(inner))(xq)[0]
        np.testing.assert_array_equal(y, _golden("qlinear", attrs, xq, {**params, "bias": b}))


def test_bad_parameters_rejected():
    rng = np.random.default_rng(3)
    params = _random_params(rng, (4, 8))
    attrs = {"x_zero_point": 0, "y_zero_point": 0}
    with pytest.raises(TypeError, match="node qk: parameter 'bias' must be int32"):
        compile_qnode("qlinear", attrs, {**params, "bias": params["bias"].astype(np.int64)}, (1, 8), "qk")
    with pytest.raises(ValueError, match="parameter 'shift' must have shape \\(4,\\)"):
        compile_qnode("qlinear", attrs, {**params, "shift": params["shift"][:3]}, (1, 8), "qk")
    bad = params["multiplier"].copy()
    bad[2] = np.iinfo(np.int32).min
    with pytest.raises(ValueError, match="multiplier of channel 2"):
        compile_qnode("qlinear", attrs, {**params, "multiplier": bad}, (1, 8), "qk")
    with pytest.raises(NotImplementedError, match="integer op 'qmatmul'"):
        compile_qnode("qmatmul", attrs, params, (1, 8), "qk")


CROSS = {
    "arm-none-eabi-gcc": ["--specs=picolibc.specs", "-mcpu=cortex-m4", "-mthumb",
                          "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "riscv64-unknown-elf-gcc": ["--specs=picolibc.specs", "-march=rv32imfc", "-mabi=ilp32f"],
}


@pytest.mark.parametrize("cc", sorted(CROSS))
def test_kernels_cross_compile_warning_free(cc, tmp_path):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    rng = np.random.default_rng(4)
    attrs = {"x_zero_point": 1, "y_zero_point": 2, "pads": [0, 1, 0, 1], "strides": [1, 2]}
    graphs = [compile_qnode("qlinear", attrs, _random_params(rng, (8, 16)), (3, 16), "ql"),
              compile_qnode("qconv", attrs, _random_params(rng, (4, 2, 1, 3)), (1, 2, 1, 12), "qc")]
    for graph in graphs:
        for path in graph.write(tmp_path / graph.name):
            if path.suffix != ".c":
                continue
            cmd = [cc, *CROSS[cc], "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2",
                   "-ffp-contract=off", "-c", str(path), "-o", str(path.with_suffix(".o"))]
            result = subprocess.run(cmd, capture_output=True, text=True)
            assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
