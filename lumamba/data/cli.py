"""``lumamba-data``: make the synthetic corpus, preprocess a TUAB tree, run the baseline."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from .synth import SynthConfig, make_corpus

    config = SynthConfig(seed=args.seed, train_subjects=args.train_subjects,
                         eval_subjects=args.eval_subjects, max_sessions=args.max_sessions,
                         min_duration_s=args.min_duration, max_duration_s=args.max_duration,
                         severity=args.severity)
    start = time.perf_counter()
    paths = make_corpus(args.out, config)
    print(f"wrote {len(paths)} EDF files under {Path(args.out) / 'edf'} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from .cache import prepare_cache
    from .tuab import find_tuab_files

    files, rejects = find_tuab_files(args.root)
    montage = None if args.montage == "as-is" else args.montage
    start = time.perf_counter()
    summary = prepare_cache(files, args.out, montage=montage, workers=args.workers,
                            progress=not args.no_progress, retry_rejected=args.retry_rejected,
                            rejects=rejects)
    print(f"done in {time.perf_counter() - start:.1f} s: {summary}")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from .baseline import run_baseline

    result = run_baseline(args.cache, seed=args.seed, val_fraction=args.val_fraction)
    out = Path(args.json) if args.json else Path(args.cache) / "baseline.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumamba-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic corpus in the TUAB v3 layout")
    synth.add_argument("--out", required=True, help="output directory (edf/ is created in it)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--train-subjects", type=int, default=24)
    synth.add_argument("--eval-subjects", type=int, default=8)
    synth.add_argument("--max-sessions", type=int, default=2)
    synth.add_argument("--min-duration", type=int, default=31, help="seconds")
    synth.add_argument("--max-duration", type=int, default=76, help="seconds")
    synth.add_argument("--severity", type=float, default=1.0, help="scales abnormal effects")
    synth.set_defaults(run=_synth)

    prepare = sub.add_parser("prepare", help="preprocess a TUAB tree into a window cache")
    prepare.add_argument("--root", required=True, help="TUAB root (holding edf/) or its edf/")
    prepare.add_argument("--out", required=True, help="cache directory")
    prepare.add_argument("--workers", type=int, default=2)
    prepare.add_argument("--montage", default="tcp", choices=["tcp", "as-is"],
                         help="TCP bipolar (default) or the referential electrodes as they are")
    prepare.add_argument("--retry-rejected", action="store_true",
                         help="re-read files an earlier run rejected")
    prepare.add_argument("--no-progress", action="store_true")
    prepare.set_defaults(run=_prepare)

    baseline = sub.add_parser("baseline", help="log band-power + logistic-regression AUROC")
    baseline.add_argument("--cache", required=True)
    baseline.add_argument("--seed", type=int, default=0, help="train/val split seed")
    baseline.add_argument("--val-fraction", type=float, default=0.2)
    baseline.add_argument("--json", help="where to write the result (default CACHE/baseline.json)")
    baseline.set_defaults(run=_baseline)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"lumamba-data {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:   # permission denied, full or read-only disk: nothing half-written is left
        print(f"lumamba-data {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = " (run the same command again to continue)" if args.command in ("prepare", "import") else ""
        print(f"lumamba-data {args.command}: interrupted{again}", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
