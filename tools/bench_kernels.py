"""Micro-benchmark of the int8 GEMM micro-kernels (firmware/kernels/): instructions per MAC on
each emulated board, requantisation included.

    .venv/bin/python tools/bench_kernels.py [--boards cortex-m4f,cortex-m55,riscv32]
                                            [--n 256] [--k 384] [--m 32,1]

For each M (tokens; M = 1 is the matrix-vector product of a per-token step) one call
Y[M, N] = requant(W[N, K] . X[M, K]^T + bias) per kernel form is timed with the firmware's
instruction counter (QEMU -icount: exact instructions, not cycles) and checked bit for bit
against the NumPy reference (lumamba.export.codegen.kernel_layout.gemm_reference). Printed as a markdown table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np

from lumamba.export.project.build import ToolchainError
from lumamba.export.project.kernel_harness import BOARD_FORMS, GemmCase, KernelRunError, build_board_harness, fnv1a, run_board_harness
from lumamba.export.codegen.kernel_layout import KERNEL_FUNCTIONS, gemm_reference

EMULATED = ("cortex-m4f", "cortex-m55", "riscv32")
FORM_NAMES = {"c_4x4": "portable C, 4x4 tile", "smlad_2x2": "SMLAD 2x2 tile (ACLE C + asm inner loop)",
              "mve_4x2": "Helium (MVE) 4x2 tile, vmladavaq"}


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"bench_kernels: {option} {text!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise SystemExit(f"bench_kernels: {option} {text!r}: sizes must be >= 1")
    return values


def make_case(m: int, n: int, k: int, seed: int = 0) -> GemmCase:
    """Random int8 operands and realistic requantisation parameters (multiplier in [2^30, 2^31))."""
    rng = np.random.default_rng(seed)
    return GemmCase(rng.integers(-128, 128, (m, k), dtype=np.int8), rng.integers(-127, 128, (n, k), dtype=np.int8),
                    rng.integers(-5000, 5000, n).astype(np.int32),
                    rng.integers(1 << 30, (1 << 31) - 1, n, dtype=np.int64).astype(np.int32),
                    rng.integers(-20, -14, n).astype(np.int32), 3)


def measure(boards: list[str], cases: list[GemmCase]) -> dict[tuple[str, str, int], float]:
    """(board, form, case index) -> instructions per MAC; raises KernelRunError on a wrong result."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for board in boards:
            results = run_board_harness(build_board_harness(board, cases, f"{tmp}/{board}"), board)
            for r in results:
                c = cases[r.case]
                want = gemm_reference(c.x, c.w, c.bias, c.multiplier, c.shift, c.y_zero_point)
                if r.fnv1a != fnv1a(want):
                    raise KernelRunError(f"{board} {r.form}: case {c.shape} differs from the NumPy reference")
                m, n, k = c.shape
                out[(board, r.form, r.case)] = r.insns / (m * n * k)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", default=",".join(EMULATED))
    ap.add_argument("--n", default="256", help="output channels (weight rows)")
    ap.add_argument("--k", default="384", help="input features (weight columns)")
    ap.add_argument("--m", default="32,1", help="tokens per call, comma-separated")
    args = ap.parse_args(argv)
    boards = args.boards.split(",")
    for b in boards:
        if b not in EMULATED:
            raise SystemExit(f"bench_kernels: --boards: unknown board {b!r}; choose from {', '.join(EMULATED)}")
    (n,), (k,) = _ints(args.n, "--n")[:1], _ints(args.k, "--k")[:1]
    ms = _ints(args.m, "--m")
    cases = [make_case(m, n, k) for m in ms]
    try:
        ipm = measure(boards, cases)
    except (ToolchainError, KernelRunError) as exc:
        print(f"bench_kernels: {exc}", file=sys.stderr)
        return 1
    print(f"Instructions per MAC, {n}x{k} int8 weights x M int8 vectors, requantisation to int8 included "
          "(QEMU -icount instruction counts, bit-exact with the NumPy reference).\n")
    print("| kernel form | M | " + " | ".join(boards) + " |")
    print("|---|--:|" + "--:|" * len(boards))
    for form in KERNEL_FUNCTIONS:
        for i, m in enumerate(ms):
            cells = [f"{ipm[(b, form, i)]:.3f}" if form in BOARD_FORMS[b] else "-" for b in boards]
            print(f"| {FORM_NAMES[form]} | {m} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
