"""The int8 micro-kernels of firmware/kernels/ against the golden model's qlinear (NumPy +
lumamba.quant.fixed_point), on the host (ctypes) and on the QEMU boards, edge shapes included:
K not a multiple of any tile, odd M and N, matrix-vector (M = 1), zero points at the int8 limits,
positive shifts (saturating left shift), shift -31 and multiplier 0."""
from types import SimpleNamespace

import numpy as np
import pytest

from lumamba.export.project.kernel_harness import (BOARD_FORMS, GemmCase, KernelRunError, build_board_harness,
                                   build_host_library, call_host, fnv1a, run_board_harness)
from lumamba.export.codegen.kernel_layout import (fold_bias_zero_point, gemm_reference, relayout, relayout_c4,
                                    relayout_smlad)
from lumamba.quant.ops import OPS

from toolchain import require_toolchain

# (M, N, K): 1x1x1, matrix-vector, every K % 16 / % 8 / % 4 remainder, odd M and N
SHAPES = [(1, 1, 1), (1, 7, 5), (1, 6, 40), (2, 3, 33), (3, 5, 7), (4, 8, 32), (5, 7, 19), (6, 9, 48),
          (7, 4, 3), (8, 12, 17), (2, 2, 8), (4, 5, 64), (9, 11, 71)]


def _case(rng: np.random.Generator, m: int, n: int, k: int, x_zp: int, y_zp: int, shifts=(-12, -5)) -> GemmCase:
    """A random case with the zero point folded into the bias, as the code generator does."""
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    b = rng.integers(-20000, 20000, n).astype(np.int32)
    mult = rng.integers(1 << 30, (1 << 31) - 1, n, dtype=np.int64).astype(np.int32)
    shift = rng.integers(shifts[0], shifts[1], n).astype(np.int32)
    return GemmCase(x, w, fold_bias_zero_point(w, b, x_zp), mult, shift, y_zp), b, x_zp


def _golden(x, w, b, mult, shift, x_zp, y_zp) -> np.ndarray:
    """The golden model's qlinear op (lumamba.quant.ops), an independent path from gemm_reference."""
    node = SimpleNamespace(name="t", attrs={"x_zero_point": x_zp, "y_zero_point": y_zp})
    params = {"weight": w, "bias": b, "multiplier": mult, "shift": shift}
    return OPS["qlinear"](node, x, params=params)[0]


def _cases() -> list[GemmCase]:
    rng = np.random.default_rng(11)
    zps = [(-128, 127), (127, -128), (0, 0), (-128, -128), (3, -7)]
    cases = [_case(rng, *s, *zps[i % len(zps)])[0] for i, s in enumerate(SHAPES)]
    # saturating left shift (shift > 0, large bias), the largest right shift, a zero multiplier
    c = _case(rng, 3, 6, 21, -128, 127)[0]
    bias = np.array([1 << 29, -(1 << 29), 5, -5, 1 << 24, 0], np.int32)
    mult = c.multiplier.copy()
    mult[5] = 0
    cases.append(GemmCase(c.x, c.w, bias, mult, np.array([30, 7, 1, -31, 3, 2], np.int32), 0))
    return cases


CASES = _cases()
EXPECTED = [gemm_reference(c.x, c.w, c.bias, c.multiplier, c.shift, c.y_zero_point) for c in CASES]


def test_reference_is_the_golden_qlinear():
    """gemm_reference with a folded bias == the golden model's qlinear with the zero point inside."""
    rng = np.random.default_rng(3)
    for m, n, k in SHAPES:
        for x_zp, y_zp in ((-128, 127), (127, -128)):
            case, b, _ = _case(rng, m, n, k, x_zp, y_zp, shifts=(-14, 3))
            got = gemm_reference(case.x, case.w, case.bias, case.multiplier, case.shift, y_zp)
            np.testing.assert_array_equal(got, _golden(case.x, case.w, b, case.multiplier, case.shift, x_zp, y_zp))


def test_cases_exercise_clamping():
    """The expected outputs reach both int8 limits and values in between (so a missing clamp or
    a wrong rounding shows)."""
    y = np.concatenate([e.reshape(-1) for e in EXPECTED])
    assert (y == -128).any() and (y == 127).any() and ((y > -128) & (y < 127)).sum() > len(y) // 4


def test_layouts():
    w = np.arange(2 * 10, dtype=np.int8).reshape(2, 10)
    np.testing.assert_array_equal(relayout_smlad(w)[0], [0, 2, 1, 3, 4, 6, 5, 7, 8, 9])
    w = np.arange(5 * 3, dtype=np.int8).reshape(5, 3)
    # channels 0-3 interleaved (k-major), channel 4 natural
    np.testing.assert_array_equal(relayout_c4(w).reshape(-1), [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11, 12, 13, 14])
    with pytest.raises(ValueError, match="unknown kernel form 'neon'"):
        relayout("neon", w)
    with pytest.raises(ValueError, match="int8"):
        relayout_smlad(w.astype(np.int16))


def test_host_library(tmp_path):
    lib = build_host_library(tmp_path)
    for i, (case, want) in enumerate(zip(CASES, EXPECTED)):
        np.testing.assert_array_equal(call_host(lib, case), want, err_msg=f"case {i} {case.shape}")


def _check_board(board: str, tmp_path) -> list:
    require_toolchain(board)
    elf = build_board_harness(board, CASES, tmp_path)
    results = run_board_harness(elf, board)
    assert sorted((r.form, r.case) for r in results) == sorted(
        (f, i) for f in BOARD_FORMS[board] for i in range(len(CASES)))
    for r in results:
        want = EXPECTED[r.case]
        assert r.y is not None
        np.testing.assert_array_equal(r.y.reshape(want.shape), want,
                                      err_msg=f"{board} {r.form} case {r.case} {CASES[r.case].shape}")
        assert r.fnv1a == fnv1a(want)
    return results


def test_host_harness(tmp_path):
    _check_board("host", tmp_path)


def test_cortex_m4f(tmp_path):
    results = _check_board("cortex-m4f", tmp_path)
    assert all(r.insns > 0 for r in results)


def test_cortex_m55(tmp_path):
    _check_board("cortex-m55", tmp_path)


def test_riscv32(tmp_path):
    _check_board("riscv32", tmp_path)


def test_board_rejects_unsupported_form(tmp_path):
    with pytest.raises(ValueError, match="board 'riscv32' cannot run kernel form\\(s\\) smlad_2x2"):
        build_board_harness("riscv32", CASES[:1], tmp_path, forms=("smlad_2x2",))


def test_crash_is_reported(tmp_path):
    """A harness that does not finish with DONE 0 (here: a host binary that exits early) is an
    error naming the command, not an empty result."""
    exe = tmp_path / "fake"
    exe.write_text("#!/bin/sh\necho 'Y c_4x4 0 0 00000000 00'\nexit 3\n")
    exe.chmod(0o755)
    with pytest.raises(KernelRunError, match="no DONE line or exit status 3"):
        run_board_harness(exe, "host")
