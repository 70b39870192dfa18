"""Skip a test when a board's cross compiler or emulator is not installed (`.ci/run` installs them),
and build host harnesses of the firmware runtime."""
import shutil
import subprocess
from pathlib import Path

import pytest

from lumamba.firmware import ROOT as FIRMWARE_ROOT

from lumamba.export.project.build import ToolchainError, check_toolchain


def require_toolchain(board: str, need_emulator: bool = True) -> None:
    """pytest.skip naming the missing tool and its Debian package, unless `board` can build and run."""
    try:
        check_toolchain(board, need_emulator=need_emulator)
    except ToolchainError as exc:
        pytest.skip(str(exc))


def build_runtime_harness(harness: Path, runtime_sources: list[str], out: Path) -> Path:
    """Compile the C test program `harness` with firmware/runtime's `runtime_sources` for this
    machine (the firmware's flags: C99, warnings as errors, no fused multiply-add) into `out`;
    pytest.skip without gcc."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    runtime = FIRMWARE_ROOT / "runtime"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off", f"-I{runtime}",
                    str(harness), *(str(runtime / name) for name in runtime_sources), "-lm", "-o", str(out)],
                   check=True)
    return out
