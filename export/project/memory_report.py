"""Flash and RAM use of a firmware build, and whether it fits the board's real chip.

Sources, all produced by an ordinary build (firmware/project.mk):
- section headers of the ELF (``readelf -S -W``): total flash image and static RAM;
- the linker map (``build/<board>/lumamba.map``): which object every linked input section came
  from, after --gc-sections, so weights (weights.o), model code (the project's other objects)
  and the test windows (main.c's lumamba_test_windows) are counted exactly;
- the per-object call graphs with stack frames (``-fcallgraph-info=su``, *.ci files): the worst
  call chain below lumamba_init() and lumamba_infer().

The stack bound covers what the model needs below its caller (the application's own frames
are not included). It is exact for the analysed code and rests on two stated allowances: each call
into code that was not compiled with the project (C library, libgcc) is charged
UNANALYSED_CALL_STACK bytes, and on Cortex-M boards one SysTick interrupt (the instruction
counter) is added on top: its handler's frame plus CORTEX_M_EXCEPTION_FRAME. Recursion, frames
of dynamic size and indirect calls make the bound unknown; the report lists them.

The test windows live in flash only for the test application, so the fit uses the flash image
without them ("deployable"). RAM, on the other hand, counts the window a deployment must hold:
the int16 ADC counts lumamba_infer_counts() normalises (LUMAMBA_N_CHANNELS x LUMAMBA_N_SAMPLES x 2
bytes). A generated model keeps them in lumamba_counts_buffer(), the upper half of the arena's
float input block, so they are inside model_static and cost nothing on top ("in_arena"); for a
model without that buffer the firmware needs its own, which is added to the total.
The streaming demo also keeps a ring buffer of window + hop instants (firmware/app/demo_main.c).
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .boards import Board, load_board
from .model_driver import model_h_defines

# Picolibc's and libgcc's leaf routines (memcpy, expf, 64-bit division) use a few dozen bytes.
UNANALYSED_CALL_STACK = 128
# Cortex-M exception entry with the FPU context stacked: 8 core + 18 FP words.
CORTEX_M_EXCEPTION_FRAME = 104
COUNTER_ISR = "arm_systick_isr"
MODEL_ENTRY_POINTS = ("lumamba_init", "lumamba_infer", "lumamba_infer_counts")
TEST_WINDOWS_SYMBOL = "lumamba_test_windows"


class MemoryFitError(ValueError):
    """The build does not fit the flash or RAM of the board's real chip."""


@dataclass(frozen=True)
class _Section:
    name: str
    kind: str   # PROGBITS, NOBITS, ...
    addr: int
    size: int
    flags: str


@dataclass(frozen=True)
class _InputSection:
    output: str  # output section it was linked into
    name: str
    size: int
    obj: str     # object file (or "archive(member)"); "" for padding


def _as_board(board: Board | str) -> Board:
    return board if isinstance(board, Board) else load_board(board)


def _elf_sections(elf: Path, board: Board) -> list[_Section]:
    out = subprocess.run([f"{board.tool_prefix}readelf", "-S", "-W", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    sections = []
    pattern = re.compile(r"^\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+"
                         r"[0-9a-f]+\s+([A-Za-z]*)\s+\d+\s+\d+\s+\d+\s*$")
    for line in out.splitlines():
        m = pattern.match(line)
        if m:
            name, kind, addr, size, flags = m.groups()
            sections.append(_Section(name, kind, int(addr, 16), int(size, 16), flags))
    return sections


_OUT = re.compile(r"^(\.\S*)(?:\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+))?")
_IN = re.compile(r"^ (\S+)(?:\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)(?:\s+(\S.*?))?)?\s*$")
_CONTINUED = re.compile(r"^\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)(?:\s+(\S.*?))?\s*$")


def _map_input_sections(map_path: Path) -> list[_InputSection]:
    """Input sections of a GNU ld map file, with the output section each went into.

    A name too long for its column is printed alone, its address, size and file on the next line.
    """
    lines = map_path.read_text().splitlines()
    try:
        start = lines.index("Linker script and memory map")
    except ValueError:
        raise ValueError(f"{map_path} is not a GNU ld map file") from None
    result: list[_InputSection] = []
    output = None
    pending = None  # input section name waiting for its continuation line
    for line in lines[start + 1:]:
        if pending is not None:
            m = _CONTINUED.match(line)
            if m and output is not None:
                result.append(_InputSection(output, pending, int(m.group(2), 16), m.group(3) or ""))
            pending = None
            if m:
                continue
        if line and not line[0].isspace():
            m = _OUT.match(line)
            output = m.group(1) if m else None  # /DISCARD/, LOAD, OUTPUT(...): not linked
            continue
        m = _IN.match(line)
        if m is None or output is None or m.group(1).startswith("*("):
            continue
        name, _, size, obj = m.groups()
        if size is None:
            pending = name
        else:
            result.append(_InputSection(output, name, int(size, 16), obj or ""))
    return result


@dataclass
class _Frame:
    size: int | None = None  # None: not compiled with the project (no stack information)
    dynamic: bool = False


_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_FRAME = re.compile(r"(\d+) bytes \(([a-z,]+)\)")


def _call_graph(build_dir: Path) -> tuple[dict[str, _Frame], dict[str, set[str]]]:
    frames: dict[str, _Frame] = {}
    calls: dict[str, set[str]] = {}
    for ci in sorted(build_dir.rglob("*.ci")):
        text = ci.read_text()
        for title, label in _NODE.findall(text):
            frame = frames.setdefault(title, _Frame())
            m = _FRAME.search(label)
            if m:  # a definition, not just a declaration of a callee
                frame.size = int(m.group(1))
                frame.dynamic = m.group(2) == "dynamic"
        for source, target in _EDGE.findall(text):
            calls.setdefault(source, set()).add(target)
    return frames, calls


def stack_bound(build_dir: str | Path, roots: tuple[str, ...] = MODEL_ENTRY_POINTS) -> dict:
    """Worst stack depth (bytes) of the call chains starting at ``roots`` (see module doc)."""
    frames, calls = _call_graph(Path(build_dir))
    unanalysed: set[str] = set()
    unbounded: set[str] = set()
    memo: dict[str, tuple[int, list[str]]] = {}

    def depth(fn: str, active: tuple[str, ...]) -> tuple[int, list[str]]:
        if fn in active:
            unbounded.add(f"recursion through {fn}")
            return 0, [fn]
        if fn in memo:
            return memo[fn]
        frame = frames.get(fn, _Frame())
        if frame.size is None:
            unanalysed.add(fn)
            if fn == "__indirect_call":
                unbounded.add("indirect call")
            return UNANALYSED_CALL_STACK, [fn]
        if frame.dynamic:
            unbounded.add(f"dynamic stack frame in {fn}")
        worst, chain = 0, []
        for callee in sorted(calls.get(fn, ())):
            d, c = depth(callee, active + (fn,))
            if d > worst or not chain:
                worst, chain = d, c
        memo[fn] = (frame.size + worst, [fn] + chain)
        return memo[fn]

    worst, chain = 0, []
    for root in roots:
        if root in frames and frames[root].size is not None:
            d, c = depth(root, ())
            if d > worst:
                worst, chain = d, c
    interrupt = 0
    if COUNTER_ISR in frames and frames[COUNTER_ISR].size is not None:
        interrupt = CORTEX_M_EXCEPTION_FRAME + depth(COUNTER_ISR, ())[0]
    return {"bytes": worst + interrupt, "worst_chain": chain, "interrupt": interrupt,
            "unanalysed_callees": sorted(unanalysed), "unbounded": sorted(unbounded),
            "allowance_per_unanalysed_call": UNANALYSED_CALL_STACK}


def memory_report(elf: str | Path, board: Board | str, project_dir: str | Path) -> dict:
    """Flash and RAM use of ``elf`` (built from ``project_dir`` for ``board``) and its fit.

    Returns a dict with "board", "target" (real chip name or None), "flash" (weights,
    model_code, test_vectors, runtime_and_libc, total, deployable, limit, fits), "ram"
    (model_static, other_static, stack, input_window, total, limit, fits), "stack" (see stack_bound) and
    "emulator" (flash and RAM sizes of the QEMU machine, or None). Sizes are in bytes;
    limit and fits are None for boards without a real chip (host).
    """
    elf, project_dir = Path(elf), Path(project_dir)
    board = _as_board(board)
    build_dir = elf.parent
    sections = [s for s in _elf_sections(elf, board) if "A" in s.flags]

    def in_region(s: _Section, region) -> bool:
        return region.origin <= s.addr < region.origin + region.size

    external = board.emulator.external_flash if board.emulator is not None else None
    external_sections = [s for s in sections if external is not None and in_region(s, external)]
    if board.emulator is not None:
        ram_sections = [s for s in sections if in_region(s, board.emulator.ram) and s.name != ".stack"]
        flash_sections = [s for s in sections if in_region(s, board.emulator.flash)]
    else:
        ram_sections = [s for s in sections if "W" in s.flags]
        flash_sections = [s for s in sections if "W" not in s.flags]
    # Initialised data is stored in flash and copied to RAM at start-up; TLS .tbss has its
    # room in picolibc's .tbss_space, so it is not counted twice.
    loaded = [s for s in ram_sections if s.kind != "NOBITS"]
    ram_sections = [s for s in ram_sections if not ("T" in s.flags and s.kind == "NOBITS")]
    flash_total = sum(s.size for s in flash_sections + loaded)
    ram_static = sum(s.size for s in ram_sections)

    model_obj = _model_object_pattern(build_dir, project_dir)
    flash_names = {s.name for s in flash_sections + loaded}
    ram_names = {s.name for s in ram_sections}
    external_names = {s.name for s in external_sections}
    weights = model_code = model_static = test_vectors = 0
    external_arrays: list[str] = []
    for sec in _map_input_sections(build_dir / "lumamba.map"):
        if model_obj.match(sec.obj) and _is_weights_object(sec.obj):
            weights += sec.size if sec.output in flash_names else 0
            model_static += sec.size if sec.output in ram_names else 0
            if sec.output in external_names and sec.size:
                external_arrays.append(sec.name)
        elif model_obj.match(sec.obj):
            model_code += sec.size if sec.output in flash_names else 0
            model_static += sec.size if sec.output in ram_names else 0
        elif TEST_WINDOWS_SYMBOL in sec.name:
            test_vectors += sec.size

    stack = stack_bound(build_dir)
    arena = model_h_defines(project_dir / "model.h") if (project_dir / "model.h").is_file() else {}
    input_window = input_window_bytes(arena)
    model_h = (project_dir / "model.h").read_text(encoding="utf-8") if (project_dir / "model.h").is_file() else ""
    in_arena = "#define LUMAMBA_COUNTS_BUFFER_BYTES" in model_h    # lumamba_counts_buffer() exists
    target = board.target
    deployable = flash_total - test_vectors
    ram_total = ram_static + stack["bytes"] + (0 if in_arena else input_window)
    return {
        "board": board.name,
        "target": target.name if target else None,
        "flash": {"weights": weights, "model_code": model_code, "test_vectors": test_vectors,
                  "runtime_and_libc": flash_total - weights - model_code - test_vectors,
                  "total": flash_total, "deployable": deployable,
                  "limit": target.flash_bytes if target else None,
                  "fits": deployable <= target.flash_bytes if target else None},
        "ram": {"model_static": model_static, "other_static": ram_static - model_static,
                "stack": stack["bytes"], "input_window": input_window, "input_window_in_arena": in_arena,
                "total": ram_total,
                "arena": arena.get("ARENA_BYTES"), "arena_lower_bound": arena.get("ARENA_LOWER_BOUND_BYTES"),
                "limit": target.ram_bytes if target else None,
                "fits": ram_total <= target.ram_bytes if target else None},
        "external_flash": _external_report(target, external_sections, external_arrays),
        "stack": stack,
        "emulator": ({"flash_size": board.emulator.flash.size, "ram_size": board.emulator.ram.size}
                     if board.emulator else None),
    }


def _external_report(target, sections: list[_Section], arrays: list[str]) -> dict | None:
    # The external flash region: None where the target has none.
    if target is None or target.external_flash is None:
        return None
    used = sum(s.size for s in sections)
    return {"part": target.external_flash.part, "weights": used, "arrays": arrays,
            "limit": target.external_flash.bytes, "fits": used <= target.external_flash.bytes}


def weight_sections(elf: str | Path, project_dir: str | Path) -> list[tuple[str, int]]:
    """(input section, size) of every linked section of the project's weights objects."""
    elf = Path(elf)
    model_obj = _model_object_pattern(elf.parent, Path(project_dir))
    return [(sec.name, sec.size) for sec in _map_input_sections(elf.parent / "lumamba.map")
            if model_obj.match(sec.obj) and _is_weights_object(sec.obj)]


def _model_object_pattern(build_dir: Path, project_dir: Path) -> re.Pattern:
    # Objects of the generated model: build/<board>/<name>.o (the firmware's are under build/<board>/fw/).
    rel_build = build_dir.resolve().relative_to(project_dir.resolve()).as_posix()
    return re.compile(rf"^(?:\./)?{re.escape(rel_build)}/[^/]+\.o$")


def _is_weights_object(obj: str) -> bool:
    return Path(obj).name.startswith("weights")


def input_window_bytes(defines: dict[str, int]) -> int:
    """RAM of the int16 window the firmware owns (N_CHANNELS x N_SAMPLES counts of model.h);
    0 when model.h does not say."""
    return 2 * defines.get("N_CHANNELS", 0) * defines.get("N_SAMPLES", 0)


def _needed(d: dict) -> dict[str, int]:
    # What the real chip must hold: flash without the test windows, RAM with the stack.
    return {"flash": d["flash"]["deployable"], "ram": d["ram"]["total"]}


def format_report(d: dict) -> str:
    """Human-readable table of a memory_report() dict."""
    def row(label: str, n: int) -> str:
        return f"  {label:<28}{n:>14,} B"

    def verdict(part: str) -> str:
        limit = d[part]["limit"]
        if limit is None:
            return "  (no real-board limit)"
        over = _needed(d)[part] - limit
        return f"  {'limit':<28}{limit:>14,} B  " + ("fits" if over <= 0 else f"DOES NOT FIT, over by {over:,} B")

    flash, ram, stack = d["flash"], d["ram"], d["stack"]
    lines = [f"Memory report, board {d['board']}" + (f" (real chip: {d['target']})" if d["target"] else ""),
             "Flash:"]
    lines += [row(k, flash[k]) for k in ("weights", "model_code", "runtime_and_libc", "test_vectors", "total")]
    lines += [row("deployable (no test data)", flash["deployable"]), verdict("flash")]
    ext = d.get("external_flash")
    if ext is not None and ext["weights"]:
        lines += [f"External flash ({ext['part']}):", row(f"weights ({len(ext['arrays'])} arrays)", ext["weights"]),
                  f"  {'limit':<28}{ext['limit']:>14,} B  "
                  + ("fits" if ext["fits"] else f"DOES NOT FIT, over by {ext['weights'] - ext['limit']:,} B")]
    lines += ["RAM:"]
    lines += [row(k, ram[k]) for k in ("model_static", "other_static", "stack")]
    window = row("input window (int16 counts)", ram.get("input_window", 0))
    if ram.get("input_window_in_arena"):
        window += "  in the arena (lumamba_counts_buffer), inside model_static"
    lines += [window, row("total", ram["total"])]
    lines += [verdict("ram")]
    if ram.get("arena") is not None and ram.get("arena_lower_bound"):
        lines.append(f"  arena {ram['arena']:,} B planned; lower bound for this schedule {ram['arena_lower_bound']:,} B "
                     f"(the most bytes alive at once): {ram['arena'] / ram['arena_lower_bound']:.2f}x")
    lines.append(f"Stack: worst chain {' -> '.join(stack['worst_chain']) or '(none)'}; "
                 f"interrupt {stack['interrupt']} B")
    if stack["unanalysed_callees"]:
        lines.append(f"  charged {stack['allowance_per_unanalysed_call']} B each (not analysed): "
                     + ", ".join(stack["unanalysed_callees"]))
    if stack["unbounded"]:
        lines.append("  WARNING, stack bound unknown: " + "; ".join(stack["unbounded"]))
    return "\n".join(lines)


def check_fits(d: dict) -> None:
    """Raise MemoryFitError saying by how many bytes flash or RAM is exceeded."""
    problems = []
    for part, needed in _needed(d).items():
        limit = d[part]["limit"]
        if limit is not None and needed > limit:
            problems.append(f"{part if part == 'flash' else 'RAM'} needs {needed:,} bytes but has "
                            f"{limit:,} (over by {needed - limit:,} bytes)")
    ext = d.get("external_flash")
    if ext is not None and not ext["fits"]:
        problems.append(f"external flash ({ext['part']}) needs {ext['weights']:,} bytes but has {ext['limit']:,} "
                        f"(over by {ext['weights'] - ext['limit']:,} bytes)")
    if d["stack"]["unbounded"] and d["ram"]["limit"] is not None:
        problems.append("stack depth unknown: " + "; ".join(d["stack"]["unbounded"]))
    if problems:
        raise MemoryFitError(f"the build does not fit {d['target']} (board {d['board']}): "
                             + "; ".join(problems))
