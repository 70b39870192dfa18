"""Benchmark the float32 export: instructions per window on the emulated boards, flash and RAM,
and host latency of PyTorch, onnxruntime and the generated C.

    .venv/bin/python tools/bench_export.py [--configs micro,small] [--tiny] [--boards ...]
                                           [--montage tcp22] [--n-samples 1280] [--out DIR]

Per config (seeded random weights; the cost does not depend on the values) the model is exported
once, compiled once, then built, run and measured per board. Printed as markdown tables.

- instructions: QEMU's exact count of lumamba_infer() per window (mean over the fixed windows);
  QEMU has no timing model, so these are instructions, not cycles.
- MACs: lumamba.profile.macs without the position embedding, which the export folds into a
  constant for the montage (it does not run per window).
- flash: the deployable image (test windows excluded); RAM: static data plus the stack bound;
  "fits" is against the board's representative real chip (memory_report).
- host ms/window: median of --repeats single-window calls, one thread everywhere.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lumamba import CONFIGS, LuMamba
from lumamba.export.build import BuildError, build_project
from lumamba.export.firmware_project import ONNX_DIR, compile_model, write_project
from lumamba.export.host_c_runner import load_host_c
from lumamba.export.memory_report import memory_report
from lumamba.export.onnx_export import export_onnx
from lumamba.export.ort_runner import load
from lumamba.export.qemu import run_elf
from lumamba.export.verify import fixed_windows
from lumamba.montages import load_montage
from lumamba.profile import macs

DEFAULT_BOARDS = ("cortex-m4f", "cortex-m55", "riscv32")
N_CLASSES = 2


def per_window_ms(fn, windows: np.ndarray, repeats: int) -> float:
    """Median wall time of fn(one window) in milliseconds."""
    times = []
    for r in range(repeats):
        x = windows[r % len(windows)][None]
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def device_macs(config, n_channels: int, n_samples: int) -> int:
    parts = macs(config, n_channels, n_samples, N_CLASSES)
    return parts["total"] - parts["position_embed"]


def bench_config(name: str, args, log) -> tuple[list[dict], dict]:
    config = CONFIGS[name]
    channels = load_montage(args.montage)
    torch.manual_seed(0)
    model = LuMamba(config, n_classes=N_CLASSES).eval()
    root = Path(args.out) / name
    log(f"{name}: export + compile")
    manifest = export_onnx(model, channels, args.n_samples, root / ONNX_DIR)
    compiled = compile_model(manifest, root / ONNX_DIR)
    windows = fixed_windows(len(channels), args.n_samples)
    project = write_project(compiled, root, windows)
    reference = load(root / ONNX_DIR)(windows)
    n_macs = device_macs(config, len(channels), args.n_samples)

    rows = []
    for board in args.boards:
        log(f"{name}: {board}")
        row = {"config": name, "board": board, "macs": n_macs}
        try:
            elf = build_project(project, board)
        except BuildError as e:
            overflow = [line for line in str(e).splitlines() if "overflowed" in line]
            row["note"] = "does not link: " + (overflow[0].split(": ", 1)[-1] if overflow else "build failed")
            rows.append(row)
            continue
        start = time.perf_counter()
        result = run_elf(elf, board, timeout_s=args.timeout)
        row["qemu_s"] = (time.perf_counter() - start) / len(windows)
        report = memory_report(elf, board, project)
        row.update(insns=float(np.mean(result.insns)), flash=report["flash"]["deployable"],
                   ram=report["ram"]["total"], fits=report["flash"]["fits"] and report["ram"]["fits"],
                   err=float(np.abs(result.logits - reference).max()))
        rows.append(row)

    log(f"{name}: host timings")
    torch.set_num_threads(1)
    names = list(channels)
    ort_runner = load(root / ONNX_DIR)
    host_c = load_host_c(project)

    def pytorch(x):
        with torch.no_grad():
            return model(torch.from_numpy(x), names)

    host = {"config": name,
            "pytorch": per_window_ms(pytorch, windows, args.repeats),
            "ort": per_window_ms(ort_runner, windows, args.repeats),
            "host_c": per_window_ms(host_c, windows, args.repeats),
            "err": float(np.abs(host_c(windows) - reference).max())}
    return rows, host


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="micro,small", help="comma-separated configs (default micro,small)")
    p.add_argument("--tiny", action="store_true", help="add tiny (slow: minutes per board)")
    p.add_argument("--boards", default=",".join(DEFAULT_BOARDS))
    p.add_argument("--montage", default="tcp22")
    p.add_argument("--n-samples", type=int, default=1280)
    p.add_argument("--repeats", type=int, default=5, help="host timing repeats per backend")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per QEMU run")
    p.add_argument("--out", default="out/bench_export", help="working directory for the projects")
    args = p.parse_args(argv)
    args.boards = [b for b in args.boards.split(",") if b]
    configs = [c for c in args.configs.split(",") if c] + (["tiny"] if args.tiny else [])

    def log(message: str) -> None:
        print(f"[bench_export] {message}", file=sys.stderr, flush=True)

    rows, hosts = [], []
    for name in configs:
        r, h = bench_config(name, args, log)
        rows += r
        hosts.append(h)

    print(f"\nLuMamba float32, montage {args.montage}, {args.n_samples} samples per window "
          "(QEMU instruction counts, not cycles)\n")
    print("| config | board | MACs/window | instructions/window | instr/MAC | flash | RAM | fits chip | "
          "max abs err vs ORT | QEMU s/window |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        if "note" in r:
            print(f"| {r['config']} | {r['board']} | {r['macs'] / 1e6:.1f} M | {r['note']} | | | | | | |")
            continue
        print(f"| {r['config']} | {r['board']} | {r['macs'] / 1e6:.1f} M | {r['insns'] / 1e6:.1f} M | "
              f"{r['insns'] / r['macs']:.2f} | {r['flash'] / 1024:,.0f} KiB | {r['ram'] / 1024:,.0f} KiB | "
              f"{'yes' if r['fits'] else 'no'} | {r['err']:.1e} | {r['qemu_s']:.1f} |")
    print("\nHost (x86-64, one thread), ms per window\n")
    print("| config | PyTorch | onnxruntime | host C | host C max abs err vs ORT |")
    print("|---|---:|---:|---:|---:|")
    for h in hosts:
        print(f"| {h['config']} | {h['pytorch']:.1f} | {h['ort']:.1f} | {h['host_c']:.1f} | {h['err']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
