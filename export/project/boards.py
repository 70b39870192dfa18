"""Board profiles: compiler, flags, emulated memory map, QEMU command and real-board limits.

Each profile is a JSON file in lumamba/firmware/boards/ (the single source of truth; the make
fragments of a firmware project are rendered from it by lumamba.export.project.build). A profile has two
memory descriptions that must not be confused:

- ``emulator``: where the image lives in the QEMU machine. It is chosen large enough for float
  models (tens of MiB) and says which emulated memory stands in for flash.
- ``target``: flash and RAM of a representative real board, which the memory report checks.

Other real chips, checked with `lumamba-export --board-profile NAME`, are JSON files in
lumamba/firmware/chips/ holding just a ``target`` object (name, flash_bytes, ram_bytes, notes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lumamba.firmware import ROOT as FIRMWARE_ROOT

BOARDS_DIR: Path = FIRMWARE_ROOT / "boards"
BOARDS: tuple[str, ...] = tuple(sorted(p.stem for p in BOARDS_DIR.glob("*.json")))
CHIPS_DIR: Path = FIRMWARE_ROOT / "chips"
CHIPS: tuple[str, ...] = tuple(sorted(p.stem for p in CHIPS_DIR.glob("*.json")))


@dataclass(frozen=True)
class MemoryRegion:
    """A region of the emulated machine's address space."""
    origin: int
    size: int
    memory: str  # what the emulated machine has there


@dataclass(frozen=True)
class Emulator:
    """How QEMU runs an ELF for this board."""
    machine: str
    command: tuple[str, ...]  # with {elf} and {icount_shift} placeholders
    icount_shift: int         # QEMU advances 2**shift ns of virtual time per instruction
    cpu_hz: int | None        # SysTick clock of the emulated Cortex-M (None: not a Cortex-M)
    flash: MemoryRegion
    ram: MemoryRegion  # .data, .bss, then the stack grows down from the top

    def render(self, elf: str) -> list[str]:
        """The QEMU command line running ``elf``."""
        return [arg.format(elf=elf, icount_shift=self.icount_shift) for arg in self.command]


@dataclass(frozen=True)
class Target:
    """Limits of a representative real board, for the memory report."""
    name: str
    flash_bytes: int
    ram_bytes: int
    notes: str


@dataclass(frozen=True)
class Board:
    """One board profile (see the module docstring)."""
    name: str
    description: str
    notes: str                        # why the profile is as it is
    compiler: str
    int8_gemm: str                    # int8 GEMM micro-kernel form the generated model calls (kernel_layout)
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    ldlibs: tuple[str, ...]
    sources: tuple[str, ...]          # extra firmware sources, relative to lumamba/firmware
    packages: dict[str, str]          # program or file -> Debian package that provides it
    emulator: Emulator | None         # None: runs natively (host)
    target: Target | None             # None: no memory limits (host)

    @property
    def tool_prefix(self) -> str:
        """Prefix of the binutils of this compiler ("arm-none-eabi-" or "")."""
        return self.compiler[: -len("gcc")] if self.compiler.endswith("gcc") else ""

    @property
    def defines(self) -> dict[str, int]:
        """Preprocessor definitions the firmware needs to interpret its counter."""
        if self.emulator is None:
            return {}
        defines = {"LUMAMBA_QEMU_ICOUNT_SHIFT": self.emulator.icount_shift}
        if self.emulator.cpu_hz is not None:
            defines["LUMAMBA_CPU_HZ"] = self.emulator.cpu_hz
        return defines

    @property
    def memory_ldflags(self) -> tuple[str, ...]:
        """Linker options placing picolibc's flash and RAM regions in the emulated machine."""
        if self.emulator is None:
            return ()
        e = self.emulator
        symbols = {"__flash": e.flash.origin, "__flash_size": e.flash.size,
                   "__ram": e.ram.origin, "__ram_size": e.ram.size}
        return tuple(f"-Wl,--defsym={name}={value:#x}" for name, value in symbols.items())


def _region(d: dict) -> MemoryRegion:
    return MemoryRegion(origin=int(d["origin"], 0), size=int(d["size"], 0), memory=d["memory"])


def _target(t: dict) -> Target:
    return Target(name=t["name"], flash_bytes=int(t["flash_bytes"]), ram_bytes=int(t["ram_bytes"]),
                  notes=t.get("notes", ""))


def load_chip(name: str) -> Target:
    """The real chip ``name`` (one of CHIPS); ValueError naming the known chips otherwise."""
    if name not in CHIPS:
        raise ValueError(f"unknown chip {name!r}; known chips: {', '.join(CHIPS)}")
    return _target(json.loads((CHIPS_DIR / f"{name}.json").read_text()))


def load_board(name: str) -> Board:
    """Load the profile ``name`` (one of BOARDS); ValueError naming the known boards otherwise."""
    path = BOARDS_DIR / f"{name}.json"
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    d = json.loads(path.read_text())
    if d["name"] != name:
        raise ValueError(f"{path} names itself {d['name']!r}, expected {name!r}")
    emulator = target = None
    if d["emulator"] is not None:
        e = d["emulator"]
        emulator = Emulator(machine=e["machine"], command=tuple(e["command"]),
                            icount_shift=int(e["icount_shift"]), cpu_hz=e["cpu_hz"],
                            flash=_region(e["flash"]), ram=_region(e["ram"]))
    if d["target"] is not None:
        target = _target(d["target"])
    return Board(name=d["name"], description=d["description"], notes=d.get("notes", ""),
                 compiler=d["compiler"], int8_gemm=d.get("int8_gemm", "c_4x4"),
                 cflags=tuple(d["cflags"]), ldflags=tuple(d["ldflags"]), ldlibs=tuple(d["ldlibs"]),
                 sources=tuple(d["sources"]), packages=dict(d["packages"]),
                 emulator=emulator, target=target)
