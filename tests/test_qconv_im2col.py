"""int8 `qconv` through the board's GEMM micro-kernel (export/codegen/qconv_im2col.py): im2col per
token tile + the micro-kernel, bit-exact with the golden model's qconv (lumamba.quant.ops, int64
NumPy, an independent path) for edge shapes - odd widths, padding on every side, strides, kernels
taller than one row, one input channel, zero points at the int8 limits - on the host (every form;
the Arm forms as their portable fallbacks) and on the three QEMU boards (each board's own form).
No tolerance: integer outputs have no rounding freedom."""
import functools
import re
from types import SimpleNamespace

import numpy as np
import pytest

from lumamba.export.codegen.host_graph import build_graph_library
from lumamba.export.codegen.kernel_layout import KERNEL_FUNCTIONS, smlad_scratch_words
from lumamba.export.codegen.qgraph_frontend import compile_qnode
from lumamba.export.project.boards import load_board
from lumamba.export.project.graph_harness import run_graphs_on_board
from lumamba.export.project.kernel_harness import KERNELS_DIR, fnv1a
from lumamba.quant.ops import OPS

from toolchain import require_toolchain

# (input shape, weight shape, pads (top, left, bottom, right), strides, x_zp, y_zp)
CASES = [
    ((1, 1, 3, 40), (16, 1, 1, 19), (0, 9, 0, 9), (1, 10), -128, 127),   # the front end's first conv
    ((1, 16, 2, 4), (16, 16, 1, 3), (0, 1, 0, 1), (1, 1), 127, -128),     # its second and third
    ((1, 3, 5, 17), (5, 3, 3, 5), (1, 2, 1, 2), (2, 3), -128, -128),      # 2-D taps, odd width, strides
    ((1, 2, 1, 23), (7, 2, 1, 4), (0, 3, 0, 0), (1, 1), 127, 127),        # Wo = 23 (prime): one call of 23
    ((1, 5, 2, 9), (3, 5, 2, 2), (1, 0, 0, 1), (1, 2), 0, 5),             # asymmetric padding
]


def _params(rng, weight_shape):
    n = weight_shape[0]
    return dict(weight=rng.integers(-127, 128, weight_shape).astype(np.int8),
                bias=rng.integers(-3000, 3000, n).astype(np.int32),
                multiplier=rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32),
                shift=rng.integers(-17, -8, n).astype(np.int32))


def _case(i):
    """(attrs, params, x, golden output) of CASES[i], seeded by i."""
    xs, ws, pads, strides, x_zp, y_zp = CASES[i]
    rng = np.random.default_rng(100 + i)
    params = _params(rng, ws)
    attrs = {"x_zero_point": x_zp, "y_zero_point": y_zp, "pads": list(pads), "strides": list(strides)}
    x = rng.integers(-128, 128, xs).astype(np.int8)
    x.flat[::7] = x_zp                                           # taps equal to the zero point too
    want = OPS["qconv"](SimpleNamespace(name="q", attrs=attrs), x, params=params)[0]
    return attrs, params, x, want


@functools.lru_cache(maxsize=None)
def _compiled(i: int, form: str):
    """CASES[i] compiled for `form` (shared by the host and board tests: TVM's compile dominates)."""
    attrs, params, x, _ = _case(i)
    return compile_qnode("qconv", attrs, params, x.shape, f"qc{i}", gemm_form=form)


def _host(graph, tmp_path):
    sources = [str(p) for p in sorted(KERNELS_DIR.glob("*.c"))]
    return build_graph_library(graph, tmp_path, extra_flags=["-I", str(KERNELS_DIR), *sources])


def test_cases_exercise_both_clamps_and_the_interior():
    wants = np.concatenate([_case(i)[3].ravel() for i in range(len(CASES))])
    assert (wants == 127).any() and (wants == -128).any() and ((wants > -128) & (wants < 127)).mean() > 0.3


# every case with the host's own form; the Arm forms' weight layouts on two cases (their kernels
# are the portable fallbacks here; the boards below run them for real)
HOST_RUNS = [(i, "c_4x4") for i in range(len(CASES))] + [(i, f) for i in (0, 2) for f in ("smlad_2x2", "mve_4x2")]


@pytest.mark.parametrize("i,form", HOST_RUNS)
def test_qconv_calls_the_micro_kernel_bit_exact_on_host(tmp_path, form, i):
    attrs, params, x, want = _case(i)
    graph = _compiled(i, form)
    # one call site, the requantisation in the kernel's epilogue (no int64 arithmetic left)
    assert graph.kernels_c.count(KERNEL_FUNCTIONS[form] + "(") == 1 and "2147483648" not in graph.kernels_c
    # the im2col scratch is one tile of columns in the arena (+ the int8 output tile, the SMLAD
    # form's widened activations), never the whole M x K column matrix
    _, c_in, _, _ = x.shape
    c_out, _, kh, kw = params["weight"].shape
    k, wo = c_in * kh * kw, want.shape[-1]
    tile = max(d for d in range(1, min(wo, 16) + 1) if wo % d == 0)
    tile = wo if tile == 1 else tile
    smlad = 4 * smlad_scratch_words(k) if form == "smlad_2x2" else 0
    assert graph.arena_bytes <= 16 * (-(-tile * k // 16) + -(-tile * c_out // 16)) + smlad + 16
    np.testing.assert_array_equal(_host(graph, tmp_path)(x)[0], want)


def test_scalar_qconv_unchanged_without_a_form(tmp_path):
    """Without a form (and when the folded bias would leave int32) the qconv stays TVM's loop nest."""
    attrs, params, x, want = _case(2)
    scalar = compile_qnode("qconv", attrs, params, x.shape, "qs")
    assert "lumamba_s8_gemm" not in scalar.kernels_c and "2147483648" in scalar.kernels_c
    big = dict(params, bias=np.full(params["bias"].shape, (1 << 31) - 1, np.int32))
    unfolded = compile_qnode("qconv", attrs, big, x.shape, "qu", gemm_form="c_4x4")
    assert "lumamba_s8_gemm" not in unfolded.kernels_c
    np.testing.assert_array_equal(_host(scalar, tmp_path / "s")(x)[0], want)


def test_taps_are_indexed_without_division():
    """The tap loop is split into (Cin, kh, kw) loops, so the gather has no / or % per byte."""
    assert not re.search(r" [/%] ", _compiled(2, "c_4x4").kernels_c)


@pytest.mark.parametrize("board", ["cortex-m4f", "cortex-m55", "riscv32"])
def test_qconv_bit_exact_on_board(tmp_path, board):
    require_toolchain(board)
    form = load_board(board).int8_gemm
    cases, wants = [], {}
    for i in range(len(CASES)):
        _, _, x, want = _case(i)
        graph = _compiled(i, form)
        assert KERNEL_FUNCTIONS[form] in graph.kernels_c
        cases.append((graph, x))
        wants[graph.name] = want
    results = run_graphs_on_board(board, cases, tmp_path)
    assert sorted(results) == sorted(wants)
    for name, want in wants.items():
        np.testing.assert_array_equal(results[name].y.reshape(want.shape), want, err_msg=f"{board} {name}")
        assert results[name].fnv1a == fnv1a(want) and results[name].insns > 0


def test_graph_harness_rejects_a_float_input(tmp_path):
    x = _case(1)[2]
    with pytest.raises(ValueError, match="graph qc1: needs an int8 or float32 input \\(int8\\[1, 16, 2, 4\\]\\)"):
        run_graphs_on_board("host", [(_compiled(1, "c_4x4"), x.astype(np.float32))], tmp_path)
