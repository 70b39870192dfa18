"""One quantised model, generated for several boards (each with its own `int8_gemm` micro-kernel
form), verified bit for bit against the golden model on each and profiled per kernel: instructions
per window and per MAC of the whole model and of its qconv kernels.

    .venv/bin/python tools/profile_int8_boards.py PROJECT --out DIR [--boards cortex-m4f,cortex-m55,riscv32]

PROJECT is an int8 `lumamba-export` output directory (its `int8/` copy of the quantised model and
`onnx/` export are reused, so every board runs the very same integers); DIR gets one project per
board and `profile_int8_boards.json`. The qconv MACs are counted from the quantised graphs
(Cout x Cin x kh x kw per output element), so scalar qconvs are counted too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def qconv_macs(golden) -> int:
    """MACs per window of every qconv node (each graph's executions per window counted)."""
    manifest = golden.manifest
    total = 0
    for name, executor in golden.executors.items():
        graph = executor.graph
        calls = sum(len(st.steps(manifest.n_patches)) for st in manifest.schedule if st.graph == name)
        for node in graph.nodes:
            if node.op != "qconv":
                continue
            w = graph.constants[node.params["weight"]]
            out = graph.tensors[node.outputs[0]]["shape"]
            total += calls * int(np.prod(out)) * int(np.prod(w.shape[1:]))
    return total


def main(argv: list[str] | None = None) -> int:
    from lumamba.export.project.boards import load_board
    from lumamba.export.project.int8_project import INT8_DIR, compile_int8_model, write_int8_project
    from lumamba.export.project.kernel_profile import profile_project
    from lumamba.export.project.test_vectors import fixed_windows
    from lumamba.export.verify import verify_int8_on_board
    from lumamba.quant import load_golden

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("project", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--boards", default="cortex-m4f,cortex-m55,riscv32")
    args = p.parse_args(argv)
    quant_dir, onnx_dir = args.project / INT8_DIR, args.project / "onnx"
    golden = load_golden(quant_dir)
    conv_macs = qconv_macs(golden)
    windows = fixed_windows(golden.manifest.n_channels, golden.manifest.n_samples)
    rows = []
    for name in args.boards.split(","):
        board = load_board(name)
        compiled = compile_int8_model(quant_dir, onnx_dir, gemm_form=board.int8_gemm)
        project = write_int8_project(compiled, quant_dir, args.out / name, windows, board=board.name)
        verification = verify_int8_on_board(project, board)
        profile = profile_project(project, board)
        conv = sum(k.instructions for k in profile.kernels if k.kind.startswith("qconv"))
        rows.append({"board": name, "form": board.int8_gemm, "bit_exact": True,
                     "instructions_per_window": float(np.mean(verification.insns)),
                     "profiled_instructions_per_window": profile.instructions_per_window,
                     "gemm_instructions_per_mac": profile.gemm_instructions_per_mac(),
                     "graph_instructions_per_window": {g: round(n) for g, n in profile.graphs().items()},
                     "qconv_instructions_per_window": conv, "qconv_macs_per_window": conv_macs,
                     "qconv_instructions_per_mac": conv / conv_macs if conv_macs else None,
                     "qconv_kernels": {k.symbol: round(k.instructions) for k in profile.kernels
                                       if k.kind.startswith("qconv")}})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "profile_int8_boards.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| board (form) | instructions/window | qconv instructions/window | qconv instr/MAC |\n|---|--:|--:|--:|")
    for r in rows:
        print(f"| {r['board']} ({r['form']}) | {r['instructions_per_window']:,.0f} | "
              f"{r['qconv_instructions_per_window']:,.0f} | {r['qconv_instructions_per_mac']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
