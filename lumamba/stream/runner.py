"""Build the demo ELF of a firmware project, start its board with the UART on a pipe, stream
framed counts into it and collect what it prints.

The emulated boards' profiles start QEMU with ``-serial none``; here the first UART becomes
``-serial stdio``, so the frames go to QEMU's stdin, and the decisions come back through
semihosting on its stdout/stderr. QEMU gives the guest a byte only once it has read the previous
one, so in ``fast`` mode the host's writes simply wait while the model runs (nothing is lost); in
real time the host sends each frame when its last instant is due.
"""
from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lumamba.export.project.boards import Board, load_board
from lumamba.export.project.build import FIRMWARE_DIR, build_demo_app, check_toolchain
from lumamba.export.project.qemu import run_command

from .framing import encode_stream
from .protocol import DemoLog, ProtocolError, StreamHeader, parse_line



class StreamError(RuntimeError):
    """The demo did not build, start, or finish the stream."""


def build_demo(project: str | Path, board: Board | str, defines: dict[str, str] | None = None,
               jobs: int = 2) -> Path:
    """`make demo-app` in ``project`` for ``board`` (refreshing its firmware copy); the ELF path.
    The emulator must be installed too, since the demo is about to run on it."""
    board = board if isinstance(board, Board) else load_board(board)
    check_toolchain(board, need_emulator=board.emulator is not None)
    return build_demo_app(project, board, defines, jobs=jobs)


def project_adc_scale(project: str | Path, board: Board | str) -> np.float32:
    """The microvolts per count the project's demo is built with for ``board``: the
    LUMAMBA_ADC_UV_PER_COUNT its firmware/boards/BOARD.mk passes (rendered from the board
    profile's adc.uv_per_count); StreamError naming the file when it is missing or bad."""
    name = board.name if isinstance(board, Board) else board
    mk = Path(project) / FIRMWARE_DIR / "boards" / f"{name}.mk"
    text = mk.read_text(encoding="utf-8") if mk.is_file() else ""
    found = re.findall(r"-DLUMAMBA_ADC_UV_PER_COUNT=(\S+?)f?(?:\s|$)", text)
    try:
        value = np.float32(float(found[-1])) if found else None
    except ValueError:
        value = None
    if value is None or not np.isfinite(value) or value <= 0:
        raise StreamError(f"{mk}: no valid -DLUMAMBA_ADC_UV_PER_COUNT=<microvolts per count> (it is rendered from "
                          f"the adc.uv_per_count of firmware/boards/{name}.json); rebuild the project")
    return value


def demo_command(elf: str | Path, board: Board | str) -> list[str]:
    """The command running the demo ``elf``, its first UART on stdin/stdout."""
    cmd = run_command(elf, board)
    for i in range(len(cmd) - 1):
        if cmd[i] == "-serial" and cmd[i + 1] == "none":
            return cmd[:i + 1] + ["stdio"] + cmd[i + 2:]
    return cmd


def _pump(stream, lines: queue.Queue) -> None:
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode(errors="replace").rstrip("\r\n"))
    lines.put(None)


def stream_to_board(elf: str | Path, board: Board | str, make_counts: Callable[[StreamHeader], np.ndarray],
                    *, fast: bool = True, instants_per_frame: int = 8,
                    mangle: Callable[[list[bytes]], list[bytes]] | None = None,
                    on_line: Callable[[str, DemoLog], None] | None = None,
                    timeout_s: float = 600.0) -> tuple[DemoLog, np.ndarray, str]:
    """Run the demo, wait for its STREAM header, stream ``make_counts(header)`` ((N, C) int16) as
    frames (``mangle`` may alter them: tests corrupt one), and return the parsed log, the counts
    sent and the raw output. ``on_line`` sees every demo record as it arrives (progress)."""
    cmd = demo_command(elf, board)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise StreamError(f"cannot start {cmd[0]}: {exc}") from None
    lines: queue.Queue = queue.Queue()
    pumps = [threading.Thread(target=_pump, args=(s, lines), daemon=True) for s in (proc.stdout, proc.stderr)]
    for t in pumps:
        t.start()
    log, output, closed = DemoLog(), [], 0
    counts = np.zeros((0, 0), np.int16)
    writer: threading.Thread | None = None
    write_error: list[BaseException] = []
    deadline = time.monotonic() + timeout_s

    def write(frames: list[bytes], period: float | None) -> None:
        start = time.monotonic()
        try:
            for i, frame in enumerate(frames):
                if period is not None:
                    due = start + (i + 1) * period
                    time.sleep(max(0.0, due - time.monotonic()))
                proc.stdin.write(frame)
                proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:  # the board stopped reading: its output says why
            write_error.append(exc)

    try:
        while closed < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamError(f"{' '.join(cmd)}: no END within {timeout_s:g} s; last output:\n"
                                  + "\n".join(output[-20:]))
            try:
                line = lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line is None:
                closed += 1
                continue
            output.append(line)
            key = parse_line(line, log)
            if key is None:
                continue
            if on_line is not None:
                on_line(key, log)
            if key == "STREAM" and writer is None:
                counts = make_counts(log.header)
                if counts.ndim != 2 or counts.shape[1] != log.header.channels:
                    raise StreamError(f"the stream has {counts.shape[1]} channels, the firmware expects "
                                      f"{log.header.channels}")
                frames = encode_stream(counts, instants_per_frame)
                if mangle is not None:
                    frames = mangle(frames)
                period = None if fast else instants_per_frame / log.header.sfreq
                writer = threading.Thread(target=write, args=(frames, period), daemon=True)
                writer.start()
            if key == "END":
                break
    except ProtocolError as exc:
        raise StreamError(str(exc)) from None
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = "\n".join(output)
    if log.header is None:
        raise StreamError(f"{' '.join(cmd)} printed no STREAM header (exit status {proc.returncode}); "
                          f"output:\n{text[-2000:]}")
    if log.end is None:
        raise StreamError(f"{' '.join(cmd)} stopped before the end of the stream (exit status "
                          f"{proc.returncode}); output:\n{text[-2000:]}")
    return log, counts, text
