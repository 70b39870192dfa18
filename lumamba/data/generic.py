"""Any corpus, any montage: arrays or EDF files + channel names + sampling rate -> windows.

This is the path for fine-tuning on a user's own recordings. The windows are made exactly like the
TUAB ones (same filters, 256 Hz, 5 s, per-window z-score); the montage is the user's: the
channels as given (e.g. 16 referential electrodes), explicit bipolar pairs ``["FP1-F7", ...]``,
or ``"tcp"``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .cache import PrepareSummary, fingerprint, prepare_cache
from .channels import canonical_electrode
from .edf_reader import Signals, read_edf
from .preprocess import Montage, PreprocessConfig, Windows, preprocess

UNIT_TO_MICROVOLT = {"uV": 1.0, "mV": 1e3, "V": 1e6}
_KEY = re.compile(r"^[A-Za-z0-9._-]+$")
# Scalp EEG has a per-channel standard deviation of a few to a few hundred microvolts. Outside this
# range the declared unit is probably wrong (volts declared as microvolts give ~1e-5 "uV").
PLAUSIBLE_STD_UV = (0.5, 5_000.0)

log = logging.getLogger("lumamba.data")


def check_unit(unit: str) -> None:
    """A known amplitude unit, else a ValueError listing them."""
    if unit not in UNIT_TO_MICROVOLT:
        raise ValueError(f"unit {unit!r} is not one of {sorted(UNIT_TO_MICROVOLT)}")


def check_sfreq_value(sfreq, what: str = "sampling rate") -> float:
    """A positive finite number (the rate in Hz), else a ValueError naming the value."""
    if isinstance(sfreq, bool) or not isinstance(sfreq, (int, float, np.number)) or not math.isfinite(sfreq) \
            or sfreq <= 0:
        raise ValueError(f"{what} must be positive (a finite number of Hz), got {sfreq!r}")
    return float(sfreq)


def _to_microvolts(data: np.ndarray, unit: str) -> np.ndarray:
    check_unit(unit)
    return np.asarray(data, dtype=np.float64) * UNIT_TO_MICROVOLT[unit]


def warn_implausible_amplitude(data_uv: np.ndarray, unit: str, source: str) -> bool:
    """Log a warning (and return True) when the typical channel amplitude does not look like EEG
    in the declared unit; the data are still used."""
    finite = data_uv[:, np.isfinite(data_uv).all(axis=0)] if data_uv.size else data_uv
    if finite.shape[-1] < 2:
        return False
    std = float(np.median(finite.std(axis=1)))
    low, high = PLAUSIBLE_STD_UV
    if low <= std <= high or std == 0.0:
        return False
    guess = min(UNIT_TO_MICROVOLT, key=lambda u: abs(math.log10(max(std, 1e-30) * UNIT_TO_MICROVOLT[u] /
                                                                    UNIT_TO_MICROVOLT[unit] / 30.0)))
    log.warning("%s: typical channel std is %.3g uV with unit=%r; scalp EEG is %g-%g uV. Is the unit %r?",
                source, std, unit, low, high, guess)
    return True


def _array_signals(data: np.ndarray, ch_names: Sequence[str], sfreq: float, unit: str,
                   source: str = "<array>") -> Signals:
    data = _to_microvolts(data, unit)
    if data.ndim != 2 or data.shape[0] != len(ch_names):
        raise ValueError(f"data has shape {data.shape}; expected (channels, samples) with one "
                         f"row per channel name ({len(ch_names)} names)")
    sfreq = check_sfreq_value(sfreq)
    warn_implausible_amplitude(data, unit, source)
    names = [canonical_electrode(n) for n in ch_names]
    if len(set(names)) != len(names):
        raise ValueError(f"channel names repeat after normalisation: {list(ch_names)}")
    return Signals(data=data, channels=names, labels=list(ch_names), sfreq=float(sfreq))


def windows_from_array(data: np.ndarray, ch_names: Sequence[str], sfreq: float,
                       montage: Montage = None, unit: str = "uV",
                       config: PreprocessConfig = PreprocessConfig()) -> Windows:
    """Windows from a (channels, samples) array whose rows are named ``ch_names``."""
    signals = _array_signals(data, ch_names, sfreq, unit)
    return preprocess(signals.data, signals.channels, signals.sfreq, montage, config,
                      labels=signals.labels)


def windows_from_edf(path: str | os.PathLike, ch_names: Sequence[str], montage: Montage = None,
                     config: PreprocessConfig = PreprocessConfig()) -> Windows:
    """Windows from the channels ``ch_names`` of an EDF file (labels matched like TUH ones)."""
    signals = read_edf(path, electrodes=ch_names, optional=())
    return preprocess(signals.data, signals.channels, signals.sfreq, montage, config,
                      labels=signals.labels)


def with_reference(signals: Signals, reference: str | None) -> Signals:
    """Name each channel after its reference: electrode ``A1`` recorded against ``CZ`` is the
    derivation ``A1-CZ`` (the model places it between the two electrodes)."""
    if not reference:
        return signals
    ref = canonical_electrode(reference)
    if ref in signals.channels:
        raise ValueError(f"channel {ref} is the reference itself (a flat line); leave it out")
    return Signals(data=signals.data, channels=[f"{c}-{ref}" for c in signals.channels], labels=signals.labels,
                   sfreq=signals.sfreq, age=signals.age)


@dataclass
class Recording:
    """One recording of another corpus, for :func:`prepare_recordings`.

    Give either ``data`` (channels, samples) in ``unit`` with ``sfreq``, or ``path`` to an EDF
    file (its own sampling rate is used). ``ch_names`` name the rows of ``data`` or the EDF
    channels to pick. ``official_set`` "eval" puts the recording in the test split.
    """

    key: str
    label: int
    subject: str
    ch_names: Sequence[str]
    data: np.ndarray | None = None
    sfreq: float | None = None
    path: str | None = None
    unit: str = "uV"
    official_set: str = "train"
    reference: str | None = None   # the electrode the channels are referenced to: "A1" -> "A1-CZ"
    _fingerprint: str | list | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ValueError(f"recording key {self.key!r} must match {_KEY.pattern}")
        if (self.data is None) == (self.path is None):
            raise ValueError(f"recording {self.key}: give exactly one of data= and path=")
        if self.data is not None and self.sfreq is None:
            raise ValueError(f"recording {self.key}: data= needs sfreq=")
        if self.data is not None:
            try:
                check_sfreq_value(self.sfreq, "sfreq")
                check_unit(self.unit)
            except ValueError as e:
                raise ValueError(f"recording {self.key}: {e}") from None
        if self.official_set not in ("train", "eval"):
            raise ValueError(f"recording {self.key}: official_set must be 'train' or 'eval'")
        if self.data is not None:
            digest = hashlib.sha256(np.ascontiguousarray(self.data).tobytes())
            digest.update(repr((list(self.ch_names), float(self.sfreq), self.unit)).encode())
            self._fingerprint = digest.hexdigest()[:32]

    @property
    def source(self) -> str:
        return self.path if self.path is not None else f"<array {self.key}>"

    def load(self) -> Signals:
        if self.path is not None:
            signals = read_edf(self.path, electrodes=self.ch_names, optional=())
        else:
            signals = _array_signals(self.data, self.ch_names, self.sfreq, self.unit, self.source)
        return with_reference(signals, self.reference)

    def metadata(self) -> dict:
        fp = self._fingerprint   # None for EDF files: the cache hashes the file's content
        return {"source": self.source, "official_set": self.official_set,
                "label": int(self.label), "subject": self.subject, "fingerprint": fp}


def prepare_recordings(recordings: Iterable[Recording], out: str | os.PathLike, *,
                       montage: Montage = None, config: PreprocessConfig = PreprocessConfig(),
                       workers: int = 2, progress: bool = True) -> PrepareSummary:
    """Preprocess recordings of any corpus into a window cache (same format as TUAB's)."""
    return prepare_cache(recordings, out, montage=montage, config=config, workers=workers,
                         progress=progress)
