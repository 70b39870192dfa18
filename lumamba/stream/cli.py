"""`lumamba-stream`: stream a recording through the demo firmware of a project on an emulated
board and check every decision against the reference (see lumamba.stream)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from lumamba.export.project.boards import BOARDS, ProfileError, load_board
from lumamba.export.project.build import BuildError, ToolchainError
from lumamba.export.onnx.manifest import Manifest

from .framing import MAX_INSTANTS
from .plot import plot_stream
from .recording import Recording, RecordingError, load_recording
from .reference import Reference, apply_gaps, device_windows, quantise
from .runner import StreamError, build_demo, project_adc_scale, stream_to_board

EMULATED = tuple(b for b in BOARDS if b != "host")


class UsageError(ValueError):
    """A bad option value or project; the message names it."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lumamba-stream",
        description="Stream an EEG recording (EDF or .npz) through the demo firmware of a project built by "
                    "lumamba-export on an emulated board, read the decisions back and check their logits "
                    "against the int8 golden model (bit for bit) or onnxruntime (float projects, within 1e-4).")
    p.add_argument("--project", required=True, help="firmware project directory written by lumamba-export")
    p.add_argument("--recording", required=True, help="EDF file or .npz (continuous: data, channels, sfreq "
                                                       "[, labels]; or a generic window set: x, y, channels)")
    p.add_argument("--out", help="output directory for decisions.json and stream.png (default PROJECT/stream)")
    p.add_argument("--board", default="cortex-m4f", help=f"board to run on: {', '.join(BOARDS)} (default cortex-m4f)")
    p.add_argument("--fast", action="store_true", help="send as fast as the board takes the samples "
                                                       "(default: in real time, at the sampling rate)")
    p.add_argument("--hop", type=int, help="instants between decisions, compiled into the demo (default: one second)")
    p.add_argument("--uv-per-count", type=float, help="microvolts per int16 count, compiled into the demo "
                                                      "(default: the board profile's adc.uv_per_count, as the "
                                                      "project's firmware/boards/BOARD.mk passes it)")
    p.add_argument("--max-windows", type=int, help="stream only enough of the recording for this many decisions")
    p.add_argument("--frame-instants", type=int, default=8, help=f"sample instants per frame, 1..{MAX_INSTANTS} "
                                                                 "(default 8)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed for the run (default 3600)")
    return p


def _check_args(args: argparse.Namespace) -> tuple[Path, Path, Manifest]:
    project = Path(args.project)
    if not (project / "Makefile").is_file() or not (project / "onnx" / "manifest.json").is_file():
        raise UsageError(f"--project {project}: not a firmware project written by lumamba-export "
                         "(no Makefile or onnx/manifest.json)")
    if args.board not in BOARDS:
        raise UsageError(f"--board {args.board!r}: unknown board; known boards: {', '.join(BOARDS)}")
    if not 1 <= args.frame_instants <= MAX_INSTANTS:
        raise UsageError(f"--frame-instants {args.frame_instants}: must be 1..{MAX_INSTANTS}")
    if args.hop is not None and args.hop < 1:
        raise UsageError(f"--hop {args.hop}: must be at least 1")
    if args.uv_per_count is not None and not args.uv_per_count > 0:
        raise UsageError(f"--uv-per-count {args.uv_per_count}: must be positive")
    if args.max_windows is not None and args.max_windows < 1:
        raise UsageError(f"--max-windows {args.max_windows}: must be at least 1")
    out = Path(args.out) if args.out else project / "stream"
    return project, out, Manifest.load(project / "onnx")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    project, out, manifest = _check_args(args)
    channels = list(manifest.channel_names)
    recording: Recording = load_recording(args.recording, channels)
    n_total = recording.uv.shape[1]
    if n_total < manifest.n_samples:
        raise RecordingError(f"{args.recording}: {n_total / recording.sfreq:.2f} s after preprocessing, "
                             f"one window needs {manifest.n_samples / recording.sfreq:g} s")
    board = load_board(args.board)
    defines = {}
    if args.hop is not None:
        defines["LUMAMBA_STREAM_HOP"] = str(args.hop)
    if args.uv_per_count is not None:
        defines["LUMAMBA_ADC_UV_PER_COUNT"] = f"{args.uv_per_count!r}f"
    print(f"[1/3] building the demo of {project} for {board.name}", flush=True)
    elf = build_demo(project, board, defines)
    scale = np.float32(args.uv_per_count) if args.uv_per_count is not None else project_adc_scale(project, board)
    method = manifest.preprocess["normalisation"]
    reference = Reference(project)
    state: dict = {}

    def make_counts(header):
        if header.window != manifest.n_samples or header.channels != len(channels):
            raise StreamError(f"{elf}: built for {header.channels} channels x {header.window} samples, the "
                              f"project's model takes {len(channels)} x {manifest.n_samples}; rebuild it")
        if header.uv_per_count != scale:
            raise StreamError(f"{elf}: converts counts at {float(header.uv_per_count):g} uV, the project's board "
                              f"profile says {float(scale):g}; rebuild it")
        n = n_total
        if args.max_windows is not None:
            n = min(n, header.window + (args.max_windows - 1) * header.hop)
        counts, clipped = quantise(recording.uv[:, :n], header.uv_per_count)
        state.update(header=header, clipped=clipped,
                     expected=1 + (n - header.window) // header.hop)
        bar.total = state["expected"]
        bar.refresh()
        return counts

    mode = "as fast as the board takes it" if args.fast else "in real time"
    print(f"[2/3] streaming {recording.source} ({n_total / recording.sfreq:.1f} s, {len(channels)} channels) "
          f"to {board.name} {mode}", flush=True)
    bar = tqdm(total=0, unit="decision", file=sys.stderr, disable=None)

    def on_line(key, log):
        if key == "DECISION":
            bar.update(1)

    try:
        log, counts, _ = stream_to_board(elf, board, make_counts, fast=args.fast,
                                         instants_per_frame=args.frame_instants, on_line=on_line,
                                         timeout_s=args.timeout)
    finally:
        bar.close()
    header = state["header"]
    print(f"[3/3] checking {len(log.decisions)} decisions against {reference.name}", flush=True)
    held = apply_gaps(counts, [(g.seq, g.frames) for g in log.gaps], args.frame_instants)
    done = [d for d in log.decisions if d.logits is not None]
    ref = reference(device_windows(held, [d.start for d in done], header.window, header.uv_per_count, method)) \
        if done else np.zeros((0, header.classes), np.float32)
    ref_of = {d.window: r for d, r in zip(done, ref)}
    records, agree = [], 0
    for d in log.decisions:
        r = ref_of.get(d.window)
        ok = r is not None and reference.agrees(d.logits, r)
        agree += ok
        end = d.start + header.window
        label = None
        if recording.labels is not None:
            seg = recording.labels[d.start:end]
            seg = seg[seg >= 0]
            label = int(np.bincount(seg).argmax()) if len(seg) else None
        records.append({
            "window": d.window, "start_s": d.start / header.sfreq, "end_s": end / header.sfreq,
            "hop_s": header.hop / header.sfreq, "class": d.decision, "status": d.status,
            "logits": None if d.logits is None else [float(v) for v in d.logits],
            "logits_bits": None if d.logits is None else [f"{int(v):08x}" for v in d.logits.view(np.uint32)],
            "reference_logits": None if r is None else [float(v) for v in r],
            "agrees": ok, d.count_unit: d.count, "overruns": d.overruns,
            "frame_errors": d.frame_errors, "lost_frames": d.lost_frames, "label": label})
    out.mkdir(parents=True, exist_ok=True)
    counts_per = [d.count for d in log.decisions]
    summary = {
        "project": str(project), "recording": recording.source, "board": board.name,
        "mode": "fast" if args.fast else "real-time", "reference": reference.name,
        "comparison": "bit-exact" if reference.bit_exact else f"max abs error <= {reference.tolerance:g}",
        "channels": channels, "sfreq": header.sfreq, "window": header.window, "hop": header.hop,
        "uv_per_count": float(header.uv_per_count), "normalisation": method, "ring_instants": header.ring,
        "saturated_samples": state["clipped"], "frame_errors": log.frame_errors,
        "gaps": [{"seq": g.seq, "frames": g.frames} for g in log.gaps],
        "overruns": [{"window": w, "skipped": s} for w, s in log.overruns], "end": log.end,
        "n_decisions": len(records), "n_agree": agree, "decisions": records}
    _write_json(out / "decisions.json", summary)
    title = (f"{board.name}: {len(records)} decisions, hop {header.hop / header.sfreq:g} s, window "
             f"{header.window / header.sfreq:g} s; {agree}/{len(records)} agree with {reference.name}")
    plot_stream(out / "stream.png", recording.uv[:, :len(counts)], channels, header.sfreq, records,
                recording.labels[:len(counts)] if recording.labels is not None else None, title)
    unit = log.decisions[0].count_unit if log.decisions else "insns"
    mean = f"{int(np.mean(counts_per)):,} {'instructions' if unit == 'insns' else 'cycles'} per decision" \
        if counts_per else "no decision"
    errors = f"{len(log.frame_errors)} frame error(s), {sum(g.frames for g in log.gaps)} lost frame(s)"
    print(f"{len(records)} decisions on {board.name}: {agree} agree with {reference.name} "
          f"({summary['comparison']}); {mean}; {errors}; "
          f"{sum(s for _, s in log.overruns)} overrun window(s)")
    print(f"wrote {out / 'decisions.json'} and {out / 'stream.png'}")
    if agree != len(records):
        bad = next(r for r in records if not r["agrees"])
        print(f"error: window {bad['window']} ({bad['start_s']:g}-{bad['end_s']:g} s): logits "
              f"{bad['logits']} differ from {reference.name}'s {bad['reference_logits']}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (UsageError, RecordingError, FileNotFoundError, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ToolchainError, BuildError, StreamError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
