"""DDP on CPU (gloo, 2 processes launched like torchrun): the mixed loss and its gradients equal a
single process on the same global batch; SIGReg sees the global batch; the DDP loop runs.

The file is also the worker: `python tests/test_ddp.py OUT DATA` with torchrun's environment
variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) set by the test.
"""
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from lumamba.config import CONFIGS  # noqa: E402
from lumamba.model import LuMamba  # noqa: E402
from lumamba.objectives import ObjectiveConfig, epps_pulley  # noqa: E402
from lumamba.train.rng import TRAIN_DRAW  # noqa: E402
from lumamba.train.tasks import PretrainTask  # noqa: E402

NAMES = ["FP1-F7", "F7-T3", "T3-T5", "T5-O1"]
WORLD = 2
GLOBAL_BATCH = 8
OBJECTIVE = ObjectiveConfig(mode="mixed", global_patches=4, local_patches=2, sigreg_directions=32)


def _task() -> PretrainTask:
    # No dropout and no position jitter: they draw from each process's own RNG, so the one-process
    # and two-process runs would see different noise. Everything else is the micro model as is.
    torch.manual_seed(0)
    config = dataclasses.replace(CONFIGS["micro"], dropout=0.0, position_noise_std=0.0)
    return PretrainTask(LuMamba(config, 0), OBJECTIVE, seed=0).train()


def _global_batch() -> torch.Tensor:
    return torch.randn(GLOBAL_BATCH, 4, 320, generator=torch.Generator().manual_seed(1))


def _projections() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.cat([torch.randn(GLOBAL_BATCH, 3, generator=g, dtype=torch.float64),
                      torch.zeros(GLOBAL_BATCH, 1, dtype=torch.float64)], 1) * 1.5


def _worker(out: Path, data: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from lumamba.train.config import load_config
    from lumamba.train.data import open_split
    from lumamba.train.distributed import init_distributed, shutdown
    from lumamba.train.loop import fit

    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    rank, share = ctx.rank, GLOBAL_BATCH // ctx.world_size
    lo, hi = rank * share, (rank + 1) * share
    # 1. One step: each rank gets its half of the global batch and of its random draw.
    task = _task()
    x = _global_batch()
    draw = task.draw(x, 0, 0, TRAIN_DRAW)
    ddp = DistributedDataParallel(task)      # keep a reference: its reducer syncs the gradients in backward()
    loss, parts = ddp(x[lo:hi], NAMES, None, draw.shard(lo, hi))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None}
    # 2. The Epps-Pulley statistic of half the samples per rank, in float64.
    stat = epps_pulley(_projections()[lo:hi])
    torch.save({"loss": loss.detach(), "parts": parts, "grads": grads, "epps_pulley": stat}, out / f"step{rank}.pt")
    # 3. The DDP training loop: two epochs, checkpoints written by rank 0.
    cfg = load_config("pretrain", None, ["batch_size=4", "epochs=2", "progress=false", "objective.global_patches=4",
                                         "objective.local_patches=2", "objective.sigreg_directions=16"])
    torch.manual_seed(0)
    model = LuMamba(CONFIGS["micro"], 0)
    fit(PretrainTask(model, cfg.objective, cfg.seed), open_split(data, "train"), open_split(data, "val"),
        cfg, out / "run", ctx)
    torch.save(model.state_dict(), out / f"fit{rank}.pt")
    shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Launch the two workers, as torchrun would, and collect what they saved."""
    from lumamba.train.data import save_npz_windows

    out = tmp_path_factory.mktemp("ddp")
    x = np.random.default_rng(0).standard_normal((12, 4, 320)).astype(np.float32)
    data = save_npz_windows(out / "d.npz", x, np.arange(12) % 2, NAMES, ["train"] * 8 + ["val"] * 4)
    env = {**os.environ, "WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, __file__, str(out), str(data)], cwd=ROOT, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(WORLD)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{logs[r][-3000:]}"
    return out


def test_mixed_loss_and_gradients_equal_one_process_on_the_global_batch(ranks):
    torch.set_num_threads(1)
    task = _task()
    x = _global_batch()
    loss, parts = task(x, NAMES, None, task.draw(x, 0, 0, TRAIN_DRAW))
    loss.backward()
    saved = [torch.load(ranks / f"step{r}.pt", weights_only=True) for r in range(WORLD)]
    # Every term is a mean over equal shares (or, for SIGReg, the same global value on each rank),
    # so the mean of the ranks' losses is the global loss. float32 sums in another order: the
    # mismatch seen is ~1e-7 relative; 1e-5 leaves room without hiding a wrong reduction (each part
    # is checked on its own: a per-rank SIGReg, with N = 4, misses the global one by far more).
    assert float(np.mean([s["loss"] for s in saved])) == pytest.approx(loss.item(), rel=1e-5)
    for key in parts:
        assert float(np.mean([s["parts"][key] for s in saved])) == pytest.approx(parts[key].item(), rel=1e-5), key
    assert saved[0]["parts"]["sigreg"] == saved[1]["parts"]["sigreg"]            # one global statistic
    # DDP averages the ranks' gradients; with the autograd all-reduce inside SIGReg that average is
    # the full-batch gradient. Tolerance: float32 accumulation order; the mismatch seen is below
    # 7e-7 of each tensor's largest entry, so 1e-5 of it (plus rtol 1e-4) is safe, while a gradient
    # that misses the other rank's share (no sync, or SIGReg reduced without autograd) is off by 20-90 %.
    for name, p in task.model.named_parameters():
        if p.grad is None:
            continue
        for s in saved:
            torch.testing.assert_close(s["grads"][name], p.grad, rtol=1e-4, atol=1e-5 * p.grad.abs().max().item() + 1e-9,
                                       msg=lambda m, n=name: f"{n}: {m}")
    assert len(saved[0]["grads"]) == sum(p.grad is not None for p in task.model.parameters())


def test_epps_pulley_uses_the_global_batch(ranks):
    saved = [torch.load(ranks / f"step{r}.pt", weights_only=True)["epps_pulley"] for r in range(WORLD)]
    single = epps_pulley(_projections())
    half = epps_pulley(_projections()[:GLOBAL_BATCH // WORLD])
    for s in saved:                          # float64 throughout: equal to rounding
        torch.testing.assert_close(s, single, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(half, single, rtol=1e-3)   # a per-rank statistic would differ


def test_ddp_training_loop_keeps_ranks_in_step(ranks):
    a, b = (torch.load(ranks / f"fit{r}.pt", weights_only=True) for r in range(WORLD))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    state = torch.load(ranks / "run" / "train_state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 4 and len(state["rng_per_rank"]) == 2
    assert (ranks / "run" / "best.safetensors").is_file() and (ranks / "run" / "history.json").is_file()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
