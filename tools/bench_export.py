"""Benchmark the float32 and int8 exports: instructions per window on the emulated boards, flash
and RAM, and host latency.

    .venv/bin/python tools/bench_export.py [--configs micro,small] [--tiny] [--boards ...]
                                           [--montage tcp22] [--n-samples 1280] [--out DIR]
                                           [--mamba-form window|step|chunk [--mamba-chunk 8]]
                                           [--int8 [--compare] [--calib-data SRC] [--calib-windows 8]]

Per config the model is exported once to ONNX, compiled once per precision, then built, run and
measured per board. Configs are `micro`, `small`, `tiny` (seeded random weights, as
`lumamba-export --config`; the cost does not depend on the values) or `demo` (the bundled demo
model). Printed as markdown tables.

- float32 (default): the logits are compared with onnxruntime (max abs error).
- --int8: calibration windows (--calib-data, else the default synthetic corpus, loaded once for
  all configs) -> lumamba.quant.calibrate/quantize -> integer C (int8_project), the same steps
  as `lumamba-export --int8`; every board run must give logits bit-identical to the int8 golden
  model (verify_int8_on_board), also natively on the host. --compare measures float32 too and
  adds a side-by-side table.
- instructions: QEMU's exact count of lumamba_infer() per window (mean over the fixed windows);
  QEMU has no timing model, so these are instructions, not cycles.
- MACs: lumamba.profile.macs without the position embedding, which the export folds into a
  constant for the montage (it does not run per window). The same count for both precisions.
- flash: the deployable image (test windows excluded); RAM: static data plus the stack bound;
  "fits" is against the board's representative real chip (memory_report).
- host ms/window: median of --repeats single-window calls, one thread everywhere.
- int8 GEMM vs the stand-alone micro-kernel (per emulated board, measured in the same run): the
  project is profiled (lumamba.export.project.kernel_profile: counter reads around every kernel
  call, the MACs of every micro-kernel call counted); "GEMM instr/MAC" is all qlinear kernels'
  instructions (micro-kernel, tile loop and fused consumers) over their MACs, "fastest" the
  cheapest qlinear kernel per MAC with its mean tokens per call (M). The stand-alone kernel is the
  board's own form (`int8_gemm`) on 256x384 weights at M = 1 and M = 16
  (tools/bench_kernels.py); the ratio divides the fastest kernel by the stand-alone one at its
  shape class (M = 1 for a matrix-vector kernel, else M = 16).
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import bench_kernels   # tools/, beside this script

from lumamba.export.project.boards import load_board
from lumamba.export.project.build import BuildError, build_project, elf_path
from lumamba.export.cli import demo_model_path, load_model
from lumamba.export.project.firmware_project import ONNX_DIR, compile_model, write_project
from lumamba.export.project.host_c_runner import load_host_c
from lumamba.export.project.int8_project import INT8_DIR, compile_int8_model, write_int8_project
from lumamba.export.project.kernel_profile import profile_project
from lumamba.export.onnx.mamba_chunk import DEFAULT_CHUNK
from lumamba.export.onnx.manifest import MAMBA_FORMS, Manifest
from lumamba.export.project.memory_report import memory_report
from lumamba.export.onnx.exporter import export_onnx
from lumamba.export.onnx.ort_runner import load
from lumamba.export.project.qemu import FirmwareRunError, run_elf
from lumamba.export.project.test_vectors import fixed_windows
from lumamba.export.verify import VerificationError, verify_int8_on_board
from lumamba.montages import load_montage
from lumamba.profile import deployed_macs
from lumamba.quant import calibrate, load_golden, quantize

DEFAULT_BOARDS = ("cortex-m4f", "cortex-m55", "riscv32")
DEMO = "demo"                 # config name of the bundled demo model
FLOAT, INT8 = "float32", "int8"
DEFAULT_CALIB_WINDOWS = 8
STANDALONE_M = (1, 16)          # shape classes of the stand-alone kernel: matrix-vector, a 16-token tile
STANDALONE_NK = (256, 384)


@dataclass
class Export:
    """One config's model and its ONNX export, shared by both precisions."""

    name: str
    model: torch.nn.Module
    channels: list[str]
    root: Path               # working directory of this config
    onnx_dir: Path
    manifest: Manifest
    windows: np.ndarray      # the fixed test windows every board runs
    macs: int


def per_window_ms(fn, windows: np.ndarray, repeats: int) -> float:
    """Median wall time of fn(one window) in milliseconds."""
    times = []
    for r in range(repeats):
        x = windows[r % len(windows)][None]
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def load_bench_model(name: str) -> torch.nn.Module:
    """The bundled demo model for `demo`, else a seeded random model of config `name` (as
    lumamba-export loads them)."""
    if name == DEMO:
        return load_model(str(demo_model_path()), None)[0]
    return load_model(None, name)[0]


def export_config(name: str, args, log) -> Export:
    model = load_bench_model(name)
    channels = load_montage(args.montage)
    root = Path(args.out) / name
    log(f"{name}: ONNX export")
    manifest = export_onnx(model, channels, args.n_samples, root / ONNX_DIR, mamba_form=args.mamba_form,
                           mamba_chunk=args.mamba_chunk)
    return Export(name, model, channels, root, root / ONNX_DIR, manifest,
                  fixed_windows(manifest.n_channels, manifest.n_samples),
                  deployed_macs(model.config, len(channels), args.n_samples, model.n_classes))


def link_failure(e: BuildError) -> str:
    """The linker's 'region overflowed' line of a failed build, shortened for a table cell."""
    overflow = [line for line in str(e).splitlines() if "overflowed" in line]
    return "does not link: " + (overflow[0].split(": ", 1)[-1] if overflow else "build failed")


def measure_boards(ex: Export, precision: str, project: Path, boards: list[str],
                   run: Callable[[str], dict], log) -> list[dict]:
    """Per board: `run(board)` builds and runs the project (returning insns, qemu_s and its
    check), then the memory report of the ELF. A build that does not link, or a run that fails,
    becomes a row with a note."""
    rows = []
    for board in boards:
        log(f"{ex.name} {precision}: {board}")
        row = {"config": ex.name, "precision": precision, "board": board, "macs": ex.macs}
        try:
            row.update(run(board))
        except BuildError as e:
            row["note"] = link_failure(e)
            rows.append(row)
            continue
        except FirmwareRunError as e:   # built, but the run crashed or timed out: memory is still known
            row["note"] = f"run failed: {str(e).splitlines()[0]}"
        report = memory_report(elf_path(project, board), board, project)
        row.update(flash=report["flash"]["deployable"], ram=report["ram"]["total"],
                   fits=report["flash"]["fits"] and report["ram"]["fits"])   # None: no real chip (host)
        rows.append(row)
    return rows


def bench_float(ex: Export, args, log) -> tuple[list[dict], dict]:
    """float32: compile, then per board build, run and compare with onnxruntime; host timings."""
    log(f"{ex.name} float32: compile")
    project = ex.root / FLOAT
    compiled = compile_model(ex.manifest, ex.onnx_dir)
    write_project(compiled, project, ex.windows)
    ort_runner = load(ex.onnx_dir)
    reference = ort_runner(ex.windows)

    def run(board: str) -> dict:
        elf = build_project(project, board)
        start = time.perf_counter()
        result = run_elf(elf, board, timeout_s=args.timeout)
        return {"insns": float(np.mean(result.insns)) if len(result.insns) else None,   # none natively
                "qemu_s": (time.perf_counter() - start) / len(ex.windows),
                "err": float(np.abs(result.logits - reference).max())}

    rows = measure_boards(ex, FLOAT, project, args.boards, run, log)
    log(f"{ex.name} float32: host timings")
    names = list(ex.channels)
    host_c = load_host_c(project)

    def pytorch(x):
        with torch.no_grad():
            return ex.model(torch.from_numpy(x), names)

    host = {"config": ex.name,
            "pytorch": per_window_ms(pytorch, ex.windows, args.repeats),
            "ort": per_window_ms(ort_runner, ex.windows, args.repeats),
            "host_c": per_window_ms(host_c, ex.windows, args.repeats),
            "err": float(np.abs(host_c(ex.windows) - reference).max())}
    return rows, host


def bench_int8(ex: Export, calibration: np.ndarray, args, log) -> tuple[list[dict], dict]:
    """int8: calibrate, quantise and compile as lumamba-export --int8 does (one project per
    micro-kernel form the boards use, `int8_gemm`), then per board build, run and require
    bit-identical logits to the golden model; host timings and host parity."""
    quant_dir = ex.root / "quant"
    log(f"{ex.name} int8: calibrate ({len(calibration)} windows) + quantise")
    q = quantize(ex.onnx_dir, calibrate(ex.onnx_dir, calibration, progress=False), out_dir=quant_dir)
    log(f"{ex.name} int8: {q.summary['int8_nodes']} int8 nodes, {q.summary['int8_weight_bytes']:,} B of int8 "
        f"weights")
    forms: dict[str, list[str]] = {}
    for board in dict.fromkeys([*args.boards, "host"]):
        forms.setdefault(load_board(board).int8_gemm, []).append(board)
    projects: dict[str, Path] = {}
    for form in forms:
        log(f"{ex.name} int8: compile (micro-kernel {form})")
        projects[form] = ex.root / f"{INT8}-{form}"
        write_int8_project(compile_int8_model(quant_dir, ex.onnx_dir, gemm_form=form), quant_dir, projects[form],
                           ex.windows)

    def run_in(project: Path) -> Callable[[str], dict]:
        def run(board: str) -> dict:
            try:
                v = verify_int8_on_board(project, board, timeout_s=args.timeout)
            except VerificationError as e:   # not bit-exact (or a failed inference): say so, keep measuring
                return {"bit_exact": False, "note": str(e).splitlines()[0]}
            row = {"insns": float(np.mean(v.insns)) if v.insns else None,
                   "qemu_s": v.seconds / len(v.logits), "bit_exact": True}
            if v.insns:   # an emulated board: where the GEMM instructions go
                row.update(gemm_profile(project, board, args.timeout))
            return row
        return run

    rows = []
    for form, boards in forms.items():
        measured = [b for b in boards if b in args.boards]
        rows += measure_boards(ex, INT8, projects[form], measured, run_in(projects[form]), log)
    rows.sort(key=lambda r: args.boards.index(r["board"]))
    project = projects[load_board("host").int8_gemm]
    run = run_in(project)
    log(f"{ex.name} int8: host parity and timings")
    host_parity = run("host")
    golden = load_golden(project / INT8_DIR)
    host_c = load_host_c(project)
    host = {"config": ex.name, "bit_exact": host_parity["bit_exact"], "note": host_parity.get("note", ""),
            "golden": per_window_ms(golden, ex.windows, args.repeats),
            "host_c": per_window_ms(host_c, ex.windows, args.repeats)}
    return rows, host


def gemm_profile(project: Path, board: str, timeout_s: float) -> dict:
    """The project's GEMM instructions per MAC (all qlinear kernels; the cheapest one and its mean
    tokens per call), from a kernel profile of the project on `board`."""
    profile = profile_project(project, board, timeout_s=timeout_s)
    gemm = profile.gemm_kernels()
    if not gemm:
        return {}
    return {"gemm_ipm": profile.gemm_instructions_per_mac(), "fastest_ipm": gemm[0].instructions_per_mac,
            "fastest_m": gemm[0].tokens_per_call, "fastest_kernel": gemm[0].symbol}


def standalone_kernels(boards: list[str], log) -> dict[tuple[str, int], float]:
    """(board, M) -> instructions per MAC of the board's own micro-kernel form, stand-alone
    (tools/bench_kernels.py's harness, checked bit for bit against NumPy)."""
    emulated = [b for b in boards if load_board(b).emulator is not None]
    log(f"stand-alone micro-kernels on {', '.join(emulated)}")
    cases = [bench_kernels.make_case(m, *STANDALONE_NK) for m in STANDALONE_M]
    ipm = bench_kernels.measure(emulated, cases)
    return {(b, m): ipm[(b, load_board(b).int8_gemm, i)] for b in emulated for i, m in enumerate(STANDALONE_M)}


def print_gemm_table(rows: list[dict], standalone: dict[tuple[str, int], float]) -> None:
    """The project's GEMM kernels against the stand-alone micro-kernel, per config and board."""
    n, k = STANDALONE_NK
    print(f"\nint8 GEMM: the project's qlinear kernels vs the stand-alone micro-kernel ({n}x{k} weights), "
          "instructions per MAC (QEMU)\n")
    print("| config | board | kernel form | GEMM instr/MAC (all qlinear kernels) | fastest qlinear kernel | "
          "its tokens/call | stand-alone M=1 | stand-alone M=16 | fastest / stand-alone |")
    print("|---|---|---|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        if "fastest_ipm" not in r or (r["board"], 1) not in standalone:
            continue
        m = 1 if r["fastest_m"] < 1.5 else STANDALONE_M[-1]
        ratio = r["fastest_ipm"] / standalone[(r["board"], m)]
        print(f"| {r['config']} | {r['board']} | {load_board(r['board']).int8_gemm} | {r['gemm_ipm']:.2f} | "
              f"{r['fastest_ipm']:.2f} ({_short(r['fastest_kernel'])}) | {r['fastest_m']:.1f} | {standalone[(r['board'], 1)]:.2f} | "
              f"{standalone[(r['board'], STANDALONE_M[-1])]:.2f} | {ratio:.2f} (vs M={m}) |")


def _short(symbol: str) -> str:
    """`lumamba_frontend_k18_qlinear1_dequantize4_add7` -> `frontend k18`."""
    m = re.match(r"lumamba_(\w+?)_(k\d+)_", symbol)
    return f"{m.group(1)} {m.group(2)}" if m else symbol


def _kib(n: float | None) -> str:
    return "" if n is None else f"{n / 1024:,.0f} KiB"


def _minsn(n: float | None) -> str:
    return "" if n is None else f"{n / 1e6:,.1f} M"


def _per_mac(r: dict) -> str:
    return f"{r['insns'] / r['macs']:.2f}" if r.get("insns") else ""


def _check(r: dict) -> str:
    if r["precision"] == FLOAT:
        return f"{r['err']:.1e}" if "err" in r else ""
    return {True: "yes", False: "no"}.get(r.get("bit_exact"), "")


def print_board_table(rows: list[dict], precision: str, args) -> None:
    check = "max abs err vs ORT" if precision == FLOAT else "bit-exact vs golden"
    print(f"\nLuMamba {precision}, montage {args.montage}, {args.n_samples} samples per window "
          "(QEMU instruction counts, not cycles)\n")
    print(f"| config | board | MACs/window | instructions/window | instr/MAC | flash | RAM | fits chip | "
          f"{check} | QEMU s/window | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|---:|---|")
    for r in rows:
        fits = {True: "yes", False: "no"}.get(r.get("fits"), "")
        qemu = f"{r['qemu_s']:.1f}" if "qemu_s" in r else ""
        print(f"| {r['config']} | {r['board']} | {r['macs'] / 1e6:.1f} M | {_minsn(r.get('insns'))} | "
              f"{_per_mac(r)} | {_kib(r.get('flash'))} | {_kib(r.get('ram'))} | {fits} | {_check(r)} | {qemu} | "
              f"{r.get('note', '')} |")


def print_comparison(rows: list[dict]) -> None:
    """float32 vs int8 side by side, per config and board."""
    by_key = {(r["config"], r["board"], r["precision"]): r for r in rows}
    print("\nfloat32 vs int8 (flash deployable, RAM with stack bound, QEMU instructions)\n")
    print("| config | board | flash f32 | flash int8 | RAM f32 | RAM int8 | instr/window f32 | instr/window int8 | "
          "instr/MAC f32 | instr/MAC int8 | int8 bit-exact vs golden | note |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for (config, board, precision), i8 in by_key.items():
        if precision != INT8:
            continue
        f = by_key.get((config, board, FLOAT), {})
        notes = "; ".join(f"{p}: {r['note']}" for p, r in ((FLOAT, f), (INT8, i8)) if r.get("note"))
        print(f"| {config} | {board} | {_kib(f.get('flash'))} | {_kib(i8.get('flash'))} | {_kib(f.get('ram'))} | "
              f"{_kib(i8.get('ram'))} | {_minsn(f.get('insns'))} | {_minsn(i8.get('insns'))} | "
              f"{_per_mac(f) if f else ''} | {_per_mac(i8)} | {_check(i8)} | {notes} |")


def load_calibration(args, log) -> np.ndarray:
    """The calibration windows of --calib-data (default: the synthetic corpus), once for all configs."""
    from lumamba.quant.calibration_data import load_int8_windows

    log(f"int8: {args.calib_windows} calibration windows from {args.calib_data or 'the default synthetic corpus'}")
    scratch = Path(args.out) / "calib"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        return load_int8_windows(args.calib_data, load_montage(args.montage), args.n_samples, args.calib_windows,
                                 Path(tmp), warn=log).calibration


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="micro,small",
                   help=f"comma-separated configs, or {DEMO} for the bundled demo model (default micro,small)")
    p.add_argument("--tiny", action="store_true", help="add tiny (slow: minutes per board)")
    p.add_argument("--boards", default=",".join(DEFAULT_BOARDS))
    p.add_argument("--montage", default="tcp22")
    p.add_argument("--mamba-form", choices=MAMBA_FORMS, default="step",
                   help="how the Mamba blocks are exported (lumamba-export --mamba-form; default step)")
    p.add_argument("--mamba-chunk", type=int, default=DEFAULT_CHUNK,
                   help=f"tokens per chunk with --mamba-form chunk (lumamba-export --mamba-chunk; default {DEFAULT_CHUNK})")
    p.add_argument("--n-samples", type=int, default=1280)
    p.add_argument("--repeats", type=int, default=5, help="host timing repeats per backend")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per QEMU run")
    p.add_argument("--out", default="out/bench_export", help="working directory for the projects")
    p.add_argument("--int8", action="store_true", help="benchmark the int8 export instead of float32")
    p.add_argument("--compare", action="store_true", help="with --int8: float32 too, and a side-by-side table")
    p.add_argument("--calib-data", help="with --int8: calibration source as lumamba-export --calib-data "
                                        "(default: the default synthetic corpus)")
    p.add_argument("--calib-windows", type=int, default=DEFAULT_CALIB_WINDOWS,
                   help=f"with --int8: calibration windows (default {DEFAULT_CALIB_WINDOWS})")
    args = p.parse_args(argv)
    if args.compare and not args.int8:
        p.error("--compare: only with --int8")
    args.boards = [b for b in args.boards.split(",") if b]
    configs = [c for c in args.configs.split(",") if c] + (["tiny"] if args.tiny else [])
    precisions = ([FLOAT] if args.compare or not args.int8 else []) + ([INT8] if args.int8 else [])

    def log(message: str) -> None:
        print(f"[bench_export] {message}", file=sys.stderr, flush=True)

    torch.set_num_threads(1)
    calibration = load_calibration(args, log) if args.int8 else None
    standalone = standalone_kernels(args.boards, log) if args.int8 else {}
    rows, hosts = [], {FLOAT: [], INT8: []}
    for name in configs:
        ex = export_config(name, args, log)
        for precision in precisions:
            start = time.perf_counter()
            r, h = bench_float(ex, args, log) if precision == FLOAT else bench_int8(ex, calibration, args, log)
            log(f"{name} {precision}: {time.perf_counter() - start:.0f} s")
            rows += r
            hosts[precision].append(h)

    for precision in precisions:
        print_board_table([r for r in rows if r["precision"] == precision], precision, args)
    if FLOAT in precisions:
        print("\nHost float32 (x86-64, one thread), ms per window\n")
        print("| config | PyTorch | onnxruntime | host C | host C max abs err vs ORT |")
        print("|---|---:|---:|---:|---:|")
        for h in hosts[FLOAT]:
            print(f"| {h['config']} | {h['pytorch']:.1f} | {h['ort']:.1f} | {h['host_c']:.1f} | {h['err']:.1e} |")
    if INT8 in precisions:
        print("\nHost int8 (x86-64, one thread), ms per window\n")
        print("| config | golden model (NumPy) | host C | host C bit-exact vs golden |")
        print("|---|---:|---:|---|")
        for h in hosts[INT8]:
            exact = "yes" if h["bit_exact"] else f"no: {h['note']}"
            print(f"| {h['config']} | {h['golden']:.1f} | {h['host_c']:.1f} | {exact} |")
    if INT8 in precisions:
        print_gemm_table([r for r in rows if r["precision"] == INT8], standalone)
    if len(precisions) == 2:
        print_comparison(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
