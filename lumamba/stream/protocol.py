"""The demo firmware's output (firmware/app/demo_main.c's header comment) as records.

Lines are ``KEY field=value ...``; lines of other programs (QEMU's warnings) are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ProtocolError(RuntimeError):
    """The firmware printed a record that does not follow the demo's format."""


@dataclass(frozen=True)
class StreamHeader:
    """The STREAM line: what the firmware was built with."""
    channels: int
    window: int
    hop: int
    sfreq: int
    classes: int
    uv_per_count: np.float32
    ring: int


@dataclass(frozen=True)
class Decision:
    """One DECISION line."""
    window: int
    start: int                      # first instant of the window, counted from the stream's start
    decision: int | None            # argmax of the logits; None if lumamba_infer failed
    logits: np.ndarray | None       # float32 (n_classes,), exact bits
    count: int                      # instructions (QEMU, RISC-V) or cycles (Cortex-M silicon)
    count_unit: str                 # "insns" or "cycles"
    overruns: int
    frame_errors: int
    lost_frames: int
    status: str = "OK"


@dataclass
class Gap:
    """A FRAMEGAP line: frames seq..seq+frames-1 never arrived."""
    seq: int
    frames: int


@dataclass
class DemoLog:
    """Everything one run printed."""
    header: StreamHeader | None = None
    decisions: list[Decision] = field(default_factory=list)
    frame_errors: list[str] = field(default_factory=list)   # FRAMEERR kinds, in order
    gaps: list[Gap] = field(default_factory=list)
    overruns: list[tuple[int, int]] = field(default_factory=list)  # (window, skipped)
    end: dict[str, int] | None = None


def _fields(args: list[str], line: str) -> dict[str, str]:
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ProtocolError(f"field {arg!r} is not key=value in: {line}")
        out[key] = value
    return out


def _bits(hex_values: str) -> np.ndarray:
    return np.array([int(h, 16) for h in hex_values.split(",")], dtype=np.uint32).view(np.float32)


def parse_line(line: str, log: DemoLog) -> str | None:
    """Add one output line to ``log``; returns its key if it was a demo record, else None."""
    parts = line.split()
    if not parts or parts[0] not in ("STREAM", "DECISION", "FRAMEERR", "FRAMEGAP", "OVERRUN", "END", "INIT"):
        return None
    key = parts[0]
    try:
        if key == "INIT":
            raise ProtocolError(f"lumamba_init() failed: {line}")
        f = _fields(parts[1:], line)
        if key == "STREAM":
            log.header = StreamHeader(int(f["channels"]), int(f["window"]), int(f["hop"]), int(f["sfreq"]),
                                      int(f["classes"]), _bits(f["uv_per_count"])[0], int(f["ring"]))
        elif key == "DECISION":
            unit = "cycles" if "cycles" in f else "insns"
            logits = _bits(f["logits"]) if "logits" in f else None
            log.decisions.append(Decision(
                window=int(f["window"]), start=int(f["start"]),
                decision=int(f["class"]) if "class" in f else None, logits=logits,
                count=int(f[unit]), count_unit=unit, overruns=int(f["overruns"]),
                frame_errors=int(f["frame_errors"]), lost_frames=int(f["lost_frames"]),
                status=f.get("status", "OK")))
        elif key == "FRAMEERR":
            log.frame_errors.append(f["kind"])
        elif key == "FRAMEGAP":
            log.gaps.append(Gap(int(f["seq"]), int(f["frames"])))
        elif key == "OVERRUN":
            log.overruns.append((int(f["window"]), int(f["skipped"])))
        elif key == "END":
            log.end = {k: int(v) for k, v in f.items() if v.isdigit()}
    except (KeyError, ValueError) as exc:
        raise ProtocolError(f"malformed {key} record ({exc}): {line}") from None
    return key
