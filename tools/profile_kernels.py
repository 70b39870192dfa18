"""Where a generated firmware project's instructions go, per graph and kernel (a thin CLI over
lumamba.export.project.kernel_profile; `lumamba-export --profile` does the same after an export).

    .venv/bin/python tools/profile_kernels.py PROJECT [--board B] [--top 25] [--json FILE]

--board defaults to the board the project was exported for (its memory.json), else cortex-m4f.

PROJECT is a `lumamba-export` output directory; it is profiled in a scratch copy and not changed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lumamba.export.project.kernel_profile import ProfileError, profile_project


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("project", type=Path)
    p.add_argument("--board", help="emulated board (default: the project's own, from memory.json)")
    p.add_argument("--top", type=int, default=25, help="kernels listed (default 25)")
    p.add_argument("--json", type=Path, help="also write the profile as JSON (profile.json's format)")
    args = p.parse_args(argv)
    if args.board is None:
        memory = args.project / "memory.json"
        args.board = json.loads(memory.read_text())["board"] if memory.is_file() else "cortex-m4f"
    try:
        profile = profile_project(args.project, args.board)
    except ProfileError as e:
        print(f"profile_kernels: {e}", file=sys.stderr)
        return 1
    print(profile.format(args.top))
    print("\n| kernel kind | instructions/window | share |\n|---|--:|--:|")
    for kind, n in profile.kinds().items():
        print(f"| {kind} | {n:,.0f} | {100 * profile.share(n):.1f} % |")
    if args.json is not None:
        args.json.write_text(json.dumps(profile.to_json(), indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
