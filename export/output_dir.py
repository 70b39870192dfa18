"""The export's output directory: nothing the user had is lost, nothing half-written is left.

An export writes into `.<name>.<pid>.XXXX.partial` beside `--out` and moves it into place only
when it has finished (`install`); until then an earlier project at `--out` is untouched. `--out`
may be new, empty, or an earlier lumamba export (which is replaced); anything else (a file, a
directory holding other things, the current directory or one of its parents, `/`) is refused
before any work starts. SIGTERM and SIGHUP end the export like Ctrl-C, so its partial directory
is removed; partial directories of exports that were killed outright (SIGKILL) are removed by
the next export into the same place.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

# files that mark a directory as a lumamba export (ONNX target, firmware project)
EXPORT_MARKERS = ("manifest.json", "onnx/manifest.json", "memory.json")
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\..+\.(partial|old)$")


class OutputDirError(ValueError):
    """`--out` names something the export must not replace; the message says what and why."""


def is_export(path: Path) -> bool:
    return any((path / marker).is_file() for marker in EXPORT_MARKERS)


def check_output_dir(out: Path) -> None:
    """OutputDirError unless `out` is new, an empty directory, or an earlier lumamba export."""
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == Path(resolved.anchor) or resolved == cwd or resolved in cwd.parents or resolved == Path.home():
        raise OutputDirError(f"--out {out}: refusing to export into {resolved} (the current directory, one of its "
                             "parents, the home directory or /); name a new directory, e.g. out/lumamba")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise OutputDirError(f"--out {out}: exists and is not a directory; name a new directory")
    if out.is_symlink():
        raise OutputDirError(f"--out {out}: is a symbolic link; name the directory itself")
    if any(out.iterdir()) and not is_export(out):
        raise OutputDirError(f"--out {out}: the directory holds other files and is not a lumamba export (no "
                             f"{' or '.join(EXPORT_MARKERS)}); an export replaces its output directory, so name "
                             "a new or empty one")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the partial and old directories that killed exports into `out` left beside it."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for entry in out.parent.iterdir():
        m = _PARTIAL.match(entry.name)
        if m and m["name"] == out.name and entry.is_dir() and not _alive(int(m["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def new_partial(out: Path) -> Path:
    """A fresh working directory beside `out` (same file system, so `install` is a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=out.parent))


def install(work: Path, out: Path) -> None:
    """Put the finished `work` directory in place of `out` (an earlier export is replaced only now)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".old", dir=out.parent))
        out.rename(old / out.name)
    work.rename(out)
    if old is not None:
        shutil.rmtree(old)


@contextmanager
def termination_as_interrupt():
    """Within the block SIGTERM and SIGHUP raise KeyboardInterrupt, so cleanup code runs."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
