"""Checkpoints that survive being killed at any instant.

A checkpoint is two files in the run directory:

    checkpoints/step-NNNNNNNN.safetensors   the model, in the published layout (lumamba.checkpoint)
    train_state.pt                         optimiser, RNG states, counters, history; names the weights file

Both are written under temporary names and moved into place (os.replace is atomic); the weights
go first, so the state file, written last, is the commit point: it only ever names a complete
weights file. Weights files of older steps are deleted after the commit.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import read_checkpoint, save_checkpoint

STATE_FILE = "train_state.pt"
CHECKPOINT_DIR = "checkpoints"
STATE_FORMAT = 1
# What a committed state must hold besides the counters the loop reads (checked on load).
REQUIRED_KEYS = ("format", "weights", "optimizer", "rng_per_rank", "config", "epoch", "batch_in_epoch", "step",
                 "epoch_sums", "epoch_count", "epoch_time", "history", "best_val_loss", "bad_epochs", "finished")


class TrainingStateError(ValueError):
    """A run directory's training state that cannot be resumed from; the message names the file."""


def _atomic_torch_save(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_state(run_dir: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                        counters: dict) -> Path:
    """Write the model and the training state for `counters["step"]`; returns the weights path."""
    run_dir = Path(run_dir)
    weights = Path(CHECKPOINT_DIR) / f"step-{counters['step']:08d}.safetensors"
    save_checkpoint(model, run_dir / weights)
    state = {"format": STATE_FORMAT, "weights": weights.as_posix(), "optimizer": optimizer.state_dict(),
             "rng": rng_states(), **counters}
    _atomic_torch_save(state, run_dir / STATE_FILE)
    for old in (run_dir / CHECKPOINT_DIR).glob("step-*.safetensors"):
        if old.name != weights.name:
            old.unlink(missing_ok=True)
    return run_dir / weights


def load_training_state(run_dir: str | os.PathLike) -> dict | None:
    """The committed training state of a run directory with its weights (key `model_state`),
    or None when the run has not written one yet."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and EOF errors of a damaged file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrainingStateError(f"{path}: corrupt training state ({first}); start again without --resume "
                                 f"(with --overwrite)") from None
    if not isinstance(state, dict):
        raise TrainingStateError(f"{path}: not a training state (a {type(state).__name__})")
    if state.get("format") != STATE_FORMAT:
        raise TrainingStateError(f"{path}: training-state format {state.get('format')!r}, expected {STATE_FORMAT}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise TrainingStateError(f"{path}: incomplete training state, missing {', '.join(missing)}")
    weights = state["weights"]
    # The state names its weights file; it must be one of this run's checkpoints, nothing outside it.
    if not (isinstance(weights, str) and weights.startswith(CHECKPOINT_DIR + "/") and ".." not in weights
            and "/" not in weights[len(CHECKPOINT_DIR) + 1:]):
        raise TrainingStateError(f"{path}: weights entry {weights!r} is not a file under {CHECKPOINT_DIR}/")
    if not (run_dir / weights).is_file():
        raise TrainingStateError(f"{path}: names {weights}, which is missing")
    state["model_state"], _ = read_checkpoint(run_dir / weights)
    return state
