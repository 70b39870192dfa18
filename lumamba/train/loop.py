"""The training loop, for pre-training and fine-tuning alike, on one process or under DDP.

Per epoch: a fixed batch order from (seed, epoch); per step: warm-up/cosine lr, optional bf16
autocast, backward, grad clipping, AdamW. After each epoch: validation loss, early stopping, a
checkpoint (`state.py`), history.json and loss_curves.png. `resume=True` continues from the last
checkpoint, mid-epoch included, and reproduces the uninterrupted run bit for bit on a CPU.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..checkpoint import save_checkpoint
from .config import ConfigError, TrainConfig
from .data import EpochBatches, collate
from .distributed import DistContext, all_reduce_sum, barrier
from .optim import build_optimizer, lr_at, set_lr
from .rng import TRAIN_DRAW, VAL_DRAW
from .state import load_training_state, save_training_state, set_rng_states, rng_states

# Fault injection for the resume test: the process dies (os._exit) right after this optimiser step.
FAULT_ENV = "LUMAMBA_FAULT_EXIT_AFTER_STEP"
# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"progress", "num_workers", "device", "data"}


@dataclass
class FitResult:
    history: list[dict]
    best_val_loss: float | None
    stopped_early: bool
    steps: int
    run_dir: Path

    @property
    def best_weights(self) -> Path:
        return self.run_dir / "best.safetensors"


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast: always for `bf16`, never for `fp32`, on GPUs that support it for `auto`."""
    if precision == "fp32":
        return False
    supported = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if precision == "bf16" and not supported:
        raise ConfigError(f"precision=bf16 but {device} does not support bf16")
    return precision == "bf16" or (device.type == "cuda" and supported)


def _loader(dataset: Dataset, batches: EpochBatches, cfg: TrainConfig) -> DataLoader:
    # A private generator: DataLoader would otherwise draw its worker seed from the global RNG,
    # and a resumed run would then see different dropout than the uninterrupted one.
    return DataLoader(dataset, batch_sampler=batches, num_workers=cfg.num_workers,
                      collate_fn=partial(collate, channel_names=getattr(dataset, "channel_names", None)),
                      generator=torch.Generator().manual_seed(cfg.seed))


def _reduce_means(sums: dict[str, float], count: float, ctx: DistContext) -> dict[str, float]:
    keys = sorted(sums)
    totals = all_reduce_sum([sums[k] for k in keys] + [count], ctx)
    return {k: v / totals[-1] for k, v in zip(keys, totals[:-1])} if totals[-1] else {}


@torch.no_grad()
def evaluate_loss(task, dataset: Dataset, cfg: TrainConfig, ctx: DistContext, bf16: bool) -> dict[str, float]:
    """Mean loss and parts over a split (sample-weighted, reduced over ranks). Random draws are keyed
    by batch index, so every epoch is scored on the same masks and crops."""
    was_training = task.training
    task.eval()
    batches = EpochBatches(len(dataset), cfg.batch_size, shuffle=False, drop_last=False,
                           rank=ctx.rank, world_size=ctx.world_size)
    sums: dict[str, float] = {}
    count = 0
    for i, (x, y, names) in enumerate(_loader(dataset, batches, cfg)):
        x, y = x.to(ctx.device), y.to(ctx.device)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, parts = task(x, names, y, task.draw(x, i, ctx.rank, VAL_DRAW))
        for k, v in {"loss": loss.detach(), **parts}.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(x)
        count += len(x)
    task.train(was_training)
    return _reduce_means(sums, count, ctx)


def _fresh_counters(cfg: TrainConfig, ctx: DistContext) -> dict:
    return {"config": cfg.to_dict(), "world_size": ctx.world_size, "epoch": 0, "batch_in_epoch": 0,
            "step": 0, "epoch_sums": {}, "epoch_count": 0, "epoch_time": 0.0, "history": [],
            "best_val_loss": None, "bad_epochs": 0, "finished": False}


def _check_resumable(saved: dict, cfg: TrainConfig, run_dir: Path) -> None:
    now = cfg.to_dict()
    changed = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"--resume: {run_dir} was started with different settings for "
                          f"{', '.join(changed)}; resume with the original configuration")


def _gather_rng(ctx: DistContext) -> list:
    states = rng_states()
    if not ctx.distributed:
        return [states]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, states)
    return gathered


def _save(run_dir: Path, model, optimizer, counters: dict, ctx: DistContext) -> None:
    rngs = _gather_rng(ctx)            # a collective: every rank takes part
    if ctx.is_main:
        save_training_state(run_dir, model, optimizer, {**counters, "rng_per_rank": rngs})
    barrier(ctx)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    from ..plots import plot_loss_curves
    tmp = run_dir / "history.json.tmp"
    try:
        tmp.write_text(json.dumps(history, indent=1))
        os.replace(tmp, run_dir / "history.json")
    finally:                      # a full disk leaves no orphan temporary file
        tmp.unlink(missing_ok=True)
    plot_loss_curves(history, run_dir / "loss_curves.png")


def fit(task, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig, run_dir: str | os.PathLike,
        ctx: DistContext = DistContext(), resume: bool = False) -> FitResult:
    """Train `task` (a PretrainTask or FinetuneTask) and write checkpoints under `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = task.model
    task.to(ctx.device)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.betas)
    batches = EpochBatches(len(train_set), cfg.batch_size, seed=cfg.seed, rank=ctx.rank,
                           world_size=ctx.world_size, max_batches=cfg.max_steps_per_epoch)
    steps_per_epoch = len(batches)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    bf16 = use_bf16(cfg.precision, ctx.device)

    c = _fresh_counters(cfg, ctx)
    if resume:
        saved = load_training_state(run_dir)
        if saved is None:
            raise FileNotFoundError(f"--resume: no training state ({run_dir}/train_state.pt) to resume from")
        _check_resumable(saved["config"], cfg, run_dir)
        model.load_state_dict(saved["model_state"])
        optimizer.load_state_dict(saved["optimizer"])
        rngs = saved["rng_per_rank"]
        set_rng_states(rngs[ctx.rank] if ctx.rank < len(rngs) else rngs[0])
        c = {k: saved[k] for k in c}
    else:
        # Same init on every rank is DDP's job (it broadcasts rank 0's weights); dropout differs per rank.
        torch.manual_seed(cfg.seed + ctx.rank)

    net = (DistributedDataParallel(task, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                                   find_unused_parameters=task.find_unused_parameters)
           if ctx.distributed else task)
    loader = _loader(train_set, batches, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    fault_step = int(os.environ.get(FAULT_ENV, "0"))
    stopped_early = False

    for epoch in range(c["epoch"], cfg.epochs):
        if c["finished"]:
            break
        task.train()
        batches.set_epoch(epoch, skip=c["batch_in_epoch"])
        bar = tqdm(loader, total=steps_per_epoch, initial=c["batch_in_epoch"], unit="batch",
                   desc=f"{cfg.task} epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and ctx.is_main),
                   dynamic_ncols=True)
        start = time.perf_counter() - c["epoch_time"]
        for x, y, names in bar:
            lr = lr_at(c["step"], total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            set_lr(optimizer, lr)
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            draw = task.draw(x, c["step"], ctx.rank, TRAIN_DRAW)
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, parts = net(x, names, y, draw)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {c['step']} (epoch {epoch + 1})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            c["step"] += 1
            c["batch_in_epoch"] += 1
            for k, v in {"loss": loss.detach(), **parts}.items():
                c["epoch_sums"][k] = c["epoch_sums"].get(k, 0.0) + float(v) * len(x)
            c["epoch_count"] += len(x)
            elapsed = time.perf_counter() - start
            c["epoch_time"] = elapsed
            windows = c["batch_in_epoch"] * cfg.batch_size
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", win_s=f"{windows / max(elapsed, 1e-9):.1f}")
            if fault_step and c["step"] == fault_step:
                os._exit(75)
            if cfg.checkpoint_every and c["step"] % cfg.checkpoint_every == 0 and c["batch_in_epoch"] < steps_per_epoch:
                _save(run_dir, model, optimizer, c, ctx)
        bar.close()

        train = _reduce_means(c["epoch_sums"], c["epoch_count"], ctx)
        val = evaluate_loss(task, val_set, cfg, ctx, bf16) if val_set is not None else {}
        record = {"epoch": epoch + 1, "step": c["step"], "lr": lr_at(c["step"] - 1, total_steps, warmup_steps, cfg.lr, cfg.min_lr),
                  "train_loss": train.get("loss"), "val_loss": val.get("loss"),
                  "train": train, "val": val, "epoch_time_s": c["epoch_time"],
                  "windows_per_s": steps_per_epoch * cfg.batch_size / max(c["epoch_time"], 1e-9)}
        c["history"].append(record)
        score = val.get("loss", train.get("loss"))
        improved = c["best_val_loss"] is None or score < c["best_val_loss"] - cfg.min_delta
        if improved:
            c["best_val_loss"], c["bad_epochs"] = score, 0
            if ctx.is_main:
                save_checkpoint(model, run_dir / "best.safetensors")
        else:
            c["bad_epochs"] += 1
        stopped_early = bool(val) and cfg.patience > 0 and c["bad_epochs"] >= cfg.patience
        c.update(epoch=epoch + 1, batch_in_epoch=0, epoch_sums={}, epoch_count=0, epoch_time=0.0,
                 finished=stopped_early or epoch + 1 == cfg.epochs)
        if ctx.is_main:                # before the commit, so a committed epoch always has its history
            _write_history(run_dir, c["history"])
        _save(run_dir, model, optimizer, c, ctx)
        if ctx.is_main and cfg.progress:
            tqdm.write(_epoch_line(record, stopped_early, cfg.patience))
        if stopped_early:
            break

    return FitResult(c["history"], c["best_val_loss"], stopped_early or _stopped(c, cfg), c["step"], run_dir)


def _stopped(c: dict, cfg: TrainConfig) -> bool:
    return c["finished"] and c["epoch"] < cfg.epochs


def _epoch_line(record: dict, stopped: bool, patience: int) -> str:
    val = record["val_loss"]
    line = (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
            f"{'' if val is None else f', val loss {val:.4f}'}, {record['windows_per_s']:.1f} windows/s")
    return line + (f"; no val improvement for {patience} epochs, stopping early" if stopped else "")
