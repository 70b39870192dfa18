"""EEG channel names: normalisation, parsing, and the decoder's channel-name vocabulary.

A channel is either monopolar ("CZ") or a bipolar pair "A-B" of two electrodes of the
10-05 system ("FP1-F7"). Names are case-insensitive; we store them upper-case.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = [
    "ChannelError",
    "CHANNEL_VOCABULARY",
    "ELECTRODE_ALIASES",
    "normalise_channel_name",
    "parse_channel",
    "vocabulary_index",
    "known_electrodes",
    "standard_1005_montage",
]


class ChannelError(ValueError):
    """A channel name, montage or montage file that cannot be used."""


# Rows of the published channel-name embedding (the decoder's `channel_emb`): sorted SEED,
# TUEG-TCP and Siena names. The order is part of the checkpoint format, so never re-sort it.
CHANNEL_VOCABULARY: tuple[str, ...] = (
    "A1-T3", "AF3", "AF4", "C1", "C2", "C3", "C3-CZ", "C3-P3", "C4", "C4-P4",
    "C4-T4", "C5", "C6", "CB1", "CB2", "CP1", "CP2", "CP3", "CP4", "CP5",
    "CP6", "CPZ", "CZ", "CZ-C4", "F1", "F10", "F2", "F3", "F3-C3", "F4",
    "F4-C4", "F5", "F6", "F7", "F7-T3", "F8", "F8-T4", "F9", "FC1", "FC2",
    "FC3", "FC4", "FC5", "FC6", "FCZ", "FP1", "FP1-F3", "FP1-F7", "FP2", "FP2-F4",
    "FP2-F8", "FPZ", "FT7", "FT8", "FZ", "O1", "O2", "OZ", "P1", "P2",
    "P3", "P3-O1", "P4", "P4-O2", "P5", "P6", "P7", "P8", "PO3", "PO4",
    "PO5", "PO6", "PO7", "PO8", "POZ", "PZ", "T3", "T3-C3", "T3-T5", "T4",
    "T4-A2", "T4-T6", "T5", "T5-O1", "T6", "T6-O2", "T7", "T8", "TP7", "TP8",
)

_VOCABULARY_ROW = {name: row for row, name in enumerate(CHANNEL_VOCABULARY)}

# Electrodes that are not in MNE's 10-05 montage under their own name. The cerebellar
# electrodes of the Neuroscan cap (used by SEED) sit at POO7/POO8; the published code maps
# them the same way (set_montage(match_alias={"cb1": "POO7", "cb2": "POO8"})).
ELECTRODE_ALIASES: dict[str, str] = {"CB1": "POO7", "CB2": "POO8"}


def normalise_channel_name(name: str) -> str:
    """Canonical spelling of a channel name: upper case, no whitespace ("fp1 - f7" -> "FP1-F7")."""
    if not isinstance(name, str):
        raise ChannelError(f"channel name {name!r} is not a string")
    return "".join(name.split()).upper()


@lru_cache(maxsize=1)
def standard_1005_montage():
    """MNE's standard 10-05 montage (renamed 'colin27_1005' in MNE 1.13; same coordinates)."""
    import mne  # imported lazily: MNE takes about a second to import

    kind = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    return mne.channels.make_standard_montage(kind)


@lru_cache(maxsize=1)
def known_electrodes() -> frozenset[str]:
    """Upper-case names of every electrode we can place: the 10-05 montage plus aliases."""
    return frozenset(n.upper() for n in standard_1005_montage().ch_names) | frozenset(ELECTRODE_ALIASES)


def parse_channel(name: str) -> tuple[str, str | None]:
    """Split a channel name into its electrodes: ("CZ", None) or ("FP1", "F7").

    Raises ChannelError, naming the channel, for an empty name, more than two electrodes,
    or an electrode that is not in the 10-05 system.
    """
    canonical = normalise_channel_name(name)
    if not canonical:
        raise ChannelError(f"channel {name!r} is empty; expected an electrode like 'CZ' or a pair like 'FP1-F7'")
    parts = canonical.split("-")
    if len(parts) > 2:
        raise ChannelError(
            f"channel {name!r} has {len(parts)} electrodes; expected one ('CZ') or a bipolar pair ('FP1-F7')"
        )
    known = known_electrodes()
    for part in parts:
        if part not in known:
            raise ChannelError(
                f"channel {name!r}: unknown electrode {part!r}; accepted are electrodes of the 10-05 "
                f"system (e.g. FP1, CZ, T3, POO7) or CB1/CB2, alone or as a pair 'A-B'"
            )
    if len(parts) == 2 and parts[0] == parts[1]:
        raise ChannelError(f"channel {name!r} pairs an electrode with itself; its signal would be zero")
    return (parts[0], parts[1]) if len(parts) == 2 else (parts[0], None)


def vocabulary_index(name: str) -> int | None:
    """Row of `name` in CHANNEL_VOCABULARY (case-insensitive), or None if it is not there."""
    return _VOCABULARY_ROW.get(normalise_channel_name(name))
