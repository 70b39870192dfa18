"""The demo firmware's frame parser and ring buffer (firmware/runtime/lumamba_stream.c), built
natively and fed frames written by lumamba.stream.framing (whose CRC is binascii's, an independent
implementation): good frames land in the ring in order, a corrupted or dropped byte is detected,
lost frames are counted and filled by sample-and-hold, and a window is cut from the ring as the
channel-major int16 counts lumamba_infer_counts() takes (its normalisation: test_normalise_c.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from lumamba.stream.framing import crc16_ccitt, encode_frame, encode_stream
from lumamba.stream.reference import apply_gaps, quantise
from toolchain import build_runtime_harness

HARNESS = Path(__file__).parent / "c" / "stream_harness.c"
OK, CRC_ERROR, HEADER_ERROR, END = 1, 2, 3, 4


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    return build_runtime_harness(HARNESS, ["lumamba_stream.c"], tmp_path_factory.mktemp("harness") / "stream_harness")


def run(harness: Path, data: bytes, n_channels: int, capacity: int, start: int = 0, length: int = 2):
    out = subprocess.run([str(harness), str(n_channels), str(capacity), str(start), str(length)],
                         input=data, capture_output=True, check=True).stdout.decode()
    events, ring, window = [], {}, None
    counters = None
    for line in out.splitlines():
        f = line.split()
        if f[0] == "EVENT":
            events.append((int(f[1]), int(f[2])))
        elif f[0] == "COUNTERS":
            counters = dict(zip(["ok", "crc", "header", "lost", "filled", "written"], map(int, f[1:])))
        elif f[0] == "I":
            ring[int(f[1])] = [int(v) for v in f[2:]]
        elif f[0] == "WINDOW":
            window = (int(f[1]), np.array([int(v) for v in f[2:]], np.int16))
    return events, counters, ring, window


def counts(n: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32768, size=(n, c)).astype(np.int16)


def test_crc_matches_the_catalogue_check_value():
    # CRC-16/CCITT-FALSE of "123456789" is 0x29B1 (the CRC catalogue's check value)
    assert crc16_ccitt(b"123456789") == 0x29B1


def test_good_frames_fill_the_ring_in_order(harness):
    x = counts(37, 5)
    data = b"".join(encode_stream(x, instants_per_frame=8))
    events, c, ring, _ = run(harness, data, 5, 64)
    assert [e for _, e in events] == [OK] * 5 + [END]
    assert c == {"ok": 5, "crc": 0, "header": 0, "lost": 0, "filled": 0, "written": 37}
    assert [ring[i] for i in range(37)] == x.tolist()


def test_garbage_before_and_between_frames_is_skipped(harness):
    x = counts(16, 3, seed=1)
    frames = encode_stream(x, instants_per_frame=8)
    data = b"\x00\xa5\x13" + frames[0] + b"\xa5\xa5" + frames[1] + frames[2]
    events, c, ring, _ = run(harness, data, 3, 32)
    assert c["ok"] == 2 and c["written"] == 16 and c["lost"] == 0
    assert [ring[i] for i in range(16)] == x.tolist()


def test_a_corrupted_byte_is_a_crc_error_and_its_frame_is_held(harness):
    x = counts(32, 4, seed=2)
    frames = encode_stream(x, instants_per_frame=8)
    bad = bytearray(frames[1])
    bad[10] ^= 0x40                              # one payload bit
    data = frames[0] + bytes(bad) + frames[2] + frames[3] + frames[4]
    events, c, ring, _ = run(harness, data, 4, 64)
    assert [e for _, e in events] == [OK, CRC_ERROR, OK, OK, END]
    assert c == {"ok": 3, "crc": 1, "header": 0, "lost": 1, "filled": 8, "written": 32}
    held = apply_gaps(x, [(1, 1)], 8)
    assert [ring[i] for i in range(32)] == held.tolist()
    assert (held[8:16] == x[7]).all()             # sample-and-hold of the last good instant


def test_a_dropped_byte_loses_that_frame_and_the_next(harness):
    x = counts(40, 2, seed=3)
    frames = encode_stream(x, instants_per_frame=8)
    short = frames[1][:7] + frames[1][8:]        # one payload byte missing
    data = frames[0] + short + b"".join(frames[2:])
    events, c, ring, _ = run(harness, data, 2, 64)
    # the short frame swallows the next frame's first byte (CRC error); that frame has lost its
    # sync, so the parser finds frame 3 next and counts frames 1 and 2 as lost
    assert c["crc"] == 1 and c["lost"] == 2 and c["ok"] == 3 and c["written"] == 40
    assert [ring[i] for i in range(40)] == apply_gaps(x, [(1, 2)], 8).tolist()


def test_a_wrong_channel_count_is_a_header_error(harness):
    x = counts(8, 3, seed=4)
    data = encode_frame(0, counts(8, 2)) + encode_frame(0, x)
    events, c, ring, _ = run(harness, data, 3, 16)
    assert [e for _, e in events] == [HEADER_ERROR, OK] and c["header"] == 1
    assert [ring[i] for i in range(8)] == x.tolist()


def test_ring_keeps_the_latest_instants_and_refuses_overwritten_windows(harness):
    x = counts(100, 2, seed=5)
    data = b"".join(encode_stream(x, instants_per_frame=10))
    _, c, ring, window = run(harness, data, 2, 32, start=60, length=32)
    assert c["written"] == 100 and sorted(ring) == list(range(68, 100))
    assert [ring[i] for i in range(68, 100)] == x[68:].tolist()
    assert window[0] == 2                        # LUMAMBA_STREAM_OVERWRITTEN
    _, _, _, window = run(harness, data, 2, 32, start=90, length=32)
    assert window[0] == 1                        # LUMAMBA_STREAM_NOT_READY


def test_window_is_cut_channel_major_across_the_ring_wrap(harness):
    rng = np.random.default_rng(6)
    uv = (rng.standard_normal((6, 300)) * 40 + rng.uniform(-200, 200, (6, 1))).astype(np.float64)
    x, clipped = quantise(uv, 0.1)
    assert clipped == 0 and x.shape == (300, 6)
    data = b"".join(encode_stream(x, instants_per_frame=16))
    _, _, _, (status, got) = run(harness, data, 6, 270, start=44, length=256)   # 270 < 300: wraps
    assert status == 0
    np.testing.assert_array_equal(got.reshape(6, 256), x[44:300].T)


def test_the_adc_scale_comes_from_the_projects_board_profile(tmp_path):
    """lumamba-stream quantises with the scale the project's board make fragment passes (rendered
    from the profile's adc.uv_per_count); a missing or bad one is a one-line error naming the file."""
    from lumamba.export.project.build import prepare_project
    from lumamba.stream.runner import StreamError, project_adc_scale

    prepare_project(tmp_path, "riscv32")
    assert project_adc_scale(tmp_path, "riscv32") == np.float32(0.1)
    mk = tmp_path / "firmware" / "boards" / "riscv32.mk"
    mk.write_text(mk.read_text().replace("-DLUMAMBA_ADC_UV_PER_COUNT=0.1f", "-DLUMAMBA_ADC_UV_PER_COUNT=-2f"))
    with pytest.raises(StreamError, match=rf"^{mk}: no valid -DLUMAMBA_ADC_UV_PER_COUNT") as err:
        project_adc_scale(tmp_path, "riscv32")
    assert "\n" not in str(err.value)
