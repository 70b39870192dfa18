"""``lumamba-data``: make the synthetic corpus, preprocess a TUAB tree or your own recordings
(``import``), run the baseline."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ..normalise import NORMALISATIONS


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

    from .preprocess import PreprocessConfig

    config = PreprocessConfig(normalisation=args.normalisation)
    files, rejects = find_tuab_files(args.root)
    montage = None if args.montage == "as-is" else args.montage
    start = time.perf_counter()
    summary = prepare_cache(files, args.out, montage=montage, config=config, workers=args.workers,
                            progress=not args.no_progress, retry_rejected=args.retry_rejected,
                            rejects=rejects)
    print(f"done in {time.perf_counter() - start:.1f} s: {summary}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .generic import prepare_recordings
    from .importer import plan_import

    log = logging.getLogger("lumamba.data")
    montage = _montage(args.montage)
    fit = "crop" if args.crop else "pad" if args.pad else None
    plan = plan_import(args.table, arrays=args.arrays, channels=_names(args.channels), sfreq=args.sfreq,
                       unit=args.unit, reference=args.reference, montage=montage, n_classes=args.n_classes,
                       window_s=args.window_s, fit_patch=fit, normalisation=args.normalisation)
    for warning in plan.warnings:
        log.warning("%s", warning)
    start = time.perf_counter()
    summary = prepare_recordings(plan.recordings, args.out, montage=montage, config=plan.config,
                                 workers=args.workers, progress=not args.no_progress)
    print(f"done in {time.perf_counter() - start:.1f} s: {summary}")
    if summary.windows == 0:
        print(f"lumamba-data import: error: no usable recording (see the lines above)", file=sys.stderr)
        return 1
    return 0


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _montage(text: str):
    if text == "as-is":
        return None
    if text == "tcp":
        return "tcp"
    return _names(text)


def _baseline(args: argparse.Namespace) -> int:
    from .baseline import run_baseline

    result = run_baseline(args.cache, seed=args.seed, val_fraction=args.val_fraction)
    out = Path(args.json) if args.json else Path(args.cache) / "baseline.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"written to {out}")
    return 0


def _import_doc() -> str:
    from . import importer
    return importer.__doc__


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
    prepare.add_argument("--normalisation", default="zscore", choices=NORMALISATIONS,
                         help="per-window z-score (default), robust (median/IQR) or fixed (x / 50 uV, keeps DC)")
    prepare.add_argument("--no-progress", action="store_true")
    prepare.set_defaults(run=_prepare)

    imp = sub.add_parser("import", help="your own recordings (arrays or EDF files + a CSV table) -> a window cache",
                         description=_import_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("--table", required=True, help="CSV: label, subject[, split (train/test)][, file][, key]")
    imp.add_argument("--arrays", help=".npy/.npz of trials (n, channels, samples); row i of --table is trial i")
    imp.add_argument("--out", required=True, help="cache directory")
    imp.add_argument("--channels", help="comma-separated channel names, in row order (EDF: the electrodes to read)")
    imp.add_argument("--sfreq", type=float, help="sampling rate in Hz of the arrays")
    imp.add_argument("--unit", default="uV", choices=["uV", "mV", "V"], help="amplitude unit of the arrays")
    imp.add_argument("--reference", help="electrode the channels are referenced to, e.g. CZ: A1 becomes A1-CZ")
    imp.add_argument("--montage", default="as-is",
                     help="as-is (default), tcp, or comma-separated bipolar pairs like FP1-F7,C3-P3")
    imp.add_argument("--n-classes", type=int, default=2)
    imp.add_argument("--window-s", type=float, default=5.0, help="window length in seconds (default 5)")
    fit = imp.add_mutually_exclusive_group()
    fit.add_argument("--crop", action="store_true", help="crop each window to a multiple of the 40-sample patch")
    fit.add_argument("--pad", action="store_true", help="pad each window (by reflection) to a multiple of the patch")
    imp.add_argument("--normalisation", default="zscore", choices=NORMALISATIONS,
                     help="per-window z-score (default), robust (median/IQR) or fixed (x / 50 uV, keeps DC)")
    imp.add_argument("--workers", type=int, default=2)
    imp.add_argument("--no-progress", action="store_true")
    imp.set_defaults(run=_import)

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
