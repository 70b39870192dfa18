"""Where a generated firmware project's instructions go: per kernel, summed over the test windows.

    .venv/bin/python tools/profile_kernels.py PROJECT [--board cortex-m4f] [--top 25]

Copies PROJECT (a `lumamba-export` output directory) to a scratch folder, wraps every kernel call
in the graph drivers (`lumamba_*_driver.c`) with two reads of the firmware's instruction counter
(`lumamba_counter_read`, QEMU -icount: exact instructions, not cycles), builds and runs it with
`make run BOARD=...`, and prints instructions per window per kernel and per kernel kind (the
fused TVM function's name without graph and index, e.g. `qlinear_dequantize`). The counter reads
add a few tens of instructions per call, so the per-kernel sum is slightly above the total that the
unmodified project reports. The project itself is not changed.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

_CALL = re.compile(r"^(\s+)((lumamba_\w+?)_k(\d+)_(\w+))\((.*)\);$")
_PRELUDE = """#include <stdio.h>
#include <stdlib.h>
#include "lumamba_runtime.h"
static uint64_t lmb_prof[{n}];
static const char *const lmb_names[{n}] = {{{names}}};
static void lmb_dump(void)
{{
    for (int i = 0; i < {n}; i++) {{
        printf("PROF %s %llu\\n", lmb_names[i], (unsigned long long)lmb_prof[i]);
    }}
}}
static void lmb_register(void)
{{
    static int done;
    if (!done) {{
        done = 1;
        atexit(lmb_dump);
    }}
}}
"""


def instrument(driver: str) -> str:
    """The driver's C with every kernel call timed into lmb_prof[] and dumped at exit."""
    names: list[str] = []
    out = []
    for line in driver.splitlines():
        m = _CALL.match(line)
        if m:
            indent, symbol = m.group(1), m.group(2)
            if symbol not in names:
                names.append(symbol)
            i = names.index(symbol)
            line = (f"{indent}{{ lmb_register(); uint64_t lmb_t0 = lumamba_counter_read(); "
                    f"{line.strip()} lmb_prof[{i}] += lumamba_counter_read() - lmb_t0; }}")
        out.append(line)
    if not names:
        return driver
    prelude = _PRELUDE.format(n=len(names), names=", ".join(f'"{s}"' for s in names))
    return prelude + "\n".join(out) + "\n"


def profile(project: Path, board: str) -> tuple[dict[str, int], int, int]:
    """(instructions per kernel symbol summed over windows, total instructions, windows)."""
    with tempfile.TemporaryDirectory(prefix="lumamba-profile-") as tmp:
        copy = Path(tmp) / "project"
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns("build", "int8", "onnx", "*.png"))
        for path in copy.glob("lumamba_*_driver.c"):
            path.write_text(instrument(path.read_text()))
        run = subprocess.run(["make", "-s", "-C", str(copy), "run", f"BOARD={board}"], capture_output=True,
                             text=True, timeout=3600)
        text = run.stdout + run.stderr   # QEMU's semihosting console may write to either
        if run.returncode != 0 or "DONE 0" not in text:
            raise SystemExit(f"profile_kernels: the instrumented project failed (rc {run.returncode}):\n{text[-3000:]}")
    per_kernel = {m[0]: int(m[1]) for m in re.findall(r"^PROF (\S+) (\d+)$", text, re.M)}
    insns = [int(v) for v in re.findall(r"^INSNS \d+ (\d+)$", text, re.M)]
    return per_kernel, sum(insns), len(insns)


def kind(symbol: str) -> str:
    """`lumamba_block0_fwd_k6_qlinear1_dequantize1` -> `qlinear_dequantize` (TVM's numbering dropped)."""
    m = re.match(r"lumamba_\w+?_k\d+_(\w+)$", symbol)
    return re.sub(r"\d+(?=_|$)", "", m.group(1)) if m else symbol


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("project", type=Path)
    p.add_argument("--board", default="cortex-m4f")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    per_kernel, total, windows = profile(args.project, args.board)
    if not windows:
        raise SystemExit("profile_kernels: the board printed no instruction counts (host has no counter)")
    kinds: dict[str, int] = defaultdict(int)
    for symbol, n in per_kernel.items():
        kinds[kind(symbol)] += n
    summed = sum(per_kernel.values())
    print(f"{args.board}: {total / windows:,.0f} instructions per window (mean of {windows}); "
          f"kernels {summed / windows:,.0f} incl. counter reads")
    print("\n| kernel kind | instructions/window | share |\n|---|--:|--:|")
    for name, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"| {name} | {n / windows:,.0f} | {100 * n / summed:.1f} % |")


if __name__ == "__main__":
    main()
