"""A PyTorch dataset over a prepared window cache, one item per 5 s window."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .cache import load_index
from .tuab import SPLITS, assign_splits

log = logging.getLogger("lumamba.data")


class WindowDataset(Dataset):
    """Windows of one split: items are ``(x, label, meta)``.

    ``x`` is float32 (channels, samples); ``meta`` holds the file key, window number, subject,
    age (None if unknown), split and channel names. ``split`` is "train", "val", "test" or a
    list of them; train/val are assigned by subject from ``seed`` (see
    :func:`~lumamba.data.tuab.assign_splits`). ``channels`` selects and orders channels by name,
    so recordings with different montages (22 and 20 TCP channels) can share batches; files
    lacking one of them are left out, with a log line saying how many.
    """

    def __init__(self, cache: str | os.PathLike, split: str | Sequence[str] = "train", *,
                 val_fraction: float = 0.2, seed: int = 0,
                 channels: Sequence[str] | None = None):
        self.cache = Path(cache)
        wanted = {split} if isinstance(split, str) else set(split)
        unknown = wanted - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; choose from {SPLITS}")
        index = load_index(self.cache)
        self.sfreq = float(index["config"]["sfreq"])
        # How the windows were normalised (caches older than the choice were z-scored).
        self.normalisation = index["config"].get("normalisation", "zscore")
        files = index["files"]
        splits = assign_splits(files, val_fraction, seed)
        self.files: list[dict] = []
        self._rows: list[np.ndarray | None] = []  # channel selection per file
        lacking = 0
        for record, file_split in zip(files, splits):
            if file_split not in wanted:
                continue
            rows = None
            if channels is not None:
                position = {name: i for i, name in enumerate(record["channels"])}
                if not all(name in position for name in channels):
                    lacking += 1
                    continue
                rows = np.array([position[name] for name in channels])
            self.files.append({**record, "split": file_split})
            self._rows.append(rows)
        if lacking:
            log.info("%d files of split %s lack some of the requested channels and are left out",
                     lacking, sorted(wanted))
        counts = [f["n_windows"] for f in self.files]
        # Per window: which entry of self.files it comes from, its number there, its label.
        self.file_of = np.repeat(np.arange(len(self.files)), counts)
        self.window_of = np.concatenate([np.arange(n) for n in counts] + [np.zeros(0, int)])
        self.labels = np.array([self.files[i]["label"] for i in self.file_of], dtype=np.int64)
        self._arrays: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:
        # Memory maps are per process; a DataLoader worker opens its own.
        return {**self.__dict__, "_arrays": {}}

    def __len__(self) -> int:
        return len(self.file_of)

    def _array(self, file_index: int) -> np.ndarray:
        # Opened lazily, so each DataLoader worker maps the files itself.
        if file_index not in self._arrays:
            path = self.cache / self.files[file_index]["file"]
            self._arrays[file_index] = np.load(path, mmap_mode="r")
        return self._arrays[file_index]

    def channels_of(self, file_index: int) -> list[str]:
        record, rows = self.files[file_index], self._rows[file_index]
        return list(record["channels"]) if rows is None else [record["channels"][r] for r in rows]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, dict]:
        f, w = int(self.file_of[i]), int(self.window_of[i])
        x = self._array(f)[w]
        if self._rows[f] is not None:
            x = x[self._rows[f]]
        record = self.files[f]
        meta = {"key": record["key"], "window": w, "subject": record["subject"],
                "age": record.get("age"), "split": record["split"],
                "channels": self.channels_of(f)}
        return torch.from_numpy(np.array(x, dtype=np.float32)), int(record["label"]), meta


def collate_windows(batch: Sequence[tuple[torch.Tensor, int, dict]]):
    """DataLoader ``collate_fn``: stack windows that share one channel list.

    Returns ``(x (B, C, T), labels (B,), channel names, metas)``.
    """
    channels = batch[0][2]["channels"]
    for _, _, meta in batch:
        if meta["channels"] != channels:
            raise ValueError(f"window {meta['key']}#{meta['window']} has channels "
                             f"{meta['channels']}, the batch has {channels}; pass channels= to "
                             f"WindowDataset or batch montages separately")
    x = torch.stack([item[0] for item in batch])
    labels = torch.tensor([item[1] for item in batch], dtype=torch.long)
    return x, labels, channels, [item[2] for item in batch]
