"""tools/stream_recording.py: the recording `make stream-demo` streams (run as a script, as make does)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from lumamba.data.synth import ELECTRODES
from lumamba.stream.recording import load_recording
from lumamba.montages import load_montage

TOOL = Path(__file__).resolve().parents[1] / "tools" / "stream_recording.py"


def test_recording_is_normal_then_abnormal_and_loads_for_streaming(tmp_path):
    out = tmp_path / "rec.npz"
    run = subprocess.run([sys.executable, str(TOOL), "--out", str(out), "--seconds", "12"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rec = np.load(out)
    assert rec["data"].shape == (len(ELECTRODES), 12 * 256) and float(rec["sfreq"]) == 256.0
    assert list(rec["channels"]) == list(ELECTRODES) and np.isfinite(rec["data"]).all()
    np.testing.assert_array_equal(rec["labels"], np.repeat([0, 1], 6 * 256))
    channels = load_montage("tcp22")
    loaded = load_recording(out, channels)       # the montage is derived as lumamba-stream does
    assert loaded.uv.shape[0] == len(channels) and loaded.labels is not None


def test_too_short_recording_is_refused(tmp_path):
    run = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path / "r.npz"), "--seconds", "4"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--seconds 4: at least 10" in run.stderr
