"""Named channel montages, and montages read from text files.

Every montage is an ordered list of canonical channel names (see lumamba.channels). The
order matters only for how channels are laid out in a tensor: the model places each channel
by its name, never by its index.
"""

from __future__ import annotations

import os
from pathlib import Path

from lumamba.channels import ChannelError, normalise_channel_name, parse_channel

__all__ = ["MONTAGES", "load_montage"]

# TCP bipolar montage in the order of the published pre-training code: the ear pairs
# A1-T3 and T4-A2 come last, so dropping them leaves the 20-channel montage as a prefix.
_TCP22 = (
    "FP1-F7", "F7-T3", "T3-T5", "T5-O1", "FP2-F8", "F8-T4", "T4-T6", "T6-O2",
    "T3-C3", "C3-CZ", "CZ-C4", "C4-T4", "FP1-F3", "F3-C3", "C3-P3", "P3-O1",
    "FP2-F4", "F4-C4", "C4-P4", "P4-O2", "A1-T3", "T4-A2",
)

MONTAGES: dict[str, tuple[str, ...]] = {
    "tcp22": _TCP22,
    # Recordings without ear electrodes A1/A2.
    "tcp20": tuple(ch for ch in _TCP22 if ch not in ("A1-T3", "T4-A2")),
    # The official TUH TCP order, with A1-T3 and T4-A2 in the temporal chains.
    "tcp22_official": (
        "FP1-F7", "F7-T3", "T3-T5", "T5-O1", "FP2-F8", "F8-T4", "T4-T6", "T6-O2",
        "A1-T3", "T3-C3", "C3-CZ", "CZ-C4", "C4-T4", "T4-A2", "FP1-F3", "F3-C3",
        "C3-P3", "P3-O1", "FP2-F4", "F4-C4", "C4-P4", "P4-O2",
    ),
    # APAVA (Alzheimer's) recordings: 16 monopolar electrodes in the published order.
    "apava16": (
        "C3", "C4", "F3", "F4", "F7", "F8", "FP1", "FP2",
        "O1", "O2", "P3", "P4", "T3", "T4", "T5", "T6",
    ),
}


def load_montage(spec: str | os.PathLike) -> list[str]:
    """Channel names of a montage: a name in MONTAGES, or a text file.

    The file holds channel names one per line or comma separated; '#' starts a comment.
    Names are validated with parse_channel and returned in canonical (upper-case) form.
    Raises ChannelError naming the file (and line) for a missing file, an empty montage, a
    duplicate or an unknown channel.
    """
    if isinstance(spec, str) and spec in MONTAGES:
        return list(MONTAGES[spec])
    path = Path(spec)
    if not path.is_file():
        raise ChannelError(
            f"montage {str(spec)!r} is neither a built-in montage ({', '.join(MONTAGES)}) nor an existing file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ChannelError(f"{path}: cannot read montage file: {err}") from err

    channels: list[str] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        for entry in line.split("#", 1)[0].split(","):
            entry = entry.strip()
            if not entry:
                continue
            try:
                parse_channel(entry)
            except ChannelError as err:
                raise ChannelError(f"{path}:{line_no}: {err}") from None
            name = normalise_channel_name(entry)
            if name in first_line:
                raise ChannelError(
                    f"{path}:{line_no}: duplicate channel {name!r} (first listed on line {first_line[name]})"
                )
            first_line[name] = line_no
            channels.append(name)
    if not channels:
        raise ChannelError(f"{path}: montage file lists no channels")
    return channels
