"""Place weights in flash regions: what the internal flash cannot hold goes to the board's external,
execute-in-place flash, and a linker script puts it there.

Every weight array is its own input section (``-fdata-sections``: ``.rodata.<symbol>``), so the
placement is a list of section names and needs no change to the generated C. The project's
linker script ``flash_regions.<board>.ld`` (firmware/project.mk passes it with ``-T`` when it
exists) gathers those sections into ``.lumamba_xip`` at the external region's address, in a
program header of its own, and then includes picolibc's script for everything else.

Which arrays move: the coldest first. A weight of a graph that runs once per window (front end,
output head) is fetched once per window; one of a per-token step graph once per token. Moving
the arrays with the fewest fetches per byte first keeps the external-flash traffic per window
smallest (for a fixed number of bytes to move this greedy order is optimal); among equals, the
largest first, so that few arrays move. The counts come from the manifest's schedule.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .boards import Board
from .build import elf_path, write_if_changed
from .memory_report import weight_sections

XIP_SECTION = ".lumamba_xip"
_WEIGHT_SECTION = re.compile(r"^\.rodata\.(lumamba_\w+)$")


class PlacementError(ValueError):
    """The weights do not fit the internal and the external flash together."""


@dataclass(frozen=True)
class WeightArray:
    """One weight array of a build: its input section, size and fetches per window."""
    section: str
    size: int
    fetches_per_window: int


@dataclass(frozen=True)
class Placement:
    """The weight arrays that go to the external flash."""
    external: tuple[WeightArray, ...]

    @property
    def external_bytes(self) -> int:
        return sum(a.size for a in self.external)

    @property
    def external_fetch_bytes(self) -> int:
        """Bytes read from the external flash per window (before any cache)."""
        return sum(a.size * a.fetches_per_window for a in self.external)


def linker_script_path(project_dir: str | Path, board: Board) -> Path:
    """Where the project keeps the placement for ``board`` (firmware/project.mk looks there)."""
    return Path(project_dir) / f"flash_regions.{board.name}.ld"


def graph_runs(manifest_path: str | Path) -> dict[str, int]:
    """How often each graph runs per window, from a manifest's schedule ({} without a manifest)."""
    path = Path(manifest_path)
    if not path.is_file():
        return {}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    per_loop = {"once": 1, "forward": int(manifest["n_patches"]), "reverse": int(manifest["n_patches"])}
    runs: dict[str, int] = {}
    for stage in manifest["schedule"]:
        span = stage.get("span")      # a loop over tokens a..b-1 only (the chunked Mamba form)
        n = span[1] - span[0] if span and stage["loop"] != "once" else per_loop.get(stage["loop"], 1)
        runs[stage["graph"]] = runs.get(stage["graph"], 0) + n
    return runs


def weight_arrays(sections: list[tuple[str, int]], runs: dict[str, int]) -> list[WeightArray]:
    """The weight arrays among linked input sections (name, size) of the weights objects; a
    symbol `lumamba_<graph>_<name>` is fetched as often as its graph runs (once if unknown)."""
    arrays = []
    for name, size in sections:
        m = _WEIGHT_SECTION.match(name)
        if m is None or size == 0:
            continue
        symbol = m.group(1)
        graph = max((g for g in runs if symbol.startswith(f"lumamba_{g}_")), key=len, default=None)
        arrays.append(WeightArray(name, size, runs.get(graph, 1) if graph else 1))
    return arrays


def plan_placement(arrays: list[WeightArray], over_bytes: int, board: Board) -> Placement:
    """Move the coldest arrays (see the module doc) until ``over_bytes`` of internal flash are
    freed. PlacementError names the region and the bytes over when that is impossible."""
    target = board.target
    if target is None or target.external_flash is None:
        raise PlacementError(f"board {board.name} has no external flash to place weights in")
    if board.emulator is not None and board.emulator.external_flash is None:
        raise PlacementError(f"board {board.name}: the emulated machine has no stand-in for the external flash")
    moved: list[WeightArray] = []
    freed = 0
    for a in sorted(arrays, key=lambda a: (a.fetches_per_window, -a.size, a.section)):
        if freed >= over_bytes:
            break
        moved.append(a)
        freed += a.size
    placement = Placement(tuple(moved))
    if freed < over_bytes:
        raise PlacementError(f"internal flash of {target.name}: over by {over_bytes - freed:,} bytes even with all "
                             f"{len(arrays)} weight arrays ({freed:,} bytes) in the external flash")
    capacity = target.external_flash.bytes
    if board.emulator is not None:
        capacity = min(capacity, board.emulator.external_flash.size)
    if placement.external_bytes > capacity:
        raise PlacementError(f"external flash of {target.name} ({target.external_flash.part}): needs "
                             f"{placement.external_bytes:,} bytes but has {capacity:,} (over by "
                             f"{placement.external_bytes - capacity:,} bytes)")
    return placement


def linker_script(board: Board, placement: Placement) -> str:
    """The -T script placing ``placement`` in the emulated stand-in of the external flash."""
    region = board.emulator.external_flash
    inputs = "\n".join(f"    *({a.section})" for a in placement.external)
    return (f"/* Generated by lumamba.export.project.flash_regions for board {board.name}: weights that the internal\n"
            f" * flash cannot hold, in the external flash ({board.target.external_flash.part}).\n"
            f" * On QEMU: {region.memory}. */\n"
            f"MEMORY {{ external_flash (r) : ORIGIN = {region.origin:#010x}, LENGTH = {region.size:#x} }}\n"
            "SECTIONS\n{\n"
            f"  {XIP_SECTION} : ALIGN(16) {{\n{inputs}\n  }} >external_flash :external_flash\n}}\n"
            "INCLUDE picolibc.ld\n"
            "PHDRS { external_flash PT_LOAD; }\n")


def write_placement(project_dir: str | Path, board: Board, placement: Placement | None) -> Path | None:
    """Write (or, for None, remove) the project's linker script for ``board``."""
    path = linker_script_path(project_dir, board)
    if placement is None or not placement.external:
        if path.is_file():
            path.unlink()
            elf_path(project_dir, board).unlink(missing_ok=True)   # make relinks without the script
        return None
    write_if_changed(path, linker_script(board, placement).encode())
    return path


def place_weights(project_dir: str | Path, board: Board, report: dict, manifest_path: str | Path,
                  margin: int = 256) -> Placement | None:
    """If the build in ``report`` (memory_report of the project's ELF) does not fit the internal
    flash and the board has an external flash, plan the placement (with ``margin`` bytes to spare
    for alignment) and write the linker script; the caller rebuilds. None when nothing must move."""
    limit = report["flash"]["limit"]
    if limit is None or board.target is None or board.target.external_flash is None:
        return None
    if report["flash"]["deployable"] <= limit:
        return None
    external = report.get("external_flash") or {}
    over = report["flash"]["deployable"] + external.get("weights", 0) - limit   # counting what is out already
    arrays = weight_arrays(weight_sections(elf_path(project_dir, board), project_dir), graph_runs(manifest_path))
    placement = plan_placement(arrays, over + margin, board)
    write_placement(project_dir, board, placement)
    return placement
