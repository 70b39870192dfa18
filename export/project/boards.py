"""Board profiles: compiler, flags, emulated memory map, QEMU command and real-board limits.

Each profile is a JSON file in lumamba/firmware/boards/ (the single source of truth; the make
fragments of a firmware project are rendered from it by lumamba.export.project.build). A profile has two
memory descriptions that must not be confused:

- ``emulator``: where the image lives in the QEMU machine. It is chosen large enough for float
  models (tens of MiB) and says which emulated memory stands in for flash.
- ``target``: flash and RAM of a representative real board, which the memory report checks.

Either may describe an external, execute-in-place flash (QSPI/OSPI/MSPI NOR): the target's
``external_flash`` names the part, its size and where the chip maps it; the emulator's
``external_flash`` is the stretch of emulated memory that stands in for it. Weights that do not
fit the internal flash go there (lumamba.export.project.flash_regions).

Other real chips, checked with `lumamba-export --board-profile NAME`, are JSON files in
lumamba/firmware/chips/ holding their limits (name, flash_bytes, ram_bytes, notes) and memory map.

Every profile, board or chip, also says what one int16 sample the firmware receives means:
``"adc": {"uv_per_count": <microvolts per count>, "source": "<front-end part and datasheet, or
why the value is a convention>"}``. The build passes it to the firmware as
LUMAMBA_ADC_UV_PER_COUNT (the demo converts counts to microvolts with it before normalising).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
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
    external_flash: MemoryRegion | None = None  # stands in for the target's external flash

    def render(self, elf: str) -> list[str]:
        """The QEMU command line running ``elf``."""
        return [arg.format(elf=elf, icount_shift=self.icount_shift) for arg in self.command]


@dataclass(frozen=True)
class ExternalFlash:
    """An execute-in-place flash beside the chip (the board carries it, not the chip)."""
    part: str     # the memory part and how it is attached
    bytes: int
    origin: int   # where the chip maps it (its XIP aperture)
    source: str   # where these figures come from


@dataclass(frozen=True)
class Target:
    """Limits of a representative real board, for the memory report."""
    name: str
    flash_bytes: int   # internal flash (or MRAM)
    ram_bytes: int
    notes: str
    external_flash: ExternalFlash | None = None


@dataclass(frozen=True)
class Adc:
    """What one int16 count of the board's EEG front end is."""
    uv_per_count: float
    source: str               # the front-end part and its datasheet, or why the value is a convention

    @property
    def c_literal(self) -> str:
        """The scale as a C float literal (shortest decimal that reads back as this double)."""
        return f"{self.uv_per_count!r}f"


class ProfileError(ValueError):
    """A board or chip profile with a missing or bad value; the message names the file."""


def _adc(d: dict, path: Path) -> Adc:
    """The profile's "adc" object, checked; ProfileError naming `path` otherwise."""
    adc = d.get("adc")
    if not isinstance(adc, dict):
        raise ProfileError(f"{path}: no \"adc\" object; add \"adc\": {{\"uv_per_count\": <microvolts per int16 "
                           "count>, \"source\": \"<front-end part and datasheet>\"}")
    value = adc.get("uv_per_count")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 \
            or not 1e-6 <= value <= 1e6:
        raise ProfileError(f"{path}: adc.uv_per_count must be a positive number of microvolts per int16 count "
                           f"(1e-6..1e6), got {value!r}")
    source = adc.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ProfileError(f"{path}: adc.source must say where adc.uv_per_count comes from (the front-end part "
                           "and its datasheet, or that it is a convention)")
    return Adc(float(value), source)


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
    adc: Adc | None = None            # every profile file has one (load_board checks)

    @property
    def tool_prefix(self) -> str:
        """Prefix of the binutils of this compiler ("arm-none-eabi-" or "")."""
        return self.compiler[: -len("gcc")] if self.compiler.endswith("gcc") else ""

    @property
    def defines(self) -> dict[str, int | str]:
        """Preprocessor definitions the firmware needs: the ADC scale and how to read its counter."""
        defines: dict[str, int | str] = {}
        if self.adc is not None:
            defines["LUMAMBA_ADC_UV_PER_COUNT"] = self.adc.c_literal
        if self.emulator is None:
            return defines
        defines["LUMAMBA_QEMU_ICOUNT_SHIFT"] = self.emulator.icount_shift
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


def parse_target(t: dict) -> Target:
    """A ``target`` object of a profile; KeyError/ValueError/TypeError on a missing or bad field,
    ValueError on sizes that are not positive."""
    ext = t.get("external_flash")
    external = None if ext is None else ExternalFlash(
        part=str(ext["part"]), bytes=int(ext["bytes"]), origin=int(str(ext["origin"]), 0), source=str(ext["source"]))
    target = Target(name=str(t["name"]), flash_bytes=int(t["flash_bytes"]), ram_bytes=int(t["ram_bytes"]),
                    notes=str(t.get("notes", "")), external_flash=external)
    sizes = {"flash_bytes": target.flash_bytes, "ram_bytes": target.ram_bytes,
             "external_flash.bytes": external.bytes if external else 1}
    bad = [f"{k} {v}" for k, v in sizes.items() if v <= 0]
    if bad:
        raise ValueError(f"{', '.join(bad)} must be positive")
    return target


def _chip_profile(name: str) -> tuple[dict, Path]:
    """The JSON of the real chip ``name`` (one of CHIPS) and its path; ValueError naming the known chips otherwise."""
    if name not in CHIPS:
        raise ValueError(f"unknown chip {name!r}; known chips: {', '.join(CHIPS)}")
    path = CHIPS_DIR / f"{name}.json"
    return json.loads(path.read_text()), path


def load_chip(name: str) -> Target:
    """The real chip ``name`` (one of CHIPS); ValueError naming the known chips otherwise.

    The RAM limit is the linker's data region (memory "ram": data, bss, heap and stack, where the
    model's arena goes) when it is smaller than the chip's total (``ram_bytes``, the datasheet
    figure): the STM32F407's 64 KiB CCM is a separate region that the arena cannot span, so a
    model checked against all 192 KiB could pass the fit check and still not link."""
    d, path = _chip_profile(name)
    _adc(d, path)
    target = parse_target(d)
    region = int(d["memory"]["ram"]["size"], 16)
    if region < target.ram_bytes:
        target = replace(target, ram_bytes=region, notes=(
            f"{target.notes}; RAM limit {region:,} bytes: the linker's data region, of {target.ram_bytes:,} on the chip"))
    return target


def chip_adc(name: str) -> Adc:
    """The ADC scale of the real chip ``name``'s EEG front end (its profile's "adc")."""
    return _adc(*_chip_profile(name))


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
                            flash=_region(e["flash"]), ram=_region(e["ram"]),
                            external_flash=_region(e["external_flash"]) if "external_flash" in e else None)
    if d["target"] is not None:
        target = parse_target(d["target"])
    return Board(name=d["name"], description=d["description"], notes=d.get("notes", ""),
                 compiler=d["compiler"], int8_gemm=d.get("int8_gemm", "c_4x4"),
                 cflags=tuple(d["cflags"]), ldflags=tuple(d["ldflags"]), ldlibs=tuple(d["ldlibs"]),
                 sources=tuple(d["sources"]), packages=dict(d["packages"]),
                 emulator=emulator, target=target, adc=_adc(d, path))
