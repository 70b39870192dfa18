"""The sample frame of the demo firmware (firmware/runtime/lumamba_stream.h), written on the host.

    A5 5A | seq u16 | n_channels u8 | n_instants u8 | int16 counts, instant-major | CRC-16 u16

all little-endian; the CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over seq..payload,
computed here with :func:`binascii.crc_hqx`, an implementation independent of the firmware's.
A frame with n_instants = 0 ends the stream.
"""
from __future__ import annotations

import binascii
import struct

import numpy as np

SYNC = b"\xa5\x5a"
MAX_INSTANTS = 16     # LUMAMBA_STREAM_MAX_INSTANTS
MAX_CHANNELS = 64     # LUMAMBA_STREAM_MAX_CHANNELS
HEADER_BYTES = 6
CRC_BYTES = 2


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data``."""
    return binascii.crc_hqx(data, crc)


def encode_frame(seq: int, counts: np.ndarray) -> bytes:
    """One frame of ``counts`` (n_instants, n_channels) int16 with sequence number ``seq``."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.dtype != np.int16:
        raise ValueError(f"counts must be an int16 (n_instants, n_channels) array, got {counts.dtype}{counts.shape}")
    n_instants, n_channels = counts.shape
    if not 1 <= n_channels <= MAX_CHANNELS or not 0 <= n_instants <= MAX_INSTANTS:
        raise ValueError(f"a frame holds 1..{MAX_CHANNELS} channels and 0..{MAX_INSTANTS} instants, "
                         f"got {n_channels} and {n_instants}")
    body = struct.pack("<HBB", seq & 0xFFFF, n_channels, n_instants) + counts.astype("<i2").tobytes()
    return SYNC + body + struct.pack("<H", crc16_ccitt(body))


def end_frame(seq: int, n_channels: int) -> bytes:
    """The end-of-stream frame (n_instants = 0)."""
    return encode_frame(seq, np.zeros((0, n_channels), np.int16))


def encode_stream(counts: np.ndarray, instants_per_frame: int = 8) -> list[bytes]:
    """``counts`` (n_instants, n_channels) int16 as consecutive frames (seq 0, 1, ...), the last
    one possibly shorter, followed by the end-of-stream frame."""
    if not 1 <= instants_per_frame <= MAX_INSTANTS:
        raise ValueError(f"instants per frame must be 1..{MAX_INSTANTS}, got {instants_per_frame}")
    frames = [encode_frame(i, counts[start:start + instants_per_frame])
              for i, start in enumerate(range(0, len(counts), instants_per_frame))]
    frames.append(end_frame(len(frames), counts.shape[1]))
    return frames
