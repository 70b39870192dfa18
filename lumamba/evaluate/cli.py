"""`lumamba-eval`: score a fine-tuned checkpoint on a data split, or plot a run's loss curves.

    lumamba-eval metrics --checkpoint RUN/best.safetensors --data CACHE --split test --out DIR
    lumamba-eval curves  --history RUN/history.json --out RUN/loss_curves.png

Subcommands are registered in `SUBCOMMANDS`; the float-vs-int8 `drift` report adds itself there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable


def _metrics(args: argparse.Namespace) -> int:
    from ..checkpoint import load_pretrained
    from ..train.data import open_split
    from ..train.distributed import resolve_device
    from .report import evaluate_split

    if args.n_classes < 2:
        raise ValueError(f"--n-classes {args.n_classes}: must be >= 2")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be >= 1")
    if not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction {args.val_fraction}: must be in [0, 1)")
    dataset = open_split(args.data, args.split, seed=args.seed, val_fraction=args.val_fraction,
                         channels=args.channels.split(",") if args.channels else None)
    if dataset is None:
        print(f"error: split {args.split!r} of {args.data} is empty", file=sys.stderr)
        return 2
    model = load_pretrained(args.checkpoint, n_classes=args.n_classes)
    check_same_normalisation(args.checkpoint, model, args.data, dataset)
    metrics = evaluate_split(model, dataset, args.out, args.split, batch_size=args.batch_size,
                             device=resolve_device(args.device), progress=not args.no_progress,
                             extra={"checkpoint": str(args.checkpoint), "data": str(args.data)})
    print(json.dumps(metrics, indent=1))
    return 0


def read_history(path: str | Path) -> list[dict]:
    """A run's history.json: a list of per-epoch objects with `epoch` and `train_loss`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--history {path}: file not found")
    try:
        history = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--history {path}: not JSON ({e})") from None
    if not isinstance(history, list) or not all(isinstance(r, dict) and "epoch" in r and "train_loss" in r
                                                for r in history):
        raise ValueError(f"--history {path}: expected a list of per-epoch objects with 'epoch' and "
                         f"'train_loss' (a run's history.json)")
    if not history:
        raise ValueError(f"--history {path}: no epochs recorded yet")
    return history


def check_same_normalisation(checkpoint, model, data, dataset) -> None:
    """Scores are meaningless when the data are normalised differently from the training data."""
    from ..train.data import data_normalisation
    trained = (getattr(model, "preprocess", None) or {}).get("normalisation", "zscore")
    given = data_normalisation(dataset)
    if trained != given:
        raise ValueError(f"--checkpoint {checkpoint} was trained on {trained}-normalised windows but --data {data} "
                         f"holds {given}-normalised ones; prepare the data with --normalisation {trained}")


def _curves(args: argparse.Namespace) -> int:
    from ..plots import plot_loss_curves
    print(plot_loss_curves(read_history(args.history), args.out))
    return 0


def _add_metrics(sub) -> None:
    p = sub.add_parser("metrics", help="balanced accuracy, AUROC, AUPR (JSON) and ROC curve (PNG) of a classifier")
    p.add_argument("--checkpoint", required=True, help="classifier checkpoint (e.g. RUN/best.safetensors)")
    p.add_argument("--data", required=True, help="window-cache directory or .npz")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", required=True, help="directory for <split>_metrics.json and <split>_roc.png")
    p.add_argument("--n-classes", type=int, default=2)
    p.add_argument("--channels", default="", help="comma-separated channel names to select (default: as stored)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="train/val split seed (cache directories)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_metrics)


def _add_curves(sub) -> None:
    p = sub.add_parser("curves", help="loss curves PNG from a run's history.json")
    p.add_argument("--history", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(run=_curves)


# Each entry adds one subcommand to the parser. The accuracy-drift report (float vs int8) goes here
# as `drift`, e.g. `("drift", _add_drift)` with its runner in lumamba.quant.
SUBCOMMANDS: list[tuple[str, Callable]] = [("metrics", _add_metrics), ("curves", _add_curves)]


def _add_drift(sub) -> None:
    from ..quant.drift_cli import add_drift_parser
    add_drift_parser(sub)


SUBCOMMANDS.append(("drift", _add_drift))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumamba-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for _, add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0 done, 1 failed (one line on stderr naming the file or option), 130 interrupted."""
    args = build_parser().parse_args(argv)
    if args.command not in ("metrics", "curves"):      # drift has its own error handling
        return args.run(args)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"lumamba-eval {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, EOFError) as e:   # CheckpointError, bad data, unreadable or full disk
        from ..train.cli import _one_line
        print(f"lumamba-eval {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
