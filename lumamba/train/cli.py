"""`lumamba-train`: pre-train or fine-tune LuMamba, on one process or under torchrun.

    lumamba-train pretrain --data CACHE --out runs/pt [--config pt.toml] [--set objective.mode=mixed]
    lumamba-train finetune --init runs/pt/best.safetensors --data CACHE --out runs/ft [--set lr=5e-4]
    lumamba-train finetune ... --resume          # continue an interrupted run from its last checkpoint
    torchrun --nproc_per_node 4 -m lumamba.train.cli pretrain ...

Settings: the task's defaults (the paper's), then --config (JSON or TOML), then the flags below,
then each --set key=value. A run directory holds config.json, train_state.pt, checkpoints/,
best.safetensors, history.json and loss_curves.png; fine-tuning adds val/test metrics JSON and
ROC curves for the best checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from .config import ConfigError, TrainConfig, load_config


def build_model(cfg: TrainConfig):
    """The model to train: from `cfg.init` when given (our checkpoints or the published ones;
    fine-tuning drops the decoder and adds a fresh classifier), else freshly initialised."""
    from ..checkpoint import load_pretrained
    from ..config import get_config
    from ..model import LuMamba

    n_classes = cfg.n_classes if cfg.task == "finetune" else None
    if cfg.init:
        return load_pretrained(cfg.init, n_classes=n_classes)
    return LuMamba(get_config(cfg.model), n_classes=n_classes or 0)


def build_task(cfg: TrainConfig, model):
    from .tasks import FinetuneTask, PretrainTask
    return PretrainTask(model, cfg.objective, cfg.seed) if cfg.task == "pretrain" else FinetuneTask(model)


# What a run writes into its directory: another run's are refused without --resume/--overwrite.
RUN_OUTPUTS = ("train_state.pt", "checkpoints", "best.safetensors", "history.json")
RUN_FILES = RUN_OUTPUTS + ("loss_curves.png", "config.json", "val_metrics.json", "test_metrics.json",
                           "val_roc.png", "test_roc.png")


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a directory holding another run's results unless told what to do."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if found and not resume and not overwrite:
        raise ConfigError(f"--out {out} already holds a run ({', '.join(found)}); continue it with --resume "
                          f"or replace it with --overwrite")


def clear_run_dir(out: Path) -> None:
    """Delete what an earlier run wrote (only the trainer's own files; anything else stays)."""
    for name in RUN_FILES:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def run(cfg: TrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False) -> dict:
    """Train as `cfg` says into `out`; returns a summary (also printed by the CLI)."""
    import torch

    from .data import open_split
    from .distributed import init_distributed, shutdown
    from .loop import fit

    if not cfg.data:
        raise ConfigError("no training data: pass --data (a window-cache directory or .npz) or set `data`")
    out = Path(out)
    check_run_dir(out, resume, overwrite)
    ctx = init_distributed(cfg.device)
    try:
        split = dict(seed=cfg.seed, val_fraction=cfg.val_fraction, channels=cfg.channels or None)
        train_set = open_split(cfg.data, "train", **split)
        if train_set is None:
            raise ConfigError(f"{cfg.data}: the train split is empty")
        val_set = open_split(cfg.data, "val", **split)
        test_set = open_split(cfg.data, "test", **split) if cfg.task == "finetune" else None
        if len(train_set) < cfg.batch_size:          # before --overwrite deletes anything
            raise ConfigError(f"{cfg.data}: only {len(train_set)} training windows for a batch of {cfg.batch_size}; "
                              f"lower it with --set batch_size={max(1, len(train_set))}")
        if cfg.task == "finetune":
            for name, ds in (("train", train_set), ("val", val_set), ("test", test_set)):
                _check_labels(cfg, name, ds)
        torch.manual_seed(cfg.seed)                  # model init
        model = build_model(cfg)
        model.preprocess = _input_normalisation(cfg, model, train_set)
        if ctx.is_main:
            if overwrite:
                clear_run_dir(out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        result = fit(build_task(cfg, model), train_set, val_set, cfg, out, ctx, resume=resume)
        summary = {"run_dir": str(out), "steps": result.steps, "epochs": len(result.history),
                   "best_val_loss": result.best_val_loss, "stopped_early": result.stopped_early,
                   "best_weights": str(result.best_weights)}
        if cfg.task == "finetune" and ctx.is_main:
            summary["metrics"] = _score_best(cfg, out, result.best_weights, {"val": val_set, "test": test_set},
                                             ctx.device)
        return summary
    finally:
        shutdown()


def _check_labels(cfg: TrainConfig, split: str, dataset) -> None:
    """Labels outside 0..n_classes-1 would fail deep inside the loss (or silently skew it)."""
    import numpy as np
    if dataset is None:
        return
    labels = getattr(dataset, "labels", None)
    if labels is None and hasattr(dataset, "y"):
        labels = dataset.y.numpy()
    if labels is None:
        return
    labels = np.asarray(labels)
    bad = sorted({int(v) for v in labels if not 0 <= int(v) < cfg.n_classes})
    if bad:
        raise ConfigError(f"{cfg.data}: the {split} split has label(s) {', '.join(map(str, bad[:5]))} outside "
                          f"0..{cfg.n_classes - 1}; set the number of classes with --set n_classes=N")


def _input_normalisation(cfg: TrainConfig, model, train_set) -> dict:
    """The data's normalisation, recorded with the model; a change from the --init checkpoint's is
    allowed (fine-tuning adapts) but said."""
    import logging

    from ..normalise import spec
    from .data import data_normalisation

    norm = data_normalisation(train_set)
    before = (getattr(model, "preprocess", None) or {}).get("normalisation")
    if cfg.init and before and before != norm:
        logging.getLogger(__name__).warning("%s was trained on %s-normalised windows, %s holds %s-normalised ones",
                                            cfg.init, before, cfg.data, norm)
    return spec(norm)


def _score_best(cfg: TrainConfig, out: Path, weights: Path, splits: dict, device) -> dict:
    """Metrics JSON and ROC curves of the best checkpoint on each non-empty split."""
    from ..checkpoint import load_pretrained
    from ..evaluate.report import evaluate_split

    model = load_pretrained(weights, n_classes=cfg.n_classes)
    return {name: evaluate_split(model, ds, out, name, batch_size=min(cfg.batch_size, 256), device=device,
                                 extra={"checkpoint": str(weights)})
            for name, ds in splits.items() if ds is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumamba-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)
    for task, help_text in (("pretrain", "self-supervised pre-training (reconstruction, LeJEPA or mixed)"),
                            ("finetune", "supervised fine-tuning of a classifier from a pre-training checkpoint")):
        p = sub.add_parser(task, help=help_text)
        p.add_argument("--config", help="JSON or TOML file of TrainConfig settings")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting (repeatable), e.g. --set lr=1e-4 --set objective.mode=lejepa")
        p.add_argument("--data", help="window-cache directory (lumamba-data prepare) or .npz")
        p.add_argument("--out", required=True, help="run directory")
        p.add_argument("--model", help="model size when not starting from a checkpoint: tiny, small, micro")
        p.add_argument("--init", help="checkpoint to start from (ours or a published one)")
        p.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
        p.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --out (its checkpoints, history and metrics)")
    return parser


def _resume_command(argv: list[str]) -> str:
    args = [a for a in argv if a != "--overwrite"]
    return shlex.join(["lumamba-train", *args, *([] if "--resume" in args else ["--resume"])])


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0 done, 2 bad options or missing input, 1 training failed, 130 interrupted.
    Every failure is one line on stderr naming the file, option or value; never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    prefix = f"lumamba-train {args.task}"
    try:
        cfg = load_config(args.task, args.config, args.overrides, data=args.data, model=args.model, init=args.init)
        summary = run(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, FileNotFoundError) as e:
        print(f"{prefix}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; resume with: {_resume_command(argv)}", file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError, EOFError) as e:   # CheckpointError, TrainingStateError, disk
        print(f"{prefix}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=1))
    return 0


def _one_line(e: BaseException) -> str:
    """The message of `e` on one line (OSError: with the path and the reason, e.g. a full disk)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    text = " ".join(str(e).split()) or type(e).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())
