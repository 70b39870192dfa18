"""Turn a directory of generated model sources into a firmware project, and build it with make.

A firmware project is self-contained, so that `make` rebuilds it without Python:

    project/
      model.c model.h kernels.c weights.c ...   generated model (every *.c here is built; the
                                                memory report counts weights*.c as weights)
      test_vectors.h                            windows for the test application (test_vectors.write_test_vectors)
      Makefile                                  sets BOARD and includes firmware/project.mk
      firmware/                                 copy of lumamba/firmware: runtime, app, boards/*.mk
      build/<board>/lumamba.elf                 output, with .o, .su (stack usage), .ci (call graph)
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


from lumamba.firmware import ROOT as FIRMWARE_ROOT

from .boards import BOARDS, Board, load_board

FIRMWARE_DIR = "firmware"  # name of the firmware copy inside a project
ELF_NAME = "lumamba.elf"
DEMO_ELF_NAME = "lumamba-demo.elf"   # the streaming demo (firmware/app/demo_main.c)

# Files of lumamba/firmware that a project needs (board profiles stay behind: rendered as .mk).
_FIRMWARE_GLOBS = ("project.mk", "runtime/*.[ch]", "kernels/*.[ch]", "app/*.[ch]", "boards/*.[ch]", "chips/*.ld", "chips/*.mk")


class ToolchainError(RuntimeError):
    """A compiler, C library or emulator that a board needs is not installed."""


class BuildError(RuntimeError):
    """make failed; the message holds the compiler output."""


def _as_board(board: Board | str) -> Board:
    return board if isinstance(board, Board) else load_board(board)


def check_toolchain(board: Board | str, *, need_emulator: bool = True) -> None:
    """Raise ToolchainError naming the Debian packages to install if a tool of ``board`` is missing.

    Checks make, the compiler, picolibc (where the board links it) and, if ``need_emulator``,
    the QEMU binary.
    """
    board = _as_board(board)
    emulator = board.emulator.command[0] if board.emulator else None
    missing: dict[str, str] = {}
    if shutil.which("make") is None:
        missing["make"] = "make"
    for item, package in board.packages.items():
        if item == emulator and not need_emulator:
            continue
        if item.endswith(".specs"):
            # gcc echoes the bare name back when it cannot find the file.
            if shutil.which(board.compiler) is not None and not _compiler_finds(board.compiler, item):
                missing[item] = package
        elif shutil.which(item) is None:
            missing[item] = package
    if missing:
        needed = ", ".join(f"{item} (Debian package {pkg})" for item, pkg in missing.items())
        packages = " ".join(sorted(set(missing.values())))
        raise ToolchainError(f"board {board.name!r} needs {needed}, which is not installed; "
                             f"install it with: sudo apt-get install {packages}")


def _compiler_finds(compiler: str, file_name: str) -> bool:
    found = subprocess.run([compiler, f"-print-file-name={file_name}"], capture_output=True,
                           text=True, check=False).stdout.strip()
    return Path(found).is_absolute() and Path(found).is_file()


def render_board_mk(board: Board) -> str:
    """The make fragment of ``board`` (variables documented in firmware/project.mk)."""
    def join(args) -> str:
        return " ".join(_make_quote(a) for a in args)

    defines = [f"-D{name}={value}" for name, value in board.defines.items()]
    run_cmd = board.emulator.render("$(ELF)") if board.emulator else ["./$(ELF)"]
    lines = [
        f"# Rendered from lumamba/firmware/boards/{board.name}.json by lumamba.export.project.build;",
        "# edit the JSON profile, not this file.",
        f"CC := {board.compiler}",
        f"ARCH_CFLAGS := {join(board.cflags)}",
        f"BOARD_DEFINES := {join(defines)}",
        f"BOARD_LDFLAGS := {join(board.ldflags + board.memory_ldflags)}",
        f"BOARD_LDLIBS := {join(board.ldlibs)}",
        f"BOARD_SRCS := {join(board.sources)}",
        f"RUN_CMD = {join(run_cmd)}",  # "=": $(ELF) is defined after this file is included
    ]
    return "\n".join(lines) + "\n"


def _make_quote(arg: str) -> str:
    # Flags are plain words; quote only what the shell would split (make expands $(ELF) itself).
    if any(c in arg for c in " \t'\"\\;&|<>*?"):
        raise ValueError(f"board profile argument {arg!r} needs shell quoting, which is not supported")
    return arg


def write_if_changed(path: Path, data: bytes) -> None:
    # Rewriting identical files would bump their mtimes and make make rebuild everything.
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def prepare_project(project_dir: str | Path, default_board: Board | str = "cortex-m4f") -> None:
    """Copy the firmware runtime, app and make rules into ``project_dir`` and write its Makefile."""
    project_dir = Path(project_dir)
    default_board = _as_board(default_board)
    fw = project_dir / FIRMWARE_DIR
    for pattern in _FIRMWARE_GLOBS:
        for src in sorted(FIRMWARE_ROOT.glob(pattern)):
            write_if_changed(fw / src.relative_to(FIRMWARE_ROOT), src.read_bytes())
    for name in BOARDS:
        write_if_changed(fw / "boards" / f"{name}.mk", render_board_mk(load_board(name)).encode())
    makefile = (
        "# Generated by lumamba.export.project.build.\n"
        "# `make` builds build/$(BOARD)/lumamba.elf, `make run` runs it, `make BOARD=<name>` picks\n"
        f"# another board ({', '.join(BOARDS)}).\n"
        f"BOARD ?= {default_board.name}\n"
        f"LUMAMBA_FW := {FIRMWARE_DIR}\n"
        "include $(LUMAMBA_FW)/project.mk\n"
    )
    write_if_changed(project_dir / "Makefile", makefile.encode())


def build_project(project_dir: str | Path, board: Board | str, *, jobs: int = 2) -> Path:
    """Build ``project_dir`` for ``board`` with make and return the ELF path.

    Raises ToolchainError if the compiler is missing and BuildError with the compiler output
    if the build fails.
    """
    project_dir = Path(project_dir)
    board = _as_board(board)
    check_toolchain(board, need_emulator=False)
    prepare_project(project_dir, board)
    proc = subprocess.run(["make", "-C", str(project_dir), f"-j{jobs}", f"BOARD={board.name}"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"building {project_dir} for board {board.name!r} failed "
                         f"(make exit status {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elf_path(project_dir, board)


def build_demo_app(project_dir: str | Path, board: Board | str, defines: dict[str, str] | None = None,
                   *, jobs: int = 2) -> Path:
    """`make demo-app` in ``project_dir`` for ``board`` (refreshing its firmware copy), with
    ``defines`` as DEMO_DEFINES; returns the streaming demo's ELF path. ToolchainError or
    BuildError as build_project."""
    project_dir = Path(project_dir)
    board = _as_board(board)
    check_toolchain(board, need_emulator=False)
    prepare_project(project_dir, board)
    args = ["make", "-C", str(project_dir), f"-j{jobs}", "demo-app", f"BOARD={board.name}"]
    if defines:
        args.append("DEMO_DEFINES=" + " ".join(f"-D{k}={v}" for k, v in defines.items()))
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"building the demo of {project_dir} for board {board.name!r} failed "
                         f"(make exit status {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return demo_elf_path(project_dir, board)


def demo_elf_path(project_dir: str | Path, board: Board | str) -> Path:
    """Where build_demo_app puts the streaming demo of ``board``."""
    return Path(project_dir) / "build" / _as_board(board).name / DEMO_ELF_NAME


def elf_path(project_dir: str | Path, board: Board | str) -> Path:
    """Where build_project puts the ELF of ``board``."""
    return Path(project_dir) / "build" / _as_board(board).name / ELF_NAME
