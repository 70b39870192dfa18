"""Skip a test when a board's cross compiler or emulator is not installed (`.ci/run` installs them)."""
import pytest

from lumamba.export.project.build import ToolchainError, check_toolchain


def require_toolchain(board: str, need_emulator: bool = True) -> None:
    """pytest.skip naming the missing tool and its Debian package, unless `board` can build and run."""
    try:
        check_toolchain(board, need_emulator=need_emulator)
    except ToolchainError as exc:
        pytest.skip(str(exc))
