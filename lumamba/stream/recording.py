"""A recording for lumamba-stream: continuous microvolts at the model's rate, channels in the
model's order, with per-sample labels where the file has them.

- ``.edf``: the electrodes the model's channels need, read with lumamba.data (MNE), band-pass,
  notch and resampling to 256 Hz exactly as for training, then the montage (e.g. TCP bipolar).
- ``.npz`` continuous: ``data`` (C, N) microvolts, ``channels`` (C,), ``sfreq`` and optionally
  ``labels`` (N,) ints (-1: none); filtered and resampled like an EDF.
- ``.npz`` window set of the generic path (``x``, ``y``, ``channels``, ``split``, see
  lumamba.train.data.save_npz_windows): its windows, already preprocessed, one after another;
  ``y`` labels each window's samples. ``x`` is taken as microvolts.

Filtering, resampling and the montage happen here, on the host (on a wearable: in the analogue
front end or before the samples are framed); the per-window normalisation (the model's method) happens on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SFREQ = 256.0  # the model's sampling rate (lumamba.data.preprocess.PreprocessConfig)


class RecordingError(ValueError):
    """The recording cannot be streamed to this model; the message names file and channel."""


@dataclass
class Recording:
    """Continuous signal in the model's channel order."""
    uv: np.ndarray               # (C, N) float64 microvolts at sfreq
    channels: list[str]
    sfreq: float
    labels: np.ndarray | None    # (N,) int, -1 where unlabelled; None if the file has none
    source: str


def _is_bipolar(name: str) -> bool:
    return "-" in name


def _pick(path: Path, names: list[str], channels: list[str]) -> list[int]:
    missing = [c for c in channels if c not in names]
    if missing:
        raise RecordingError(f"{path}: channel(s) {', '.join(missing)} of the model are not in the recording "
                             f"(it has {', '.join(names)})")
    return [names.index(c) for c in channels]


def _filtered(path: Path, data: np.ndarray, names: list[str], sfreq: float, channels: list[str]) -> np.ndarray:
    """Filter and resample referential or ready-made channels, then derive the model's montage."""
    from lumamba.data.channels import canonical_electrode
    from lumamba.data.errors import UnusableRecording
    from lumamba.data.preprocess import derive_montage, filter_and_resample

    if all(n in names for n in channels) or all(_is_bipolar(n) for n in names):
        # the model's channels as they are (a bipolar file cannot be re-referenced)
        data, names = data[_pick(path, names, channels)], list(channels)
        montage = None
    else:
        names = [canonical_electrode(n) for n in names]
        montage = channels if all(_is_bipolar(c) for c in channels) else None
    filtered = filter_and_resample(np.asarray(data, np.float64), sfreq)
    try:
        derived, derived_names = derive_montage(filtered, names, montage)
    except UnusableRecording as exc:
        raise RecordingError(f"{path}: {exc}") from None
    return derived[_pick(path, derived_names, channels)]


def _resample_labels(labels: np.ndarray, n_out: int) -> np.ndarray:
    idx = np.minimum((np.arange(n_out) * len(labels)) // max(n_out, 1), len(labels) - 1)
    return labels[idx]


def load_recording(path: str | Path, channels: list[str]) -> Recording:
    """Load ``path`` (.edf or .npz) as the model's ``channels`` at 256 Hz (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"--recording {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".edf":
        from lumamba.data.channels import parse_bipolar
        from lumamba.data.edf_reader import read_edf
        from lumamba.data.errors import UnusableRecording
        electrodes = sorted({e for c in channels for e in (parse_bipolar(c) if _is_bipolar(c) else (c,))})
        try:
            signals = read_edf(path, electrodes=electrodes, optional=())
        except UnusableRecording as exc:
            raise RecordingError(f"{path}: {exc}") from None
        uv = _filtered(path, signals.data, list(signals.channels), signals.sfreq, channels)
        return Recording(uv, list(channels), SFREQ, None, str(path))
    if suffix != ".npz":
        raise RecordingError(f"--recording {path}: expected an .edf or .npz file")
    with np.load(path) as f:
        keys = set(f.files)
        if {"data", "channels", "sfreq"} <= keys:
            data, names, sfreq = f["data"], [str(c) for c in f["channels"]], float(f["sfreq"])
            labels = np.asarray(f["labels"], np.int64) if "labels" in keys else None
            if data.ndim != 2 or data.shape[0] != len(names):
                raise RecordingError(f"{path}: data has shape {data.shape}, expected ({len(names)} channels, samples)")
            if labels is not None and labels.shape != (data.shape[1],):
                raise RecordingError(f"{path}: labels has shape {labels.shape}, expected ({data.shape[1]},)")
            if sfreq <= 0:
                raise RecordingError(f"{path}: sfreq must be positive, got {sfreq}")
            uv = _filtered(path, data, names, sfreq, channels)
            if labels is not None:
                labels = _resample_labels(labels, uv.shape[1])
            return Recording(uv, list(channels), SFREQ, labels, str(path))
        if {"x", "y", "channels"} <= keys:
            x, y, names = f["x"], np.asarray(f["y"], np.int64), [str(c) for c in f["channels"]]
            x = x[:, _pick(path, names, channels)]
            uv = np.concatenate(list(x), axis=1).astype(np.float64)
            labels = np.repeat(y, x.shape[2])
            return Recording(uv, list(channels), SFREQ, labels, str(path))
    raise RecordingError(f"{path}: an .npz recording needs arrays data, channels, sfreq (continuous) "
                         f"or x, y, channels (windows); it has {', '.join(sorted(keys))}")
