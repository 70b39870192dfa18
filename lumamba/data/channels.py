"""Electrode names, label normalisation and the TCP bipolar montage.

TUH files label channels like ``EEG FP1-REF`` (``EEG Fp1-LE`` in linked-ear recordings); the
pipeline works with bare upper-case electrode names (``FP1``) and bipolar names (``FP1-F7``).
"""

from __future__ import annotations

import re
from typing import Sequence

from lumamba.montages import MONTAGES

# The 21 referential electrodes of the 10-20 system that TUH recordings carry.
TUH_ELECTRODES: tuple[str, ...] = (
    "FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2",
    "F7", "F8", "T3", "T4", "T5", "T6", "A1", "A2", "FZ", "CZ", "PZ",
)
EAR_ELECTRODES: tuple[str, ...] = ("A1", "A2")

# TCP bipolar montage in the published order (ear derivations A1-T3, T4-A2 last, so dropping them
# leaves the 20-channel montage as a prefix); one definition, in lumamba.montages.
TCP22: tuple[str, ...] = MONTAGES["tcp22"]
TCP20: tuple[str, ...] = TCP22[:20]

# 10-10 names for the four 10-20 electrodes that were renamed; files from other corpora use them.
ALIASES: dict[str, str] = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}

_PREFIX = re.compile(r"^EEG\s+")
_REFERENCE_SUFFIX = re.compile(r"-(REF|LE|AR|AVG)$")


def normalize_label(label: str) -> str:
    """Return the bare upper-case name of an EDF channel label.

    ``"EEG Fp1-REF"`` -> ``"FP1"``, ``"eeg c3-le"`` -> ``"C3"``, ``"EKG1-REF"`` -> ``"EKG1"``.
    Bipolar labels keep their dash (``"EEG FP1-F7"`` -> ``"FP1-F7"``).
    """
    name = label.strip().upper()
    name = _PREFIX.sub("", name)
    return _REFERENCE_SUFFIX.sub("", name).strip()


def canonical_electrode(label: str) -> str:
    """Normalise a label and map 10-10 aliases (T7, T8, P7, P8) onto their 10-20 names."""
    name = normalize_label(label)
    return ALIASES.get(name, name)


def parse_bipolar(name: str) -> tuple[str, str]:
    """Split a bipolar channel name ``"FP1-F7"`` into its two electrodes."""
    parts = name.upper().split("-")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"bipolar channel {name!r} is not of the form 'A-B'")
    return parts[0], parts[1]


def tcp_montage(electrodes: Sequence[str]) -> tuple[str, ...]:
    """The TCP channels derivable from ``electrodes``: 22 with both ears, 20 without.

    A recording with only one of A1/A2 gets the 20-channel montage, so that every window of
    a corpus has one of two channel sets.
    """
    available = set(electrodes)
    if all(ear in available for ear in EAR_ELECTRODES):
        return TCP22
    return TCP20
