"""Log band-power + logistic-regression baseline on a window cache.

A sanity check of a corpus, not a model: it says how separable normal and abnormal windows are
from their spectra alone. Windows are z-scored, so the features are relative band powers.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .channels import TCP20
from .dataset import WindowDataset

BANDS: tuple[tuple[float, float], ...] = ((1, 4), (4, 8), (8, 13), (13, 30), (30, 45))


def band_power_features(windows: np.ndarray, sfreq: float,
                        bands: Sequence[tuple[float, float]] = BANDS) -> np.ndarray:
    """log10 band power of every channel: (n, C, T) -> (n, C * len(bands)), 1 s Welch segments."""
    from scipy.signal import welch

    freqs, psd = welch(windows, fs=sfreq, nperseg=int(sfreq), axis=-1)
    powers = [psd[..., (freqs >= lo) & (freqs < hi)].sum(axis=-1) for lo, hi in bands]
    return np.log10(np.stack(powers, axis=-1) + 1e-12).reshape(len(windows), -1)


def _split_arrays(cache: str | os.PathLike, split: str, seed: int, val_fraction: float,
                  channels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and file keys of every window of ``split``."""
    ds = WindowDataset(cache, split, val_fraction=val_fraction, seed=seed, channels=channels)
    if len(ds) == 0:
        raise ValueError(f"split {split!r} of {cache} has no windows with channels "
                         f"{list(channels)}")
    x = np.stack([ds[i][0].numpy() for i in range(len(ds))])
    files = np.array([ds.files[f]["key"] for f in ds.file_of])
    return band_power_features(x, ds.sfreq), ds.labels, files


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None


def run_baseline(cache: str | os.PathLike, *, seed: int = 0, val_fraction: float = 0.2,
                 channels: Sequence[str] = TCP20, C: float = 0.1) -> dict:
    """Fit on the train split; AUROC per window (and per recording, mean probability) on val/test.

    ``channels`` defaults to the 20 TCP channels every TUAB recording has.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train, _ = _split_arrays(cache, "train", seed, val_fraction, channels)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    model.fit(x_train, y_train)
    result: dict = {"features": f"log10 band power {list(BANDS)} Hz x {len(channels)} channels",
                    "C": C, "seed": seed, "windows": {"train": int(len(y_train))}}
    for split in ("val", "test"):
        x, y, files = _split_arrays(cache, split, seed, val_fraction, channels)
        prob = model.predict_proba(x)[:, 1]
        keys = sorted(set(files.tolist()))
        file_prob = np.array([prob[files == k].mean() for k in keys])
        file_label = np.array([y[files == k][0] for k in keys])
        result["windows"][split] = int(len(y))
        result[f"auroc_{split}"] = _auroc(y, prob)
        result[f"auroc_{split}_recording"] = _auroc(file_label, file_prob)
    return result
