"""Run generated int8 graphs (`CGraph`s with one int8 or float32 input and one int8 output, e.g. a
single `qconv` from qgraph_frontend.compile_qnode) on a board: a test application with the inputs
compiled in, built with the board's compiler and flags and the firmware kernels, run under QEMU
(or natively for host). It prints the kernel harness's protocol (kernel_harness.run_board_harness
parses it): one `Y <graph> <case> <insns> <fnv1a> <hex>` line per graph, then `DONE 0`.

Used by tests that check generated kernels bit for bit on every board (tests/test_qconv_im2col.py,
tests/test_quantize_rounding.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lumamba.firmware import ROOT as FIRMWARE_ROOT

from ..codegen.cgraph import CGraph
from .boards import Board, load_board
from .build import check_toolchain
from .kernel_harness import CFLAGS, KERNELS_DIR, KernelResult, _c_array, _run, run_board_harness

_MAIN = """\
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "lumamba_runtime.h"
{includes}

{arrays}
static uint32_t fnv1a(const int8_t *p, int32_t n)
{{
    uint32_t h = 2166136261u;
    for (int32_t i = 0; i < n; i++) {{
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    }}
    return h;
}}

static void report(const char *name, const int8_t *y, int32_t n, uint64_t insns)
{{
    printf("Y %s 0 %llu %08lx ", name, (unsigned long long)insns, (unsigned long)fnv1a(y, n));
    for (int32_t i = 0; i < n; i++) {{
        printf("%02x", (unsigned)(uint8_t)y[i]);
    }}
    printf("\\n");
}}

int main(void)
{{
    uint64_t insns;
{calls}    printf("DONE 0\\n");
    return 0;
}}
"""

_CALL = """\
    lumamba_counter_start();
    if ({name}_run({name}_x, {name}_y, {name}_arena) != 0) {{
        printf("DONE 1\\n");
        return 1;
    }}
    insns = lumamba_counter_read();
    report("{name}", {name}_y, {size}, insns);
"""


_C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.float32): "float"}


def _float_literal(v: float) -> str:
    """An exact C literal of a float32 value (hex float; INFINITY/NAN from math.h)."""
    if np.isnan(v):
        return "NAN"
    if np.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return float(v).hex() + "f"


def _input_array(name: str, x: np.ndarray) -> str:
    if x.dtype == np.int8:
        return _c_array("int8_t", name, x)
    body = ",".join(_float_literal(v) for v in x.reshape(-1).tolist())
    return f"static const float {name}[{x.size}] = {{{body}}};\n"


def build_graph_harness(board: Board | str, cases: Sequence[tuple[CGraph, np.ndarray]], out_dir: str | Path) -> Path:
    """The test application (ELF, or a host executable) running each graph of `cases` once on its
    input; graph names must be distinct C identifiers. Returns its path."""
    board = board if isinstance(board, Board) else load_board(board)
    check_toolchain(board, need_emulator=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources, includes, arrays, calls = [], [], [], []
    for graph, x in cases:
        (spec_in,), (spec_out,) = graph.inputs, graph.outputs
        x = np.asarray(x)
        if (x.dtype != np.dtype(spec_in.dtype) or x.dtype not in _C_TYPES or x.shape != tuple(spec_in.shape)
                or spec_out.dtype != "int8"):
            raise ValueError(f"graph {graph.name}: needs an int8 or float32 input ({spec_in.dtype}"
                             f"{list(spec_in.shape)}) and an int8 output, got input {x.dtype}{list(x.shape)}, "
                             f"output {spec_out.dtype}")
        sources += [p for p in graph.write(out_dir / graph.name) if p.suffix == ".c"]
        includes.append(f'#include "{graph.name}.h"')
        size = int(np.prod(spec_out.shape))
        arrays += [_input_array(f"{graph.name}_x", x),
                   f"static int8_t {graph.name}_y[{size}];\n",
                   f"static uint8_t {graph.name}_arena[{max(1, graph.arena_bytes)}] __attribute__((aligned(16)));\n"]
        calls.append(_CALL.format(name=graph.name, size=size))
    main = out_dir / "graph_harness.c"
    main.write_text(_MAIN.format(includes="\n".join(includes), arrays="".join(arrays), calls="".join(calls)))
    runtime = FIRMWARE_ROOT / "runtime"
    elf = out_dir / f"graph_harness_{board.name}.elf"
    defines = [f"-D{k}={v}" for k, v in board.defines.items()]
    _run([board.compiler, *CFLAGS, "-ffp-contract=off", *board.cflags, *defines,
          *(f"-I{out_dir / g.name}" for g, _ in cases), f"-I{KERNELS_DIR}", f"-I{runtime}",
          str(main), *map(str, sources), str(runtime / "lumamba_counter.c"),
          *map(str, sorted(KERNELS_DIR.glob("*.c"))), *(str(FIRMWARE_ROOT / s) for s in board.sources),
          *board.ldflags, *board.memory_ldflags, "-Wl,--gc-sections", *board.ldlibs, "-o", str(elf)],
         f"building the graph harness for {board.name}")
    return elf


def run_graphs_on_board(board: Board | str, cases: Sequence[tuple[CGraph, np.ndarray]],
                        out_dir: str | Path, timeout_s: float = 300.0) -> dict[str, KernelResult]:
    """Build and run `build_graph_harness`; graph name -> its result (`y` the flat int8 output)."""
    elf = build_graph_harness(board, cases, out_dir)
    return {r.form: r for r in run_board_harness(elf, board, timeout_s)}
