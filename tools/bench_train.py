"""Training throughput (windows/s) of pre-training and fine-tuning steps on synthetic windows.

    python tools/bench_train.py --config tiny --batch 8 --channels 22 --samples 1280 --steps 5

Times full optimiser steps (forward, backward, grad clipping, AdamW) after warm-up steps, with the
objective's own random draws, on the current device; prints one JSON line per task.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from lumamba.config import get_config
from lumamba.model import LuMamba
from lumamba.montages import MONTAGES
from lumamba.objectives import ObjectiveConfig
from lumamba.train.loop import use_bf16
from lumamba.train.optim import build_optimizer
from lumamba.train.rng import TRAIN_DRAW
from lumamba.train.tasks import FinetuneTask, PretrainTask

TCP22 = list(MONTAGES["tcp22"])


def bench(task, x, y, names, steps: int, warmup: int, bf16: bool, layer_decay: float) -> dict:
    device = x.device
    opt = build_optimizer(task.model, lr=1e-4, weight_decay=0.05, layer_decay=layer_decay)
    params = [p for p in task.model.parameters() if p.requires_grad]
    task.train()
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = task(x, names, y, task.draw(x, step, 0, TRAIN_DRAW))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    per_step = sorted(times)[len(times) // 2]
    return {"step_s_median": round(per_step, 4), "windows_per_s": round(x.shape[0] / per_step, 2),
            "steps": steps, "loss": round(loss.item(), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=22, help="first N TCP channels (at most 22)")
    p.add_argument("--samples", type=int, default=1280)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--modes", default="mixed,reconstruction,lejepa,finetune")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = use_bf16(args.precision, device)
    config = get_config(args.config)
    names = TCP22[:args.channels]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, len(names), args.samples, generator=g).to(device)
    y = torch.randint(0, 2, (args.batch,), generator=g).to(device)
    for mode in args.modes.split(","):
        torch.manual_seed(0)
        if mode == "finetune":
            task, decay = FinetuneTask(LuMamba(config, 2)), 0.75
        else:
            task, decay = PretrainTask(LuMamba(config, 0), ObjectiveConfig(mode=mode)), 1.0
        result = bench(task.to(device), x, y, names, args.steps, args.warmup, bf16, decay)
        print(json.dumps({"task": mode, "config": args.config, "batch": args.batch, "shape": [len(names), args.samples],
                          "device": str(device), "bf16": bf16, "threads": torch.get_num_threads(),
                          "cpu": platform.processor() or platform.machine(), **result}), flush=True)


if __name__ == "__main__":
    main()
