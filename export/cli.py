"""`lumamba-export`: from a LuMamba checkpoint to a built, verified firmware project.

    lumamba-export --target {onnx,host,cortex-m,cortex-m55,riscv} [--checkpoint PATH | --config NAME]
                   [--montage NAME|FILE] [--n-samples 1280] [--front-end streamed|stored|window] [--out DIR] [--[no-]verify]
                   [--board-profile NAME|FILE] [--no-fit-check] [--app test|demo] [--profile]
                   [--int8 [--calib-data DIR|FILE.npz] [--calib-windows 256] [--quant-config FILE]
                           [--max-drift 0.01] [--min-agreement 0] [--precision auto|int8]
                           [--target-sqnr 20] [--flash-budget 0.05]]

Steps: load the model -> recurrent-mode ONNX graphs + manifest -> TVM C per graph -> firmware
project (driver, const weights, Makefile) -> ELF (make) -> memory report (printed, memory.json)
-> fit check against the real chip -> fixed windows on QEMU (or natively for host) compared with
onnxruntime (--no-verify skips it). `--app demo` also builds the streaming demo
(build/<board>/lumamba-demo.elf, `make demo-app`), which `lumamba-stream` drives. `--target onnx` stops after the graphs (--verify then
compares onnxruntime with PyTorch).

With --int8 (firmware targets), calibration windows (--calib-data, else a freshly generated
synthetic corpus; lumamba.quant.calibration_data) set the activation ranges, the automatic
precision mode (--precision auto, the default; lumamba.quant.auto_precision) narrows input ranges
and keeps the most sensitive layers float until --target-sqnr within --flash-budget, the graphs
are quantised (lumamba.quant) and their integer descriptions compiled to C (int8_project);
verification then requires logits bit-identical to the int8 golden model, not within a tolerance
of onnxruntime, and a last step scores the float model and the golden model on the source's test
windows (the AUROC drift, drift.json and drift.png; over --max-drift, or a label agreement under
--min-agreement, fails the export). A short report (parity, memory, precision, drift) ends the run.

With --profile (emulated boards), a last step runs a copy of the project with the instruction
counter read around every kernel call (lumamba.export.project.kernel_profile), prints the top
kernels and the per-graph totals, and writes profile.json (report.json carries its per-graph totals).

Everything is written to a temporary directory beside --out and moved into place at the end, so
a failed or interrupted run never replaces a good earlier project. A project that builds but does
not fit, or fails verification, is kept as OUT.rejected for inspection.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lumamba.export.onnx.mamba_chunk import DEFAULT_CHUNK
from lumamba.export.onnx.manifest import MAMBA_FORMS
from lumamba.export.output_dir import (OutputDirError, check_output_dir, install, new_partial,
                                       remove_stale_partials, termination_as_interrupt)

TARGETS = {"onnx": None, "host": "host", "cortex-m": "cortex-m4f", "cortex-m55": "cortex-m55",
           "riscv": "riscv32"}
DEFAULT_CONFIG = "micro"      # the random fallback when there is no demo model
RANDOM_SEED = 0
RANDOM_N_CLASSES = 2
DEFAULT_MONTAGE = "tcp22"
DEFAULT_N_SAMPLES = 1280
# All train windows of the default synthetic corpus (228) and up to 256 of a larger source: 32
# random windows missed the tail of the demo model's logits (max |logit| 39 there, 119 on the test
# windows), so the head saturated (issue 14; quant/README.md "Calibration windows").
DEFAULT_CALIB_WINDOWS = 256
DEFAULT_MAX_DRIFT = 0.01


class ExportError(RuntimeError):
    """A user-facing failure: printed as one message, exit status 1."""


def demo_model_path() -> Path:
    """Where the bundled demo model lives (it may not exist)."""
    import lumamba
    return Path(lumamba.__file__).resolve().parent / "assets" / "demo_model.safetensors"


class _Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int):
        self.total, self.index, self.started = total, 0, None

    def __call__(self, title: str) -> None:
        self.finish()
        self.index += 1
        self.started = time.perf_counter()
        print(f"[{self.index}/{self.total}] {title}", flush=True)

    def finish(self) -> None:
        if self.started is not None:
            print(f"      done in {time.perf_counter() - self.started:.1f} s", flush=True)
            self.started = None


def _positive_int(text: str) -> int:
    """argparse type: a positive integer (--mamba-chunk)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _warn(message: str) -> None:
    print(f"lumamba-export: WARNING: {message}", file=sys.stderr, flush=True)


# --- model and montage ------------------------------------------------------------------------


def _classifier_classes(path: Path) -> int:
    """Number of classes of the classifier stored in a checkpoint; ExportError if it has none."""
    from lumamba.checkpoint import read_checkpoint

    tensors, config = read_checkpoint(path)
    last = "classifier.fc3.weight" if config.head == "mamba" else "classifier.fc1.weight"
    if last not in tensors:
        raise ExportError(f"--checkpoint {path}: no classifier weights ({last}); this looks like a pre-training "
                          "checkpoint. Export needs a fine-tuned model (lumamba-train finetune).")
    return int(tensors[last].shape[0])


def load_model(checkpoint: str | None, config: str | None):
    """(model, description, checkpoint path or None) as the options ask (see main's help)."""
    import torch

    from lumamba import CONFIGS, LuMamba
    from lumamba.checkpoint import load_pretrained

    if checkpoint is not None and config is not None:
        raise ExportError("--config applies only without --checkpoint (a checkpoint stores its own config)")
    what = "checkpoint"
    if checkpoint is None and config is None and demo_model_path().is_file():
        checkpoint, what = str(demo_model_path()), "bundled demo model"
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise ExportError(f"--checkpoint {path}: file not found")
        try:
            model = load_pretrained(path, n_classes=_classifier_classes(path))
        except ValueError as e:   # CheckpointError: unreadable file or mismatched keys
            raise ExportError(f"--checkpoint {path}: {e}") from None
        return model.eval(), f"{what} {path}", path
    if config is None:
        _warn(f"no --checkpoint and no bundled demo model at {demo_model_path()}: exporting a randomly "
              f"initialised '{DEFAULT_CONFIG}' model (seed {RANDOM_SEED}); its outputs are meaningless")
        config = DEFAULT_CONFIG
    else:
        _warn(f"no --checkpoint: exporting a randomly initialised '{config}' model (seed {RANDOM_SEED})")
    if config not in CONFIGS:
        raise ExportError(f"--config {config!r}: unknown config; known configs: {', '.join(CONFIGS)}")
    torch.manual_seed(RANDOM_SEED)
    model = LuMamba(CONFIGS[config], n_classes=RANDOM_N_CLASSES)
    return model.eval(), f"random '{config}' model (seed {RANDOM_SEED})", None


def load_channels(montage: str) -> list[str]:
    from lumamba.channels import ChannelError
    from lumamba.montages import load_montage
    try:
        return load_montage(montage)
    except ChannelError as e:
        raise ExportError(f"--montage: {e}") from None


def board_with_limits(board_name: str, profile: str | None):
    """The board, with the real-chip limits of `profile` (a board name, a chip name or a JSON
    file) if given."""
    from lumamba.export.project.boards import BOARDS, CHIPS, load_board, load_chip, parse_target

    board = load_board(board_name)
    if profile is None:
        return board
    if profile in BOARDS:
        target = load_board(profile).target
        if target is None:
            raise ExportError(f"--board-profile {profile}: that board has no real-chip memory limits")
        return dataclasses.replace(board, target=target)
    if profile in CHIPS:
        return dataclasses.replace(board, target=load_chip(profile))
    path = Path(profile)
    if not path.is_file():
        raise ExportError(f"--board-profile {profile!r}: neither a board ({', '.join(BOARDS)}), a chip "
                          f"({', '.join(CHIPS)}) nor an existing file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        target = parse_target(data.get("target", data))   # a whole board profile, or just its "target" object
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ExportError(f"--board-profile {path}: expected JSON with a \"target\" object holding name, "
                          f"flash_bytes and ram_bytes, and optionally external_flash with part, bytes, origin and source ({type(e).__name__}: {e})") from None
    return dataclasses.replace(board, target=target)


def check_fit(report: dict, no_fit_check: bool = False) -> None:
    """ExportError saying by how many bytes the build exceeds the chip; only a warning with
    `no_fit_check`."""
    from lumamba.export.project.memory_report import MemoryFitError, check_fits
    try:
        check_fits(report)
    except MemoryFitError as e:
        if not no_fit_check:
            raise ExportError(f"{e}. Use a smaller config or window, or pass --no-fit-check to keep the project "
                              "anyway.") from None
        _warn(f"{e} (--no-fit-check: continuing)")


# --- the pipeline -----------------------------------------------------------------------------


def _check_int8_inputs(args, normalisation: str) -> None:
    """--calib-data exists and, when it is prepared windows, is normalised as the model was trained
    (`normalisation`); --quant-config parses (which layers it names is checked once the graphs exist)."""
    from lumamba.quant.calibration_data import Int8DataError, check_normalisation_matches
    from lumamba.quant.config import QuantConfig

    if args.calib_data is not None and not Path(args.calib_data).exists():
        raise ExportError(f"--calib-data {args.calib_data}: not found (a window cache, a .npz or a TUAB-style EDF tree)")
    calib = Path(args.calib_data) if args.calib_data is not None else None
    if calib is not None and (calib.suffix == ".npz" or (calib / "index.json").is_file()):
        try:
            check_normalisation_matches(calib, normalisation)
        except Int8DataError as e:
            raise ExportError(str(e)) from None
    if args.quant_config is not None:
        try:
            QuantConfig.load(args.quant_config)
        except (ValueError, FileNotFoundError) as e:
            raise ExportError(f"--quant-config: {e}") from None


def _export(args, model, channels, checkpoint, board, work: Path, steps: _Steps) -> dict[str, str]:
    """The steps after the model is loaded, writing into `work`; returns the report's lines
    (parity, memory, drift) for a firmware target, {} for --target onnx."""
    from lumamba.export.project.firmware_project import ONNX_DIR, compile_model, write_project
    from lumamba.export.project.memory_report import format_report, memory_report
    from lumamba.export.onnx.exporter import export_onnx
    from lumamba.export.project.test_vectors import fixed_windows
    from lumamba.export.verify import verify_onnx

    steps(f"exporting recurrent-mode ONNX graphs ({len(channels)} channels, {args.n_samples} samples)")
    onnx_dir = work if board is None else work / ONNX_DIR
    manifest = export_onnx(model, channels, args.n_samples, onnx_dir, checkpoint=checkpoint,
                           front_end=args.front_end, mamba_form=args.mamba_form,
                           mamba_chunk=args.mamba_chunk)
    print(f"      {len(manifest.graphs)} graphs, {len(manifest.schedule)} stages, "
          f"{manifest.n_patches} tokens per window, Mamba in {args.mamba_form} form")
    if board is None:
        if args.verify:
            steps("verifying onnxruntime against PyTorch on fixed windows")
            print("      " + verify_onnx(onnx_dir, model).summary())
        return {}

    progress = lambda m: print("    " + m, flush=True)   # noqa: E731
    windows = fixed_windows(manifest.n_channels, manifest.n_samples)
    if args.int8:
        from lumamba.export.project.int8_project import INT8_DIR, compile_int8_model, write_int8_project
        quant_dir = work / INT8_DIR
        int8_windows, precision = _quantize(args, onnx_dir, channels, quant_dir, steps,
                                            manifest.preprocess["normalisation"])
        steps("compiling the integer graphs to C with TVM")
        compiled = compile_int8_model(quant_dir, onnx_dir, progress=progress, gemm_form=board.int8_gemm)
        steps("writing the firmware project")
        write_int8_project(compiled, quant_dir, work, windows, board=board.name)
    else:
        steps("compiling the graphs to C with TVM")
        compiled = compile_model(manifest, onnx_dir, progress=progress)
        steps("writing the firmware project")
        write_project(compiled, work, windows, board=board.name)
    steps(f"building for {board.name} ({board.compiler})")
    elf = _build(work, board)
    steps("memory report")
    report = memory_report(elf, board, work)
    report = _place_in_external_flash(args, board, work, onnx_dir, report)
    (work / "memory.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(format_report(report))
    check_fit(report, args.no_fit_check)
    verification = _verify(args, board, work, steps) if args.verify else None
    summary = {"memory": memory_line(report),
               "parity": verification.summary() if verification is not None else "not checked (--no-verify)"}
    if args.profile:
        summary["profile"] = _profile(args, board, work, steps)
    if args.app == "demo":
        summary["demo"] = _build_demo(work, board, steps)
    if args.int8:
        summary["precision"] = precision
        steps("accuracy drift: float (PyTorch) vs int8 (golden model)")
        summary["drift"] = _drift(args, model, channels, onnx_dir, quant_dir, int8_windows, work)
    _write_run_report(args, model, channels, board, report, verification, work)
    return summary


def _place_in_external_flash(args, board, work: Path, onnx_dir: Path, report: dict) -> dict:
    """Weights the internal flash cannot hold go to the board's external flash (rebuild and
    measure again); the memory report of the final build."""
    from lumamba.export.project.flash_regions import PlacementError, place_weights
    from lumamba.export.project.memory_report import memory_report

    for attempt in range(3):   # a relink can shift alignment padding by a few bytes
        try:
            placement = place_weights(work, board, report, onnx_dir / "manifest.json", margin=256 << attempt)
        except PlacementError as e:
            if not args.no_fit_check:
                raise ExportError(f"{e}. Use a smaller config, or pass --no-fit-check to keep the project anyway.") from None
            _warn(f"{e} (--no-fit-check: continuing)")
            return report
        if placement is None:
            return report
        print(f"      {len(placement.external)} weight arrays ({placement.external_bytes:,} B, the coldest first: "
              f"{placement.external_fetch_bytes:,} B read per window) placed in the external flash; relinking")
        report = memory_report(_build(work, board), board, work)
    return report


def _build_demo(work: Path, board, steps: _Steps) -> str:
    """`make demo-app` for the board; the report line (paths relative to the project)."""
    from lumamba.export.project.build import BuildError, build_demo_app

    steps(f"building the streaming demo for {board.name} (make demo-app)")
    try:
        elf = build_demo_app(work, board)
    except BuildError as e:
        raise ExportError(str(e)) from None
    rel = elf.relative_to(work).as_posix()
    print(f"      {rel}, {elf.stat().st_size:,} bytes")
    return rel


def _write_run_report(args, model, channels, board, memory: dict, verification, work: Path) -> None:
    """report.json (export/run_report.py) from what the steps wrote (drift.json, int8/quant.json,
    profile.json; each may be absent)."""
    from lumamba.export.project.int8_project import INT8_DIR
    from lumamba.export.run_report import run_report, write_report
    from lumamba.profile import deployed_macs

    def written(path: Path) -> dict | None:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    quant = written(work / INT8_DIR / "quant.json")
    macs = deployed_macs(model.config, len(channels), args.n_samples, model.n_classes, front_end=args.front_end)
    write_report(run_report(board=board.name, precision="int8" if args.int8 else "float32", macs_per_window=macs,
                            memory=memory, verification=verification, drift=written(work / "drift.json"),
                            precision_plan=quant.get("precision") if quant else None,
                            profile=written(work / "profile.json")), work)


def _verify(args, board, work: Path, steps: _Steps):
    """Run the fixed windows on the board: bit-exact against the golden model (int8) or within
    the tolerance of onnxruntime (float32). Returns the Verification; VerificationError otherwise."""
    from lumamba.export.verify import verify_int8_on_board, verify_on_board

    if args.int8:
        steps(f"verifying on {board.name} bit for bit against the int8 golden model (fixed windows)")
        result = verify_int8_on_board(work, board, timeout_s=args.timeout)
    else:
        steps(f"verifying on {board.name} against onnxruntime (fixed windows)")
        result = verify_on_board(work, board, timeout_s=args.timeout)
    print("      " + result.summary())
    print(f"      {result.seconds:.1f} s for {len(result.logits)} windows")
    return result


def _profile(args, board, work: Path, steps: _Steps) -> str:
    """--profile: instructions per window per graph and kernel on the board (a scratch copy of the
    project with counter reads around each kernel call); prints the tables, writes profile.json and
    returns the report line."""
    from lumamba.export.project.kernel_profile import ProfileError, profile_project, write_profile

    steps(f"profiling the kernels on {board.name} (counter reads around every kernel call)")
    try:
        profile = profile_project(work, board, timeout_s=args.timeout)
    except ProfileError as e:
        raise ExportError(f"--profile: {e}") from None
    path = write_profile(profile, work)
    print("\n".join("      " + line for line in profile.format(top=10).splitlines()))
    graph, n = max(profile.graphs().items(), key=lambda kv: kv[1])
    ipm = profile.gemm_instructions_per_mac()
    gemm = f"; GEMM kernels {ipm:.2f} instructions per MAC" if ipm is not None else ""
    return f"largest graph {graph} ({100 * profile.share(n):.1f} % of kernel instructions){gemm}; see {path.name}"


def memory_line(report: dict) -> str:
    """One line of the memory report: deployable flash and RAM against the chip's limits."""
    flash, ram = report["flash"], report["ram"]
    target = report.get("target") or f"{report['board']} (no chip limits)"

    def part(name: str, used: int, limit: int | None) -> str:
        if limit is None:
            return f"{name} {used:,} B"
        verdict = "fits" if used <= limit else f"over by {used - limit:,} B"
        return f"{name} {used:,} B of {limit:,} ({verdict})"
    ext = report.get("external_flash")
    external = (f", {part('external flash', ext['weights'], ext['limit'])}" if ext and ext["weights"] else "")
    return f"{part('flash', flash['deployable'], flash.get('limit'))}{external}, " \
           f"{part('RAM', ram['total'], ram.get('limit'))} on {target}"


def print_summary(summary: dict, title: str) -> None:
    """The short report that ends an export: parity, memory, drift."""
    print(f"\n{title}")
    for key in ("parity", "memory", "precision", "drift", "demo", "profile"):
        if key in summary:
            label = f"{key}: "
            print(f"  {label:11s}{summary[key]}")


# --- int8: calibration, quantisation, drift --------------------------------------------------------


def _quantize(args, onnx_dir: Path, channels: list[str], quant_dir: Path, steps: _Steps, normalisation: str):
    """Calibration windows (normalised as the model was trained: `normalisation`) -> activation
    ranges -> integer graphs in `quant_dir`; returns the windows (Int8Windows), whose evaluation
    part the drift step scores, and the precision report line."""
    from lumamba.quant.calibration_data import Int8DataError, load_int8_windows
    from lumamba.quant.export_step import quantize_for_export

    steps("calibration windows")
    with tempfile.TemporaryDirectory(prefix="lumamba-calib-") as scratch:
        try:
            # fewer windows than the default is normal (a small source); fewer than asked for is not
            windows = load_int8_windows(args.calib_data, channels, args.n_samples, args.calib_windows,
                                        Path(scratch), warn=_warn if args.calib_windows_given else lambda _: None,
                                        normalisation=normalisation)
        except Int8DataError as e:
            raise ExportError(str(e)) from None
    n_eval = 0 if windows.eval_x is None else len(windows.eval_x)
    print(f"      {len(windows.calibration)} calibration windows from {windows.source}; {n_eval} evaluation windows")
    steps(f"calibrating and quantising to int8 ({len(windows.calibration)} windows)")
    try:
        q, precision = quantize_for_export(onnx_dir, windows.calibration, quant_dir, config=args.quant_config,
                                           precision=args.precision, target_db=args.target_sqnr,
                                           budget=args.flash_budget, warn=_warn)
    except (ValueError, FileNotFoundError) as e:     # a bad config: the message names file and pattern
        raise ExportError(f"--quant-config: {e}" if args.quant_config else str(e)) from None
    print(f"      {q.summary['int8_nodes']} int8 nodes, {q.summary['int8_weight_bytes']:,} bytes of int8 weights "
          f"(float32: {q.summary['float_weight_bytes_replaced']:,}); precision: {precision}")
    return windows, precision


def _drift(args, model, channels: list[str], onnx_dir: Path, quant_dir: Path, windows, work: Path) -> str:
    """Float (PyTorch) vs int8 (golden model) AUROC on the evaluation windows; writes drift.json
    and drift.png into the project. Returns the report line; ExportError beyond --max-drift."""
    from lumamba.metrics import write_json
    from lumamba.quant.drift import DRIFT_JSON, compare_float_int8

    if windows.eval_x is None:
        print(f"      skipped: {windows.eval_missing}")
        return f"not measured: {windows.eval_missing}"
    report = compare_float_int8(model, channels, onnx_dir, quant_dir, windows.eval_x, windows.eval_labels,
                                max_drift=args.max_drift, out_dir=work, layers=False)
    report["data"] = windows.source
    write_json(report, work / DRIFT_JSON)
    drift = report["auroc_drift"]
    line = (f"AUROC float {report['float']['auroc']:.4f}, int8 {report['int8']['auroc']:.4f}, "
            f"|drift| {drift:.4f} (max {args.max_drift:g}) on {report['n_windows']} windows of {windows.source}; "
            f"labels agree on {100 * report['label_agreement']:.1f} %, logit SQNR "
            f"{float(report['logits']['sqnr_db']):.1f} dB")
    print("      " + line)
    if report["label_agreement"] < args.min_agreement:
        raise ExportError(f"int8 label agreement {100 * report['label_agreement']:.2f} % is below --min-agreement "
                          f"{100 * args.min_agreement:.2f} % (see {DRIFT_JSON}; raise --target-sqnr)")
    if not report["passed"]:
        raise ExportError(f"int8 accuracy drift: |AUROC_int8 - AUROC_float| = {drift:.4f} exceeds --max-drift "
                          f"{args.max_drift:g} (see {DRIFT_JSON}; a quantisation config can keep layers float)")
    return line


def _build(project: Path, board) -> Path:
    """build_project, with make's output cut to what explains a failure."""
    from lumamba.export.project.build import BuildError, build_project
    try:
        return build_project(project, board)
    except BuildError as e:
        lines = str(e).splitlines()
        overflow = re.search(r"region `(\w+)' overflowed by (\d+) bytes", str(e))
        if overflow and board.emulator is not None:
            region = getattr(board.emulator, overflow.group(1), None)
            where = f" ({region.size:,} bytes: {region.memory})" if region is not None else ""
            raise ExportError(f"the image does not fit the {overflow.group(1)} of the emulated {board.name} "
                              f"machine{where}: over by {int(overflow.group(2)):,} bytes. Use a smaller config "
                              "(or a board with more memory, e.g. --target cortex-m55).") from None
        tail = [line for line in lines[1:] if not line.startswith(("make: ", board.compiler + " "))]
        raise BuildError("\n".join([lines[0], *tail[-30:]])) from None


def _reject(work: Path, out: Path) -> Path:
    rejected = out.with_name(out.name + ".rejected")
    if rejected.exists():
        shutil.rmtree(rejected)
    work.rename(rejected)
    return rejected


def run(args: argparse.Namespace) -> Path:
    """The whole export as the options ask; returns the output directory."""
    out = Path(args.out)
    n_steps = ((1 if args.target == "onnx" else 5) + 3 * bool(args.int8) + bool(args.verify) + (args.app == "demo")
               + bool(args.profile))
    steps = _Steps(n_steps)
    # every input is checked before the minutes of work start
    board_name = TARGETS[args.target]
    board = board_with_limits(board_name, args.board_profile) if board_name else None
    if board is not None:
        from lumamba.export.project.build import check_toolchain
        check_toolchain(board, need_emulator=args.verify or args.profile)
    channels = load_channels(args.montage)
    model, description, checkpoint = load_model(args.checkpoint, args.config)
    if args.int8:
        _check_int8_inputs(args, (model.preprocess or {}).get("normalisation", "zscore"))
    patch = model.config.patch_size
    if args.n_samples <= 0 or args.n_samples % patch:
        raise ExportError(f"--n-samples {args.n_samples}: must be a positive multiple of the patch size {patch}")
    print(f"lumamba-export: {description}, target {args.target}, montage {args.montage} "
          f"({len(channels)} channels), {args.n_samples} samples per window -> {out}")
    for stale in remove_stale_partials(out):
        _warn(f"removed {stale}, left by an export that was killed")
    work = new_partial(out)
    try:
        with termination_as_interrupt():
            summary = _export(args, model, channels, checkpoint, board, work, steps)
        steps.finish()
    except BaseException as e:
        from lumamba.export.project.qemu import FirmwareRunError
        from lumamba.export.verify import VerificationError
        complete = (work / "memory.json").is_file()   # built and measured: worth keeping for a look
        if complete and isinstance(e, (ExportError, VerificationError, FirmwareRunError)):
            rejected = _reject(work, out)
            raise ExportError(f"{e}\n(the new project is in {rejected}; {out} was not changed)") from None
        shutil.rmtree(work, ignore_errors=True)
        raise
    install(work, out)
    stale = out.with_name(out.name + ".rejected")
    if stale.exists():   # an earlier rejected attempt is superseded by this good project
        shutil.rmtree(stale)
    board = TARGETS[args.target]
    if board is None:
        print(f"wrote {out}: manifest.json and {len(list(out.glob('*.onnx')))} ONNX graphs")
    else:
        extra = ", drift.json, drift.png" if (out / "drift.json").is_file() else ""
        extra += ", profile.json" if (out / "profile.json").is_file() else ""
        print(f"wrote {out}: firmware project, ELF {out / 'build' / board / 'lumamba.elf'}, memory.json, "
              f"report.json{extra}\n"
              f"rebuild with: make -C {out} BOARD={board}")
        if "demo" in summary:
            print(f"streaming demo: {out / summary['demo']} (rebuild with: make -C {out} demo-app BOARD={board}; "
                  f"stream a recording through it with: lumamba-stream --project {out} --recording FILE"
                  f"{'' if board == 'cortex-m4f' else ' --board ' + board})")
        print_summary(summary, f"Report: {description}, {'int8' if args.int8 else 'float32'}, {board}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lumamba-export",
        description="Export LuMamba to recurrent-mode ONNX and to C firmware for a microcontroller, "
                    "built and checked on the board (QEMU) against onnxruntime, or with --int8 bit for bit "
                    "against the int8 golden model.")
    p.add_argument("--target", required=True, choices=list(TARGETS),
                   help="onnx: graphs + manifest only; host: native build; cortex-m: Cortex-M4F; "
                        "cortex-m55: Cortex-M55; riscv: RV32IMFC")
    p.add_argument("--checkpoint", help="fine-tuned checkpoint (.safetensors); default: the bundled demo model")
    p.add_argument("--config", help="without --checkpoint: export a randomly initialised model of this config "
                                    "(tiny, small, micro)")
    p.add_argument("--montage", default=DEFAULT_MONTAGE,
                   help=f"channel montage: a built-in name (tcp22, tcp20, apava16, ...) or a text file of "
                        f"channel names (default {DEFAULT_MONTAGE})")
    p.add_argument("--n-samples", type=int, default=DEFAULT_N_SAMPLES,
                   help=f"samples per channel and window, a multiple of the patch size (default {DEFAULT_N_SAMPLES})")
    p.add_argument("--front-end", choices=["streamed", "stored", "window"],
                   help="streamed (default without --int8): the front end one patch at a time, GroupNorm "
                        "statistics in passes over the patches first (the convolutions computed again in each), "
                        "straight into the channel unification (no float window or token buffer held); stored "
                        "(default with --int8): each patch conv once, its outputs kept for the window (two "
                        "(S, C, E) buffers of RAM: int8 with --int8, float32 without); window: one graph over "
                        "the whole window (more RAM)")
    p.add_argument("--out", help="output directory (default out/lumamba-<target>)")
    p.add_argument("--mamba-form", choices=list(MAMBA_FORMS),
                   help="chunk (default with --int8) or step (default otherwise); step: one graph per token with "
                        "its conv and scan state (least RAM, token streaming); window: "
                        "each Mamba's projections over all tokens of the window (matrix-matrix GEMMs, only the "
                        "scan per token): fewer instructions, more RAM (README, Export); chunk: the window form "
                        "over chunks of --mamba-chunk tokens (GEMMs over a chunk, RAM that scales with the chunk). "
                        "Same model, same outputs")
    p.add_argument("--mamba-chunk", type=_positive_int, metavar="C",
                   help=f"tokens per chunk in --mamba-form chunk (default {DEFAULT_CHUNK}: the int8 GEMM kernels' "
                        f"per-MAC cost at about the step form's RAM)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="run fixed windows on the board (QEMU) or natively and compare with onnxruntime "
                        "(max abs error <= 1e-4; with --int8: bit-identical to the int8 golden model); "
                        "default: on for firmware targets; with --target onnx, compare onnxruntime with PyTorch")
    p.add_argument("--board-profile", metavar="NAME|FILE",
                   help="real chip whose flash and RAM the build must fit: a board name, a chip name "
                        "(firmware/chips: nrf52840, stm32f407vg, alif-e7-m55, gap9) or a JSON file with a \"target\" object (name, flash_bytes, "
                        "ram_bytes); default: the board's own (cortex-m: Ambiq Apollo4 Plus)")
    p.add_argument("--no-fit-check", action="store_true",
                   help="keep a project that does not fit the chip (the report still says by how much)")
    p.add_argument("--app", choices=("test", "demo"), default="test",
                   help="test: the test application only (fixed windows, verification); demo: also build the "
                        "streaming demo ELF (build/<board>/lumamba-demo.elf, continuous int16 samples in over the "
                        "UART, one decision per hop out; lumamba-stream drives it)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed for the --verify run (default 1800)")
    p.add_argument("--profile", action="store_true",
                   help="after verification, profile the project on its emulated board: instructions per window "
                        "per graph and kernel (printed, and profile.json); not for --target onnx or host")
    p.add_argument("--int8", action="store_true",
                   help="int8 weights and activations (firmware targets); --verify then requires logits "
                        "bit-identical to the int8 golden model")
    p.add_argument("--calib-data", metavar="DIR|FILE.npz",
                   help="with --int8: calibration windows from a window cache (lumamba-data prepare), a .npz or "
                        "a TUAB-style EDF tree; default: a generated synthetic corpus")
    p.add_argument("--calib-windows", type=int,
                   help=f"with --int8: number of calibration windows (default {DEFAULT_CALIB_WINDOWS}, or all train windows "
                        "of a smaller source)")
    p.add_argument("--quant-config", metavar="FILE",
                   help="with --int8: JSON/TOML quantisation config moving layers between int8 and float "
                        "(quant/README.md), e.g. {\"float\": [\"classifier.fc3\"]}")
    p.add_argument("--max-drift", type=float,
                   help="with --int8: largest allowed |AUROC_int8 - AUROC_float| on the calibration source's "
                        f"test windows (default {DEFAULT_MAX_DRIFT})")
    p.add_argument("--min-agreement", type=float,
                   help="with --int8: smallest allowed fraction of test windows whose int8 label equals the float "
                        "label, e.g. 0.99 (default 0: not gated)")
    p.add_argument("--precision", choices=["auto", "int8"],
                   help="with --int8: auto (default) keeps the most sensitive layers float until --target-sqnr "
                        "within --flash-budget (quant/README.md); int8: every learned layer int8")
    p.add_argument("--target-sqnr", type=float,
                   help="with --int8: logit SQNR (dB, on held-out calibration windows) of the automatic mode (default 20)")
    p.add_argument("--flash-budget", type=float,
                   help="with --int8: extra weight bytes the automatic mode may spend, as a fraction of the "
                        "all-int8 model (default 0.05)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 1 export failed, 2 bad options)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.app == "demo" and TARGETS[args.target] is None:
        parser.error("--app demo needs a firmware target, not --target onnx")
    if args.int8 and TARGETS[args.target] is None:
        parser.error(f"--int8 needs a firmware target ({', '.join(t for t, b in TARGETS.items() if b)}), "
                     f"not --target {args.target}")
    int8_only = {"--calib-data": args.calib_data, "--calib-windows": args.calib_windows,
                 "--quant-config": args.quant_config, "--max-drift": args.max_drift,
                 "--min-agreement": args.min_agreement, "--precision": args.precision,
                 "--target-sqnr": args.target_sqnr, "--flash-budget": args.flash_budget}
    given = [name for name, value in int8_only.items() if value is not None]
    if not args.int8 and given:
        parser.error(f"{', '.join(given)}: only with --int8")
    if args.front_end is None:   # int8 keeps the conv outputs as int8 codes: a quarter of float32's RAM
        args.front_end = "stored" if args.int8 else "streamed"
    args.calib_windows_given = args.calib_windows is not None
    if args.calib_windows is None:
        args.calib_windows = DEFAULT_CALIB_WINDOWS
    if args.calib_windows < 1:
        parser.error(f"--calib-windows {args.calib_windows}: must be >= 1")
    if args.max_drift is None:
        args.max_drift = DEFAULT_MAX_DRIFT
    if not 0 <= args.max_drift <= 1:
        parser.error(f"--max-drift {args.max_drift}: must be between 0 and 1 (an AUROC difference)")
    if args.timeout <= 0:
        parser.error(f"--timeout {args.timeout:g}: must be a positive number of seconds")
    if args.profile and (TARGETS[args.target] is None or TARGETS[args.target] == "host"):
        parser.error(f"--profile needs an emulated board with an instruction counter (cortex-m, cortex-m55, "
                     f"riscv), not --target {args.target}")
    _int8_precision_defaults(parser, args)
    _mamba_form_defaults(parser, args)
    if args.verify is None:
        args.verify = TARGETS[args.target] is not None
    if args.out is None:
        args.out = f"out/lumamba-{args.target}"
    try:
        check_output_dir(Path(args.out))
    except OutputDirError as e:
        parser.error(str(e))
    from lumamba.export.project.build import BuildError, ToolchainError
    from lumamba.export.project.qemu import FirmwareRunError
    from lumamba.export.verify import VerificationError
    try:
        run(args)
    except (ExportError, ValueError, FileNotFoundError, ToolchainError, BuildError, FirmwareRunError,
            VerificationError) as e:
        print(f"lumamba-export: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:   # Ctrl-C, or SIGTERM/SIGHUP (output_dir.termination_as_interrupt)
        reason = f" ({e})" if str(e) else ""
        print(f"lumamba-export: interrupted{reason}; {args.out} was not changed", file=sys.stderr)
        return 130
    return 0


def _mamba_form_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--mamba-form: chunk for int8 firmware (fewer instructions at about the step form's RAM,
    BENCHMARKS "Chunked window-form Mamba"), else step; --mamba-chunk only with the chunk form."""
    if args.mamba_form is None:
        args.mamba_form = "chunk" if args.int8 else "step"
    if args.mamba_chunk is not None and args.mamba_form != "chunk":
        parser.error(f"--mamba-chunk: only with --mamba-form chunk (the Mamba form is {args.mamba_form})")
    if args.mamba_chunk is None:
        args.mamba_chunk = DEFAULT_CHUNK


def _int8_precision_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Defaults and range checks of --min-agreement, --precision, --target-sqnr, --flash-budget."""
    from lumamba.quant.auto_precision import DEFAULT_BUDGET, DEFAULT_TARGET_DB
    args.min_agreement = 0.0 if args.min_agreement is None else args.min_agreement
    args.precision = args.precision or "auto"
    args.target_sqnr = DEFAULT_TARGET_DB if args.target_sqnr is None else args.target_sqnr
    args.flash_budget = DEFAULT_BUDGET if args.flash_budget is None else args.flash_budget
    if not 0 <= args.min_agreement <= 1:
        parser.error(f"--min-agreement {args.min_agreement}: must be between 0 and 1 (a fraction of windows)")
    if not -20 <= args.target_sqnr <= 120:
        parser.error(f"--target-sqnr {args.target_sqnr}: must be between -20 and 120 dB")
    if not 0 <= args.flash_budget <= 10:
        parser.error(f"--flash-budget {args.flash_budget}: must be between 0 and 10 (a fraction of the weights)")


if __name__ == "__main__":
    sys.exit(main())
