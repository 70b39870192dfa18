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


def run(cfg: TrainConfig, out: str | Path, resume: bool = False) -> dict:
    """Train as `cfg` says into `out`; returns a summary (also printed by the CLI)."""
    import torch

    from .data import open_split
    from .distributed import init_distributed, shutdown
    from .loop import fit

    if not cfg.data:
        raise ConfigError("no training data: pass --data (a window-cache directory or .npz) or set `data`")
    out = Path(out)
    ctx = init_distributed(cfg.device)
    try:
        split = dict(seed=cfg.seed, val_fraction=cfg.val_fraction, channels=cfg.channels or None)
        train_set = open_split(cfg.data, "train", **split)
        if train_set is None:
            raise ConfigError(f"{cfg.data}: the train split is empty")
        val_set = open_split(cfg.data, "val", **split)
        test_set = open_split(cfg.data, "test", **split) if cfg.task == "finetune" else None
        torch.manual_seed(cfg.seed)                  # model init
        model = build_model(cfg)
        if ctx.is_main:
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.task, args.config, args.overrides, data=args.data, model=args.model, init=args.init)
        summary = run(cfg, args.out, resume=args.resume)
    except (ConfigError, FileNotFoundError) as e:
        print(f"lumamba-train {args.task}: error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
