"""EDF reading: TUH labels, non-scalp channels, per-file rates, microvolts, age, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from lumamba.data.channels import TUH_ELECTRODES, canonical_electrode, normalize_label
from lumamba.data.edf_reader import parse_age, read_edf, read_edf_header
from lumamba.data.errors import UnusableRecording
from lumamba.data.synth import write_tuh_edf

MIXED_CASE = {"FP1": "Fp1", "FP2": "Fp2", "FZ": "Fz", "CZ": "Cz", "PZ": "Pz"}


def electrode_data(fs: float, seconds: int, electrodes=TUH_ELECTRODES, seed: int = 0) -> dict:
    """A distinct, identifiable signal per electrode: its own sinusoid plus noise, in uV."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(fs * seconds)) / fs
    return {e: (20 + i) * np.sin(2 * np.pi * (1 + i) * t) + 5 * rng.standard_normal(t.size)
            for i, e in enumerate(electrodes)}


def write(path, data: dict, fs: float, suffix: str = "REF", mixed_case: bool = False,
          extras: bool = True, order=None, age=None, unit: str = "uV") -> list[tuple]:
    signals = [(f"EEG {MIXED_CASE.get(e, e) if mixed_case else e}-{suffix}", x, fs, unit)
               for e, x in data.items()]
    if extras:
        seconds = len(next(iter(data.values()))) / fs
        signals += [("EKG1-REF", 500 * np.ones(int(seconds * fs)), fs, "uV"),
                    ("PHOTIC-REF", np.zeros(int(seconds * 1000)), 1000.0, "uV"),
                    ("IBI", np.zeros(int(seconds)), 1.0, ""),
                    ("BURSTS", np.zeros(int(seconds)), 1.0, ""),
                    ("EEG ROC-REF", np.zeros(int(seconds * fs)), fs, "uV"),
                    ("EEG 26-REF", np.zeros(int(seconds * fs)), fs, "uV")]
    if order is not None:
        signals = [signals[i] for i in order]
    write_tuh_edf(path, signals, subject="aaaaaaab", sex="F", age=age)
    return signals


def quantisation_step(x: np.ndarray) -> float:
    """The EDF resolution the writer used for ``x`` (symmetric range over 65535 levels)."""
    peak = np.ceil(max(np.abs(x).max() * 1.05, 100.0))
    return 2 * peak / 65535


@pytest.mark.parametrize("label, name", [
    ("EEG FP1-REF", "FP1"), ("EEG Fp1-LE", "FP1"), ("eeg cz-ref", "CZ"), (" EEG O2-REF  ", "O2"),
    ("EKG1-REF", "EKG1"), ("EEG 26-REF", "26"), ("EEG FP1-F7", "FP1-F7"), ("IBI", "IBI"),
])
def test_normalize_label(label, name):
    assert normalize_label(label) == name


def test_canonical_electrode_maps_10_10_names():
    assert [canonical_electrode(f"EEG {n}-REF") for n in ("T7", "T8", "P7", "P8", "T3")] == \
        ["T3", "T4", "T5", "T6", "T3"]


@pytest.mark.parametrize("suffix, mixed_case", [("REF", False), ("LE", True), ("REF", True)])
def test_reads_scalp_electrodes_by_name_in_microvolts(tmp_path, suffix, mixed_case):
    fs = 250.0
    data = electrode_data(fs, 7)
    # Shuffled on purpose: the reader must pick by name, not by position.
    order = np.random.default_rng(1).permutation(len(data) + 6)
    write(tmp_path / "x.edf", data, fs, suffix=suffix, mixed_case=mixed_case, order=order)
    signals = read_edf(tmp_path / "x.edf")
    assert signals.channels == list(TUH_ELECTRODES)
    assert signals.sfreq == fs
    assert signals.data.shape == (21, 7 * 250)
    for row, e in zip(signals.data, TUH_ELECTRODES):
        # EDF stores 16-bit integers: the round trip is exact to half a quantisation step.
        np.testing.assert_allclose(row, data[e], rtol=0, atol=quantisation_step(data[e]) / 2 + 1e-9)
    shown = MIXED_CASE.get("FP1", "FP1") if mixed_case else "FP1"
    assert signals.labels[0] == f"EEG {shown}-{suffix}"
    assert not any(lab.startswith(("EKG", "PHOTIC", "IBI", "BURSTS")) for lab in signals.labels)
    assert "EEG ROC-REF" not in signals.labels and "EEG 26-REF" not in signals.labels


@pytest.mark.parametrize("fs", [250.0, 256.0, 512.0])
def test_sampling_rate_is_the_files_own(tmp_path, fs):
    # A 1 kHz photic channel in the same file must not upsample the electrodes.
    write(tmp_path / "x.edf", electrode_data(fs, 3), fs)
    signals = read_edf(tmp_path / "x.edf")
    assert signals.sfreq == fs
    assert signals.data.shape[1] == 3 * fs


def test_ear_electrodes_are_optional(tmp_path):
    data = {e: x for e, x in electrode_data(256.0, 3).items() if e not in ("A1", "A2")}
    write(tmp_path / "x.edf", data, 256.0)
    signals = read_edf(tmp_path / "x.edf")
    assert signals.channels == [e for e in TUH_ELECTRODES if e not in ("A1", "A2")]


@pytest.mark.parametrize("age, expected", [(51, 51), (7, 7), (None, None)])
def test_age_from_the_patient_field(tmp_path, age, expected):
    write(tmp_path / "x.edf", electrode_data(256.0, 2), 256.0, age=age)
    header = read_edf_header(tmp_path / "x.edf")
    assert f"Age:{age if age is not None else 999}" in header.patient  # what TUH writes
    assert read_edf(tmp_path / "x.edf").age == expected


@pytest.mark.parametrize("field, age", [
    ("00000768 F 01-JAN-1952 00000768 Age:51", 51),
    ("aaaaaaab M 01-JAN-1979 aaaaaaab Age:999", None),
    ("X X X X", None), ("aaaaaaab X X aaaaaaab age: 3", 3),
])
def test_parse_age(field, age):
    assert parse_age(field) == age


def _reason(path) -> UnusableRecording:
    with pytest.raises(UnusableRecording) as info:
        read_edf(path)
    return info.value


def test_missing_electrodes_are_named(tmp_path):
    data = {e: x for e, x in electrode_data(256.0, 2).items() if e not in ("C3", "PZ")}
    write(tmp_path / "x.edf", data, 256.0)
    exc = _reason(tmp_path / "x.edf")
    assert exc.reason == "missing electrodes" and exc.detail == "C3, PZ"


def test_truncated_file_is_rejected_before_reading(tmp_path):
    write(tmp_path / "x.edf", electrode_data(256.0, 4), 256.0)
    raw = (tmp_path / "x.edf").read_bytes()
    (tmp_path / "x.edf").write_bytes(raw[: len(raw) - 1000])
    exc = _reason(tmp_path / "x.edf")
    assert exc.reason == "truncated"
    assert f"{len(raw) - 1000} bytes, header announces {len(raw)}" in exc.detail


def test_duplicate_electrode_is_rejected(tmp_path):
    data = electrode_data(256.0, 2)
    signals = [(f"EEG {e}-REF", x, 256.0, "uV") for e, x in data.items()]
    signals.append(("EEG Fp1-LE", data["FP1"], 256.0, "uV"))
    write_tuh_edf(tmp_path / "x.edf", signals)
    exc = _reason(tmp_path / "x.edf")
    assert exc.reason == "duplicate electrode" and "'EEG FP1-REF'" in exc.detail


def test_electrodes_at_different_rates_are_rejected(tmp_path):
    data = electrode_data(256.0, 2)
    signals = [(f"EEG {e}-REF", x, 256.0, "uV") for e, x in data.items() if e != "O2"]
    signals.append(("EEG O2-REF", np.zeros(1024), 512.0, "uV"))
    write_tuh_edf(tmp_path / "x.edf", signals)
    exc = _reason(tmp_path / "x.edf")
    assert exc.reason == "mixed sampling rates"
    assert exc.detail == "electrodes sampled at 256, 512 Hz"


def test_unknown_physical_unit_is_rejected(tmp_path):
    # MNE would silently read a blank unit as volts, a factor 1e6 off.
    write(tmp_path / "x.edf", electrode_data(256.0, 2), 256.0, unit="", extras=False)
    exc = _reason(tmp_path / "x.edf")
    assert exc.reason == "unknown unit" and "'EEG FP1-REF'" in exc.detail


def test_not_an_edf_file(tmp_path):
    (tmp_path / "x.edf").write_bytes(b"this is not an EDF file" * 20)
    assert _reason(tmp_path / "x.edf").reason == "unreadable"
