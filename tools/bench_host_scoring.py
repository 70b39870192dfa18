"""Host scoring throughput of a generated project's bit-exact C (HostCModel), in windows per second.

    .venv/bin/python tools/bench_host_scoring.py PROJECT [--workers 1,2] [--windows 100] [--fast]

Scores seeded random windows (22-channel shapes from the project's model.h) with each worker
count and prints wall-clock windows/s and windows per CPU-second of this process (the latter is
what one core gives when the machine is shared); every worker count must give the same logits
bit for bit. --fast builds with host_c_runner.SCORING_CFLAGS (load_host_c(fast=True)).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from lumamba.export.project.host_c_runner import SCORING_CFLAGS, HostCModel, build_project_library
    from lumamba.export.project.model_driver import model_h_defines

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("project", type=Path)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--windows", type=int, default=100)
    p.add_argument("--fast", action="store_true", help="build with SCORING_CFLAGS")
    args = p.parse_args(argv)
    d = model_h_defines(args.project / "model.h")
    library = build_project_library(args.project, extra_flags=SCORING_CFLAGS if args.fast else ())
    x = np.random.default_rng(0).standard_normal((args.windows, d["N_CHANNELS"], d["N_SAMPLES"])).astype(np.float32)
    first = None
    for w in (int(v) for v in args.workers.split(",")):
        model = HostCModel(library, d["N_CHANNELS"], d["N_SAMPLES"], d["N_CLASSES"], workers=w)
        model(x[:w])   # warm up: pages of every copy mapped
        wall, cpu = time.perf_counter(), time.process_time()
        logits = model(x)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{args.project} workers={w}: {args.windows / wall:.1f} windows/s wall, "
              f"{args.windows / cpu:.1f} windows per CPU-second", flush=True)
        first = logits if first is None else first
        if not np.array_equal(logits.view(np.int32), first.view(np.int32)):
            print(f"workers={w}: logits differ from the first run", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
