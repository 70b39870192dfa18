"""Instructions per call of lumamba_fmath's functions on the emulated boards, each result checked bit
for bit against lumamba.quant.fmath (firmware/runtime/harness/fmath_harness.c).

    .venv/bin/python tools/bench_fmath.py [--boards cortex-m4f,cortex-m55,riscv32] [--before DIR]

The inputs: 2,000 points evenly spread over [-12, 12] (the range the model's exp, softplus and
sigmoid see) and the special values. A count includes the harness loop's load, store and branch
(about 4 instructions per call). `--before DIR`: also measure the lumamba_fmath.c/.h of DIR (an
older firmware/runtime) on the same inputs, without the bit-exactness check, for a before/after table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np

from lumamba.export.project.build import ToolchainError
from lumamba.export.project.fmath_harness import FUNCTIONS, build_fmath_harness, golden_hash, run_fmath_harness
from lumamba.export.project.kernel_harness import KernelRunError

EMULATED = ("cortex-m4f", "cortex-m55", "riscv32")


def bench_inputs() -> np.ndarray:
    special = np.float32([0.0, -0.0, np.nan, np.inf, -np.inf, 88.0, 88.5, -86.5, -87.0, 100.0, -100.0])
    return np.concatenate([np.linspace(-12, 12, 2000, dtype=np.float32), special])


def measure(board: str, x: np.ndarray, tmp: str, runtime_dir: str | None = None) -> dict[str, float]:
    """function -> instructions per call; KernelRunError when a result differs from the golden model
    (checked for this checkout's runtime only)."""
    elf = build_fmath_harness(board, x, f"{tmp}/{board}-{'before' if runtime_dir else 'now'}", runtime_dir)
    out = {}
    for r in run_fmath_harness(elf, board):
        if runtime_dir is None and r.fnv1a != golden_hash(r.function, x):
            raise KernelRunError(f"{board}: {r.function} differs from lumamba.quant.fmath")
        out[r.function] = r.insns / r.n
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", default=",".join(EMULATED))
    ap.add_argument("--before", help="a firmware/runtime directory holding the lumamba_fmath.c/.h to compare with")
    args = ap.parse_args(argv)
    boards = args.boards.split(",")
    for b in boards:
        if b not in EMULATED:
            raise SystemExit(f"bench_fmath: --boards: unknown board {b!r}; choose from {', '.join(EMULATED)}")
    x = bench_inputs()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            now = {b: measure(b, x, tmp) for b in boards}
            before = {b: measure(b, x, tmp, args.before) for b in boards} if args.before else None
    except (ToolchainError, KernelRunError) as exc:
        print(f"bench_fmath: {exc}", file=sys.stderr)
        return 1
    print("Instructions per call (QEMU instruction counts, harness loop included; bit-exact with "
          "lumamba.quant.fmath)" + (", before -> now" if before else "") + ".\n")
    print("| function | " + " | ".join(boards) + " |")
    print("|---|" + "--:|" * len(boards))
    for fn in FUNCTIONS:
        cells = [(f"{before[b][fn]:.1f} -> " if before else "") + f"{now[b][fn]:.1f}" for b in boards]
        print(f"| {fn} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
