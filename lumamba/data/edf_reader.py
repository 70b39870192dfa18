"""Read the scalp electrodes of a TUH-style EDF file, in microvolts, with its sampling rate and age.

The EDF header is parsed here (it is 256 bytes plus 256 per signal) for three things MNE does not
give: a truncation check before any sample is read, the per-signal sampling rates before picking,
and the ``Age:NN`` token of the patient field, which ``raw.info["subject_info"]`` drops. The
samples themselves are read with :func:`mne.io.read_raw_edf`, restricted to the picked channels so
that a fast non-scalp channel (e.g. a 1 kHz photic trigger) never forces an upsampled read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .channels import EAR_ELECTRODES, TUH_ELECTRODES, canonical_electrode
from .errors import UnusableRecording

UNKNOWN_AGE = 999  # TUH writes Age:999 when the age is not known
_AGE = re.compile(r"\bAge:\s*(\d+)", re.IGNORECASE)
# Physical dimensions MNE converts to volts (it reads any other as volts already, silently).
_VOLTAGE_UNITS = {"uV", "\u00b5V", "\u03bcV", "mV", "V"}


@dataclass(frozen=True)
class EdfHeader:
    """The fields of an EDF header this pipeline uses."""

    patient: str
    recording: str
    header_bytes: int
    n_records: int
    record_duration: float
    labels: tuple[str, ...]
    units: tuple[str, ...]
    samples_per_record: tuple[int, ...]

    @property
    def sfreqs(self) -> tuple[float, ...]:
        """Sampling rate of every signal in Hz."""
        return tuple(n / self.record_duration for n in self.samples_per_record)

    @property
    def expected_size(self) -> int:
        """File size in bytes implied by the header (16-bit samples)."""
        return self.header_bytes + self.n_records * 2 * sum(self.samples_per_record)


@dataclass
class Signals:
    """Referential signals of one recording: ``data`` is (channels, samples) in microvolts."""

    data: np.ndarray
    channels: list[str]  # canonical electrode names, e.g. "FP1"
    labels: list[str]  # the labels as written in the file, e.g. "EEG Fp1-LE"
    sfreq: float
    age: int | None = None


def parse_age(patient: str) -> int | None:
    """The age in years from a TUH patient field (``... Age:51``); None if absent or 999."""
    match = _AGE.search(patient)
    if match is None:
        return None
    age = int(match.group(1))
    return None if age == UNKNOWN_AGE else age


def read_edf_header(path: str | os.PathLike) -> EdfHeader:
    """Parse the header of ``path`` and check that the file holds every data record it announces.

    Raises :class:`UnusableRecording` (``unreadable`` or ``truncated``) instead of letting a
    damaged file reach the sample reader.
    """
    path = Path(path)
    with open(path, "rb") as f:
        fixed = f.read(256)
        if len(fixed) < 256:
            raise UnusableRecording("unreadable", f"{len(fixed)} bytes, shorter than an EDF header")
        text = fixed.decode("latin-1")
        try:
            header_bytes = int(text[184:192])
            n_records = int(text[236:244])
            record_duration = float(text[244:252])
            n_signals = int(text[252:256])
        except ValueError as exc:
            raise UnusableRecording("unreadable", f"malformed EDF header ({exc})") from None
        if n_signals <= 0 or header_bytes != 256 * (n_signals + 1) or record_duration <= 0:
            raise UnusableRecording(
                "unreadable",
                f"inconsistent EDF header ({n_signals} signals, {header_bytes} header bytes, "
                f"record duration {record_duration} s)",
            )
        signal_part = f.read(256 * n_signals).decode("latin-1")
    if len(signal_part) < 256 * n_signals:
        raise UnusableRecording("truncated", "header ends before its signal descriptions")

    def field(offset: int, width: int) -> list[str]:
        start = offset * n_signals
        return [signal_part[start + i * width: start + (i + 1) * width].strip()
                for i in range(n_signals)]

    # Per-signal fields are stored field by field: label 16, transducer 80, dimension 8,
    # physical min/max 8+8, digital min/max 8+8, prefiltering 80, samples per record 8.
    labels = field(0, 16)
    units = [signal_part[96 * n_signals + i * 8: 96 * n_signals + (i + 1) * 8].strip()
             for i in range(n_signals)]
    spr_offset = (16 + 80 + 8 + 8 + 8 + 8 + 8 + 80) * n_signals
    try:
        samples_per_record = [int(signal_part[spr_offset + i * 8: spr_offset + (i + 1) * 8])
                              for i in range(n_signals)]
    except ValueError as exc:
        raise UnusableRecording("unreadable", f"malformed samples-per-record ({exc})") from None
    if n_records < 0:
        raise UnusableRecording("unreadable", "number of data records is unknown (-1)")

    header = EdfHeader(
        patient=text[8:88].strip(),
        recording=text[88:168].strip(),
        header_bytes=header_bytes,
        n_records=n_records,
        record_duration=record_duration,
        labels=tuple(labels),
        units=tuple(units),
        samples_per_record=tuple(samples_per_record),
    )
    actual = path.stat().st_size
    if actual < header.expected_size:
        raise UnusableRecording(
            "truncated",
            f"{actual} bytes, header announces {header.expected_size} "
            f"({n_records} records of {record_duration:g} s)",
        )
    return header


def read_edf(
    path: str | os.PathLike,
    electrodes: Sequence[str] = TUH_ELECTRODES,
    optional: Sequence[str] = EAR_ELECTRODES,
) -> Signals:
    """Read ``electrodes`` (canonical names, in this order) from an EDF file, in microvolts.

    Labels match in any case, with or without the ``EEG`` prefix and ``-REF``/``-LE`` suffix;
    channels that are not among ``electrodes`` (EKG, PHOTIC, IBI, ...) are never read.
    Electrodes in ``optional`` may be absent; any other missing electrode makes the file
    unusable. The sampling rate is the file's own (all picked electrodes must share it).
    """
    import mne  # heavy import, only needed when samples are read

    header = read_edf_header(path)
    wanted = {canonical_electrode(e) for e in electrodes}
    found: dict[str, int] = {}
    for index, label in enumerate(header.labels):
        name = canonical_electrode(label)
        if name not in wanted:
            continue
        if name in found:
            first = header.labels[found[name]]
            raise UnusableRecording("duplicate electrode",
                                    f"{name} is both {first!r} and {label!r}")
        found[name] = index

    names = [canonical_electrode(e) for e in electrodes]
    missing = [e for e in names if e not in found and e not in set(optional)]
    if missing:
        raise UnusableRecording("missing electrodes", ", ".join(missing))
    picked = [e for e in names if e in found]
    indices = [found[e] for e in picked]
    labels = [header.labels[i] for i in indices]

    rates = sorted({header.sfreqs[i] for i in indices})
    if len(rates) > 1:
        raise UnusableRecording("mixed sampling rates",
                                f"electrodes sampled at {', '.join(f'{r:g}' for r in rates)} Hz")
    for i in indices:
        if header.units[i] not in _VOLTAGE_UNITS:
            raise UnusableRecording("unknown unit",
                                    f"{header.labels[i]!r} has physical dimension "
                                    f"{header.units[i]!r}, expected uV, mV or V")

    raw = mne.io.read_raw_edf(path, include=labels, preload=True, verbose="error")
    data = raw.get_data(picks=labels, units="uV")
    return Signals(data=data, channels=picked, labels=labels, sfreq=float(raw.info["sfreq"]),
                   age=parse_age(header.patient))
