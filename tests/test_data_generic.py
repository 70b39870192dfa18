"""The generic path: any corpus (arrays or EDF), any montage, the same windows as TUAB."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lumamba.data.cache import load_index
from lumamba.data.channels import TUH_ELECTRODES
from lumamba.data.dataset import WindowDataset
from lumamba.data.errors import UnusableRecording
from lumamba.data.generic import (Recording, prepare_recordings, windows_from_array,
                                  windows_from_edf)
from lumamba.data.preprocess import preprocess
from lumamba.data.synth import write_tuh_edf

# A 16-channel referential montage in 10-10 names, as in APAVA-like corpora.
UNSEEN = ["Fp1", "Fp2", "F7", "F3", "F4", "F8", "T7", "C3", "C4", "T8", "P7", "P3", "P4", "P8",
          "O1", "O2"]


def signals(n_channels: int, fs: float, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 30 * rng.standard_normal((n_channels, int(round(fs * seconds))))


def test_unseen_referential_montage_keeps_its_channels():
    x = signals(16, 200.0, 21)
    windows = windows_from_array(x, UNSEEN, 200.0)
    assert windows.channels == ["FP1", "FP2", "F7", "F3", "F4", "F8", "T3", "C3", "C4", "T4",
                                "T5", "P3", "P4", "T6", "O1", "O2"]
    assert windows.data.shape == (4, 16, 1280)
    np.testing.assert_allclose(windows.data.mean(-1), 0, atol=1e-5)
    # Same numbers as the TUAB path given the same (renamed) rows.
    direct = preprocess(x, windows.channels, 200.0, montage=None)
    np.testing.assert_array_equal(windows.data, direct.data)


def test_explicit_bipolar_pairs():
    windows = windows_from_array(signals(16, 256.0, 10), UNSEEN, 256.0,
                                 montage=["FP1-F7", "T3-T5", "O1-O2"])
    assert windows.channels == ["FP1-F7", "T3-T5", "O1-O2"]
    with pytest.raises(UnusableRecording, match="missing electrodes: CZ, PZ needed by the montage"):
        windows_from_array(signals(16, 256.0, 10), UNSEEN, 256.0, montage=["CZ-PZ"])


def test_units_are_converted_before_the_flat_check():
    x_mv = signals(16, 256.0, 10) / 1000  # 30 uV written in millivolts
    in_mv = windows_from_array(x_mv, UNSEEN, 256.0, unit="mV")
    in_uv = windows_from_array(x_mv * 1000, UNSEEN, 256.0, unit="uV")
    # 1e-3 * 1e3 is not exactly 1: the windows agree to float32 rounding of z-scores (~1e-7).
    np.testing.assert_allclose(in_mv.data, in_uv.data, rtol=0, atol=1e-5)
    with pytest.raises(UnusableRecording, match="flat channel"):
        windows_from_array(x_mv, UNSEEN, 256.0, unit="uV")  # 0.03 "uV" is flat
    with pytest.raises(ValueError, match="unit 'nV'"):
        windows_from_array(x_mv, UNSEEN, 256.0, unit="nV")


def test_bad_arrays_are_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match=r"shape \(16, 2560\); expected \(channels, samples\) "
                                         r"with one row per channel name \(15 names\)"):
        windows_from_array(signals(16, 256.0, 10), UNSEEN[:15], 256.0)
    with pytest.raises(ValueError, match="repeat after normalisation"):
        windows_from_array(signals(2, 256.0, 10), ["T7", "EEG T3-REF"], 256.0)
    with pytest.raises(ValueError, match="sampling rate must be positive"):
        windows_from_array(signals(16, 256.0, 10), UNSEEN, 0)


def test_edf_with_its_own_channel_names(tmp_path):
    x = signals(16, 500.0, 12)
    write_tuh_edf(tmp_path / "x.edf", [(f"EEG {n}-REF", row, 500.0, "uV")
                                       for n, row in zip(UNSEEN, x)]
                  + [("ECG", np.zeros(6000), 500.0, "uV")])
    windows = windows_from_edf(tmp_path / "x.edf", UNSEEN)
    assert windows.data.shape == (2, 16, 1280)
    # EDF quantisation (~0.01 uV on 30 uV signals) moves z-scores by ~1e-3 at most.
    np.testing.assert_allclose(windows.data, windows_from_array(x, UNSEEN, 500.0).data,
                               rtol=0, atol=2e-3)
    with pytest.raises(UnusableRecording, match="missing electrodes: CZ"):
        windows_from_edf(tmp_path / "x.edf", UNSEEN + ["Cz"])


def test_prepare_recordings_skips_bad_ones_and_makes_a_dataset(tmp_path, caplog):
    edf = tmp_path / "rec.edf"
    write_tuh_edf(edf, [(f"EEG {n}-REF", row, 256.0, "uV")
                        for n, row in zip(UNSEEN, signals(16, 256.0, 16, seed=5))])
    nan = signals(16, 256.0, 10, seed=2)
    nan[6, 300:400] = np.nan
    recordings = [
        Recording(key="p01-a", label=0, subject="p01", ch_names=UNSEEN, data=signals(16, 250.0, 12),
                  sfreq=250.0),
        Recording(key="p02-a", label=1, subject="p02", ch_names=UNSEEN, data=nan, sfreq=256.0),
        Recording(key="p03-a", label=1, subject="p03", ch_names=UNSEEN, path=str(edf),
                  official_set="eval"),
        Recording(key="p04-a", label=0, subject="p04", ch_names=UNSEEN,
                  path=str(tmp_path / "missing.edf")),
    ]
    with caplog.at_level(logging.WARNING, logger="lumamba.data"):
        summary = prepare_recordings(recordings, tmp_path / "cache", workers=1, progress=False)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "skipped <array p02-a>: non-finite samples: channel(s) T7",
        f"skipped {tmp_path}/missing.edf: read error: FileNotFoundError: No such file or directory "
        f"(not remembered: fix the access or the disk and run prepare again; it will be retried)",
        "1 file(s) could not be read (see above): they are not remembered as rejected; run prepare again "
        "once they are readable",
    ]
    assert not (tmp_path / "cache" / "rejected" / "p04-a.json").exists()   # a read error is not cached
    assert (summary.processed, dict(summary.skipped)) == (2, {"non-finite samples": 1,
                                                              "read error": 1})
    index = load_index(tmp_path / "cache")
    assert [(r["key"], r["n_windows"]) for r in index["files"]] == [("p01-a", 2), ("p03-a", 3)]
    test = WindowDataset(tmp_path / "cache", "test")
    assert len(test) == 3 and test[0][2]["channels"][6] == "T3" and test[0][1] == 1

    again = prepare_recordings(recordings, tmp_path / "cache", workers=1, progress=False)
    assert (again.processed, again.already_done) == (0, 2)


def test_recording_arguments_are_checked():
    with pytest.raises(ValueError, match="key 'a/b'"):
        Recording(key="a/b", label=0, subject="s", ch_names=["C3"], data=np.zeros((1, 10)),
                  sfreq=1.0)
    with pytest.raises(ValueError, match="exactly one of data= and path="):
        Recording(key="a", label=0, subject="s", ch_names=["C3"])
    with pytest.raises(ValueError, match="data= needs sfreq="):
        Recording(key="a", label=0, subject="s", ch_names=["C3"], data=np.zeros((1, 10)))
    with pytest.raises(ValueError, match="official_set"):
        Recording(key="a", label=0, subject="s", ch_names=["C3"], path="x.edf",
                  official_set="test")


def test_tcp_from_arrays_matches_tcp_from_tuab_names():
    x = signals(21, 256.0, 10)
    names = [f"EEG {e}-LE" for e in TUH_ELECTRODES]
    assert windows_from_array(x, names, 256.0, montage="tcp").channels[-2:] == ["A1-T3", "T4-A2"]
