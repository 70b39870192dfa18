"""Signals -> model windows: filter, resample, montage, 5 s windows, normalisation (per-window z-score
by default; see :mod:`lumamba.normalise`).

Pure functions on ``(channels, samples)`` arrays in microvolts; filtering and resampling use MNE
with the settings LUNA/LuMamba used on TUAB (FIR band-pass 0.1-75 Hz, 60 Hz notch, FFT
resampling to 256 Hz). Every check that can reject a recording raises
:class:`~lumamba.data.errors.UnusableRecording` naming the channel at fault.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .channels import parse_bipolar, tcp_montage
from .errors import UnusableRecording
from ..normalise import DEFAULT as DEFAULT_NORMALISATION, EPS as ZSCORE_EPS, check_normalisation, normalise

# A channel whose standard deviation over the whole recording is below this is treated as flat
# (disconnected or zeroed). Scalp EEG is tens of microvolts; EDF quantisation noise with a
# +-500 uV range is ~0.01 uV, so 0.1 uV separates the two by two orders of magnitude each way.
FLAT_UV = 0.1
# The model cuts windows into patches of this many samples (LuMambaConfig.patch_size of every config).
PATCH_SAMPLES = 40
FIT_PATCH = ("crop", "pad")
# Below this rate a recording has no EEG left to model: its Nyquist frequency (50 Hz) must reach the
# beta and low-gamma bands; 128 Hz corpora pass, 1 Hz or 10 Hz channels (e.g. a mislabelled
# detector channel) would otherwise be upsampled to 256 Hz without a word.
MIN_SFREQ = 100.0

Montage = str | Sequence[str] | None  # "tcp", explicit bipolar names, or None (as given)


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings that define the windows; a cache records them and refuses to mix settings."""

    l_freq: float = 0.1
    h_freq: float = 75.0
    notch: float | None = 60.0
    sfreq: float = 256.0
    window_s: float = 5.0
    normalisation: str = DEFAULT_NORMALISATION   # see lumamba.normalise
    fit_patch: str | None = None  # "crop"/"pad" a window to a multiple of the patch; None: it must be one

    def __post_init__(self) -> None:
        check_normalisation(self.normalisation)
        if not (np.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"window length must be a positive number of seconds, got {self.window_s!r}")
        if self.fit_patch not in (None, *FIT_PATCH):
            raise ValueError(f"fit_patch must be 'crop', 'pad' or None, got {self.fit_patch!r}")
        n = self.window_samples
        if n % PATCH_SAMPLES and self.fit_patch is None:
            down, up = n // PATCH_SAMPLES * PATCH_SAMPLES, -(-n // PATCH_SAMPLES) * PATCH_SAMPLES
            raise ValueError(
                f"window length {self.window_s:g} s at {self.sfreq:g} Hz is {n} samples, not a multiple of the "
                f"{PATCH_SAMPLES}-sample patch: use {down / self.sfreq:g} s or {up / self.sfreq:g} s, or "
                f"--crop (to {down} samples) / --pad (to {up} samples)")
        if self.fit_patch == "crop" and n < PATCH_SAMPLES:
            raise ValueError(f"window length {self.window_s:g} s is {n} samples, shorter than one "
                             f"{PATCH_SAMPLES}-sample patch")

    @property
    def window_samples(self) -> int:
        """Samples cut from the recording per window."""
        return int(round(self.sfreq * self.window_s))

    @property
    def model_samples(self) -> int:
        """Samples per window as stored (after crop/pad): a multiple of the patch."""
        n = self.window_samples
        if self.fit_patch == "crop":
            return n // PATCH_SAMPLES * PATCH_SAMPLES
        if self.fit_patch == "pad":
            return -(-n // PATCH_SAMPLES) * PATCH_SAMPLES
        return n

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Windows:
    """Windows of one recording: ``data`` is float32 (n_windows, channels, window_samples)."""

    data: np.ndarray
    channels: list[str]


def check_signals(data: np.ndarray, labels: Sequence[str]) -> None:
    """Reject non-finite or flat channels; ``labels`` name the rows in the error."""
    if data.ndim != 2 or data.shape[0] != len(labels):
        raise ValueError(f"data of shape {data.shape} does not match {len(labels)} channel names")
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        bad = [labels[i] for i in np.flatnonzero(~finite)]
        raise UnusableRecording("non-finite samples", f"channel(s) {', '.join(bad)}")
    std = data.std(axis=1)
    if (std < FLAT_UV).any():
        bad = [f"{labels[i]} (std {std[i]:.3g} uV)" for i in np.flatnonzero(std < FLAT_UV)]
        raise UnusableRecording("flat channel", ", ".join(bad))


def check_sfreq(sfreq: float) -> None:
    """Refuse a sampling rate that is not a number, or too low to hold EEG (see MIN_SFREQ)."""
    if not (isinstance(sfreq, (int, float)) and np.isfinite(sfreq) and sfreq > 0):
        raise UnusableRecording("bad sampling rate", f"{sfreq!r} Hz; must be a positive finite number")
    if sfreq < MIN_SFREQ:
        raise UnusableRecording("sampling rate too low",
                                f"{sfreq:g} Hz; the pipeline needs at least {MIN_SFREQ:g} Hz (it band-passes "
                                f"0.1-75 Hz and resamples to 256 Hz; nothing above {sfreq / 2:g} Hz was recorded)")


def resampled_length(n_samples: int, sfreq: float, target: float) -> int:
    """Number of samples after FFT resampling ``n_samples`` from ``sfreq`` to ``target``."""
    return int(round(n_samples * target / sfreq))


def filter_and_resample(data: np.ndarray, sfreq: float,
                        config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Band-pass, notch and resample every row of ``data`` (float64 in, float64 out).

    A low-pass or notch at or above the Nyquist frequency of ``sfreq`` is skipped: the signal has
    nothing there to remove (e.g. a 128 Hz recording from another corpus).
    """
    import mne

    nyquist = sfreq / 2
    h_freq = config.h_freq if config.h_freq < nyquist else None
    # verbose="error": MNE warns when a recording is shorter than the 33 s high-pass filter;
    # it still filters correctly (with padding), which is the behaviour we want for short files.
    out = mne.filter.filter_data(data, sfreq, config.l_freq, h_freq, verbose="error")
    if config.notch is not None and config.notch < nyquist:
        out = mne.filter.notch_filter(out, sfreq, config.notch, verbose="error")
    if sfreq != config.sfreq:
        out = mne.filter.resample(out, up=config.sfreq, down=sfreq, npad="auto", verbose="error")
    return out


def derive_montage(data: np.ndarray, channels: Sequence[str],
                   montage: Montage) -> tuple[np.ndarray, list[str]]:
    """Apply a montage to referential ``data`` whose rows are the electrodes ``channels``.

    ``"tcp"`` gives the 22-channel TCP bipolar montage (20 without A1/A2); a list of ``"A-B"``
    names gives those derivations; None keeps the channels as they are.
    """
    channels = list(channels)
    if montage is None:
        return data, channels
    names = tcp_montage(channels) if isinstance(montage, str) and montage == "tcp" else montage
    if isinstance(names, str):
        raise ValueError(f"unknown montage {montage!r}: use 'tcp', a list of 'A-B' names or None")
    row = {name: i for i, name in enumerate(channels)}
    pairs = [parse_bipolar(name) for name in names]
    missing = sorted({e for pair in pairs for e in pair if e not in row})
    if missing:
        raise UnusableRecording("missing electrodes",
                                f"{', '.join(missing)} needed by the montage")
    derived = np.stack([data[row[a]] - data[row[b]] for a, b in pairs])
    return derived, [f"{a}-{b}" for a, b in pairs]


def cut_windows(data: np.ndarray, window_samples: int) -> np.ndarray:
    """Non-overlapping windows (n, channels, window_samples); the incomplete tail is dropped."""
    n = data.shape[1] // window_samples
    trimmed = data[:, : n * window_samples]
    return trimmed.reshape(data.shape[0], n, window_samples).transpose(1, 0, 2)


def zscore(windows: np.ndarray) -> np.ndarray:
    """Per window and channel: (x - mean) / (unbiased std + 1e-8)."""
    return normalise(windows, "zscore")


def fit_to_patch(windows: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Crop the end of each window, or pad it by reflection, to ``config.model_samples``."""
    n, target = windows.shape[-1], config.model_samples
    if target < n:
        return windows[..., :target]
    if target > n:
        return np.pad(windows, [(0, 0)] * (windows.ndim - 1) + [(0, target - n)], mode="reflect")
    return windows


def preprocess(data: np.ndarray, channels: Sequence[str], sfreq: float, montage: Montage = "tcp",
               config: PreprocessConfig = PreprocessConfig(),
               labels: Sequence[str] | None = None) -> Windows:
    """Referential microvolts -> z-scored float32 windows in ``montage``.

    ``labels`` (default: ``channels``) are the names used in error messages, e.g. the labels as
    written in the source file.
    """
    data = np.asarray(data, dtype=np.float64)
    check_sfreq(sfreq)
    check_signals(data, list(labels) if labels is not None else list(channels))
    n_out = resampled_length(data.shape[1], sfreq, config.sfreq)
    if n_out < config.window_samples:
        raise UnusableRecording(
            "too short", f"{data.shape[1] / sfreq:.2f} s, one window needs {config.window_s:g} s")
    filtered = filter_and_resample(data, sfreq, config)
    derived, names = derive_montage(filtered, channels, montage)
    flat = derived.std(axis=1) < FLAT_UV
    if flat.any():
        bad = ", ".join(names[i] for i in np.flatnonzero(flat))
        raise UnusableRecording("flat channel", f"{bad} after filtering "
                                                "(identical electrodes or only sub-0.1 Hz drift)")
    windows = normalise(fit_to_patch(cut_windows(derived, config.window_samples), config), config.normalisation)
    return Windows(data=windows.astype(np.float32), channels=names)
