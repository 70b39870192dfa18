"""Datasets, batching and epoch order for training.

Two sources, picked by the path in `TrainConfig.data`:

- a window-cache directory made by `lumamba-data prepare` (`lumamba.data.dataset.WindowDataset`,
  items `(x, label, meta)` with `meta["channels"]`);
- a `.npz` file with arrays `x` (N, C, T) float32, `y` (N,) int, `channels` (C,) str and `split`
  (N,) str (train/val/test): small in-memory sets for tests and experiments (`save_npz_windows`).

Any torch Dataset works with the loop if its items are `(x (C, T), label)` and it has a
`channel_names` list, or are `(x, label, meta)` with `meta["channels"]`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .config import ConfigError
from .rng import EPOCH_ORDER, generator

log = logging.getLogger(__name__)


class ArrayWindows(Dataset):
    """In-memory windows (N, C, T) with integer labels, all with the same channel names."""

    def __init__(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, channel_names: Sequence[str],
                 normalisation: str = "zscore"):
        self.normalisation = normalisation    # how the windows were normalised (lumamba.normalise)
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.long)
        self.channel_names = [str(c) for c in channel_names]
        if self.x.dim() != 3 or len(self.y) != len(self.x) or self.x.shape[1] != len(self.channel_names):
            raise ValueError(f"windows {tuple(self.x.shape)}, labels {tuple(self.y.shape)} and "
                             f"{len(self.channel_names)} channel names do not match")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def save_npz_windows(path: str | os.PathLike, x: np.ndarray, y: np.ndarray, channels: Sequence[str],
                     split: Sequence[str], normalisation: str = "zscore") -> Path:
    """Write an `.npz` window set that `open_split` reads (atomically); `normalisation` records how
    the windows were normalised."""
    from ..normalise import check_normalisation
    check_normalisation(normalisation)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez(tmp, x=np.asarray(x, np.float32), y=np.asarray(y, np.int64),
                 channels=np.asarray(channels, str), split=np.asarray(split, str),
                 normalisation=np.asarray(normalisation))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def data_normalisation(dataset) -> str:
    """How a dataset's windows were normalised ("zscore" when it does not say)."""
    return getattr(dataset, "normalisation", "zscore")


def open_split(path: str | os.PathLike, split: str, *, seed: int = 0, val_fraction: float = 0.2,
               channels: Sequence[str] | None = None) -> Dataset | None:
    """The windows of one split (train, val, test) of a cache directory or `.npz`; None when the
    split is empty (e.g. no validation windows)."""
    path = Path(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {path}")
        try:
            f = np.load(path)
        except Exception as e:  # zipfile.BadZipFile, pickle refusal, EOF
            raise ValueError(f"{path}: not a readable .npz file ({' '.join(str(e).split())})") from None
        with f:
            missing = {"x", "y", "channels", "split"} - set(f.files)
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)} (need x, y, channels, split)")
            try:
                keep = f["split"] == split
                x, y, names = f["x"][keep], f["y"][keep], [str(c) for c in f["channels"]]
                norm = str(f["normalisation"]) if "normalisation" in f.files else "zscore"
            except Exception as e:  # a damaged member: zlib, CRC, shape errors
                raise ValueError(f"{path}: corrupt or inconsistent arrays ({' '.join(str(e).split())})") from None
        if channels:
            unknown = [c for c in channels if c not in names]
            if unknown:
                raise ValueError(f"{path}: channels {unknown} not in the file's channels {names}")
            x, names = x[:, [names.index(c) for c in channels]], list(channels)
        return ArrayWindows(x, y, names, norm) if len(x) else None
    if not path.is_dir():
        raise FileNotFoundError(f"data not found: {path} (expected a window-cache directory or a .npz file)")
    from ..data.dataset import WindowDataset
    ds = WindowDataset(path, split, val_fraction=val_fraction, seed=seed, channels=channels or None)
    if not channels:
        common = _common_channels(ds)
        if common is not None:
            log.warning("%s: the %s split mixes recordings with different channels; training on the %d "
                        "channels they all have (choose others with --set channels=...): %s",
                        path, split, len(common), ",".join(common))
            ds = WindowDataset(path, split, val_fraction=val_fraction, seed=seed, channels=common)
    return ds if len(ds) else None


def _common_channels(ds) -> list[str] | None:
    """Windows are stacked into batches, so a split must not mix montages (TUAB has 22- and
    20-channel TCP recordings). None when all recordings agree, else the channels all of them
    have, in the first recording's order."""
    montages = [ds.channels_of(i) for i in range(len(ds.files))]
    if len({tuple(m) for m in montages}) <= 1:
        return None
    common = [c for c in montages[0] if all(c in m for m in montages)]
    if not common:
        raise ConfigError(f"the recordings share no channel; select channels with --set channels=...")
    return common


def collate(batch: list, channel_names: Sequence[str] | None = None):
    """Stack items into (x (B, C, T), y (B,), names): one name list for the batch when all samples
    share it, else one per sample (the model takes both)."""
    xs = torch.stack([item[0] for item in batch])
    ys = torch.tensor([int(item[1]) for item in batch], dtype=torch.long)
    if len(batch[0]) > 2:
        per_sample = [list(item[2]["channels"]) for item in batch]
    elif channel_names is not None:
        return xs, ys, list(channel_names)
    else:
        raise ValueError("dataset items are (x, label) but the dataset has no channel_names attribute")
    same = all(n == per_sample[0] for n in per_sample)
    return xs, ys, per_sample[0] if same else per_sample


class EpochBatches(Sampler[list[int]]):
    """Batches of one rank, in an order fixed by (seed, epoch).

    The dataset is permuted (or not, `shuffle=False`), cut into global batches of `batch_size`,
    and each global batch split into `world_size` contiguous shares; this rank yields its share.
    Training drops the incomplete last batch, so every step sees full, equal shares (the losses'
    means and SIGReg's global N then match a single process). Evaluation keeps it, dropping only a
    tail smaller than the number of ranks. `set_epoch(epoch, skip)` starts an epoch `skip` batches in
    (resuming mid-epoch)."""

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1, max_batches: int = 0):
        if drop_last and batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be a multiple of the {world_size} ranks")
        if drop_last and n < batch_size:
            raise ValueError(f"only {n} training windows for a batch of {batch_size}: lower batch_size")
        self.n, self.batch_size, self.seed, self.shuffle, self.drop_last = n, batch_size, seed, shuffle, drop_last
        self.rank, self.world_size, self.max_batches = rank, world_size, max_batches
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _global_batches(self) -> list[torch.Tensor]:
        order = (torch.randperm(self.n, generator=generator(self.seed, EPOCH_ORDER, self.epoch))
                 if self.shuffle else torch.arange(self.n))
        batches = list(order.split(self.batch_size))
        if batches and (len(batches[-1]) < (self.batch_size if self.drop_last else self.world_size)):
            batches.pop()
        return batches[:self.max_batches] if self.max_batches else batches

    def __iter__(self):
        for batch in self._global_batches()[self.skip:]:
            share = batch.tensor_split(self.world_size)[self.rank]
            yield share.tolist()

    def __len__(self) -> int:
        full, tail = divmod(self.n, self.batch_size)
        count = full + int(not self.drop_last and tail >= self.world_size)
        if self.max_batches:
            count = min(count, self.max_batches)
        return max(0, count - self.skip)
