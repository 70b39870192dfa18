"""Run a firmware ELF (QEMU for emulated boards, natively for host) and parse what it printed.

The test application (firmware/app/main.c) prints one record per line: LUMAMBA, LOGITS,
STATUS, INSNS, INIT and DONE; its header comment defines them. QEMU sends semihosting output to
its stderr, a native run to stdout; both streams are parsed, and lines of other programs (QEMU's
own warnings) are ignored.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .boards import Board, load_board


class FirmwareRunError(RuntimeError):
    """The firmware crashed, hung, or printed output that does not follow the protocol."""


@dataclass
class RunResult:
    """What one run of the test application reported."""
    logits: np.ndarray    # (n_windows, n_classes) float32; NaN rows where lumamba_infer failed
    insns: list[int]      # instructions per window; empty on boards without a counter (host)
    statuses: list[int]   # lumamba_infer status per window (0 = LUMAMBA_OK)
    exit_status: int      # the DONE status, which the process also exited with
    stdout: str           # the firmware's output

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def run_command(elf: str | Path, board: Board | str) -> list[str]:
    """The command line that runs ``elf`` for ``board``."""
    board = board if isinstance(board, Board) else load_board(board)
    elf = str(Path(elf).resolve())
    return board.emulator.render(elf) if board.emulator else [elf]


def run_elf(elf: str | Path, board: Board | str, timeout_s: float = 60.0) -> RunResult:
    """Run ``elf`` on ``board`` and return its logits, instruction counts and statuses.

    Raises FirmwareRunError if it does not finish within ``timeout_s`` seconds, if its output
    lacks the final DONE line (a crash or fault), or if its exit status disagrees with DONE.
    """
    if not Path(elf).is_file():
        raise FileNotFoundError(f"{elf} does not exist; build it with lumamba.export.project.build.build_project")
    cmd = run_command(elf, board)
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        out = _text(exc.stdout) + _text(exc.stderr)
        raise FirmwareRunError(f"{' '.join(cmd)} did not finish within {timeout_s} s; "
                               f"last output:\n{out[-2000:]}") from None
    output = proc.stdout + proc.stderr
    result = parse_output(output, what=" ".join(cmd))
    if proc.returncode != result.exit_status:
        raise FirmwareRunError(f"{' '.join(cmd)} exited with status {proc.returncode} but reported "
                               f"DONE {result.exit_status}; output:\n{output[-2000:]}")
    return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def parse_output(output: str, what: str = "firmware") -> RunResult:
    """Parse the test application's output (see firmware/app/main.c)."""
    def fail(reason: str) -> FirmwareRunError:
        return FirmwareRunError(f"{what}: {reason}; output:\n{output[-2000:]}")

    logits = None
    insns: dict[int, int] = {}
    statuses: dict[int, int] = {}
    done = None
    for fields in (line.split() for line in output.splitlines()):
        if not fields:
            continue
        key, args = fields[0], fields[1:]
        if key == "LUMAMBA":
            n_windows, n_classes = int(args[0]), int(args[1])
            logits = np.full((n_windows, n_classes), np.nan, dtype=np.float32)
        elif key == "INIT":
            raise fail(f"lumamba_init() failed with status {args[0]} ({args[1]})")
        elif key in ("LOGITS", "STATUS", "INSNS"):
            if logits is None:
                raise fail(f"{key} line before the LUMAMBA header")
            w = int(args[0])
            if not 0 <= w < logits.shape[0]:
                raise fail(f"window index {w} out of range")
            if key == "LOGITS":
                if len(args) - 1 != logits.shape[1]:
                    raise fail(f"window {w}: {len(args) - 1} logits, expected {logits.shape[1]}")
                bits = np.array([int(h, 16) for h in args[1:]], dtype=np.uint32)
                logits[w] = bits.view(np.float32)
                statuses[w] = 0
            elif key == "STATUS":
                statuses[w] = int(args[1])
            else:
                insns[w] = int(args[1])
        elif key == "DONE":
            done = int(args[0])
    if logits is None or done is None:
        raise fail("no LUMAMBA header or no DONE line (did the firmware crash?)")
    n = logits.shape[0]
    if sorted(statuses) != list(range(n)):
        raise fail(f"results for {len(statuses)} of {n} windows")
    if insns and sorted(insns) != list(range(n)):
        raise fail(f"instruction counts for {len(insns)} of {n} windows")
    return RunResult(logits=logits, insns=[insns[w] for w in sorted(insns)],
                     statuses=[statuses[w] for w in range(n)], exit_status=done, stdout=output)
