"""Reliability of the data pipeline and `lumamba-data`: bad recordings, options and faults, built
here, each get one clear line; nothing half-written is left; errors of the moment are not cached."""
from __future__ import annotations

import csv
import errno
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import lumamba.data.cache as cache_module
from lumamba import normalise as norm
from lumamba.data.cache import load_index
from lumamba.data.cli import main as data_main
from lumamba.data.errors import UnusableRecording
from lumamba.data.generic import Recording, prepare_recordings, windows_from_array
from lumamba.data.importer import plan_import
from lumamba.data.preprocess import PreprocessConfig, preprocess
from lumamba.data.synth import write_tuh_edf


def eeg(n_channels: int, fs: float, seconds: float, seed: int = 0, scale: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((n_channels, int(round(fs * seconds))))


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---- normalisation: exact arithmetic against independent computations ----------------------------

def test_the_three_normalisations_against_their_definitions():
    rng = np.random.default_rng(0)
    w = rng.normal(40.0, 25.0, (3, 2, 1280))
    w[0, 0, :5] = 5000.0                       # an artefact burst
    mean, var = w.mean(-1, keepdims=True), ((w - w.mean(-1, keepdims=True)) ** 2).sum(-1, keepdims=True) / 1279
    np.testing.assert_allclose(norm.normalise(w, "zscore"), (w - mean) / (np.sqrt(var) + 1e-8), rtol=1e-12)
    s = np.sort(w, axis=-1)                    # quartiles by linear interpolation at (n-1)*q
    q = lambda p: s[..., int(np.floor(1279 * p))] + (1279 * p % 1) * (s[..., int(np.floor(1279 * p)) + 1] - s[..., int(np.floor(1279 * p))])
    iqr = (q(0.75) - q(0.25))[..., None]
    np.testing.assert_allclose(norm.normalise(w, "robust"), (w - q(0.5)[..., None]) / (iqr / 1.349 + 1e-8),
                               rtol=1e-12)
    np.testing.assert_array_equal(norm.normalise(w, "fixed"), w / 50.0)
    # The artefact shrinks the z-scored window, hardly the robust one; fixed keeps the DC level (40 uV).
    assert np.abs(norm.normalise(w, "robust")[0, 0, 100:]).std() > 2 * np.abs(norm.normalise(w, "zscore")[0, 0, 100:]).std()
    assert abs(norm.normalise(w, "fixed")[1].mean() - 0.8) < 0.05
    for method in norm.NORMALISATIONS:         # the torch path (for the export side) is the same arithmetic
        np.testing.assert_allclose(norm.normalise(torch.from_numpy(w), method).numpy(), norm.normalise(w, method),
                                   rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="normalisation 'minmax' is not one of zscore, robust, fixed"):
        norm.normalise(w, "minmax")


def test_normalisation_is_recorded_with_the_cache(tmp_path):
    rec = [Recording(key="a", label=0, subject="s1", ch_names=["C3", "C4"], data=eeg(2, 256.0, 10), sfreq=256.0)]
    prepare_recordings(rec, tmp_path / "c", config=PreprocessConfig(normalisation="fixed"), workers=1, progress=False)
    assert load_index(tmp_path / "c")["config"]["normalisation"] == "fixed"
    with pytest.raises(ValueError, match="was built with"):     # one cache, one normalisation
        prepare_recordings(rec, tmp_path / "c", workers=1, progress=False)


# ---- sampling rate, unit, amplitude ----------------------------------------------------------------

@pytest.mark.parametrize("fs", [1.0, 10.0, 64.0])
def test_too_low_sampling_rate_is_rejected_not_upsampled(tmp_path, fs):
    path = tmp_path / f"low{int(fs)}.edf"
    write_tuh_edf(path, [(f"EEG {n}-REF", row, fs, "uV") for n, row in zip(["C3", "C4"], eeg(2, fs, 40))])
    summary = prepare_recordings([Recording(key="low", label=0, subject="s", ch_names=["C3", "C4"], path=str(path))],
                                 tmp_path / "c", workers=1, progress=False)
    rejected = load_index(tmp_path / "c")["rejected"][0]
    assert dict(summary.skipped) == {"sampling rate too low": 1}
    assert rejected["detail"].startswith(f"{fs:g} Hz; the pipeline needs at least 100 Hz")


@pytest.mark.parametrize("sfreq, text", [
    (float("nan"), "sfreq must be positive (a finite number of Hz), got nan"),
    (float("inf"), "got inf"), (-256.0, "got -256.0"), (0, "got 0"), ("256", "got '256'"),
])
def test_bad_sampling_rate_of_arrays(sfreq, text):
    with pytest.raises(ValueError, match="recording a: .*" + re.escape(text)):
        Recording(key="a", label=0, subject="s", ch_names=["C3"], data=np.zeros((1, 10)), sfreq=sfreq)


def test_unknown_unit_and_implausible_amplitude(caplog):
    with pytest.raises(ValueError, match=r"recording a: unit 'µV' is not one of \['V', 'mV', 'uV'\]"):
        Recording(key="a", label=0, subject="s", ch_names=["C3"], data=np.zeros((1, 10)), sfreq=256.0, unit="µV")
    volts = eeg(2, 256.0, 10) * 1e-6               # volts, declared as microvolts
    with caplog.at_level(logging.WARNING, logger="lumamba.data"):
        with pytest.raises(UnusableRecording, match="flat channel"):   # and the warning says why
            windows_from_array(volts, ["C3", "C4"], 256.0, unit="uV")
        windows_from_array(eeg(2, 256.0, 10), ["C3", "C4"], 256.0, unit="uV")   # plausible: no warning
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "typical channel std is 2.99e-05 uV with unit='uV'" in messages[0]
    assert "Is the unit 'V'?" in messages[0]


# ---- prepare: faults --------------------------------------------------------------------------------

def test_full_disk_leaves_no_orphan_temporary_file(tmp_path, monkeypatch):
    def full_disk(f, array):
        f.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache_module.np, "save", full_disk)
    rec = [Recording(key="a", label=0, subject="s1", ch_names=["C3", "C4"], data=eeg(2, 256.0, 10), sfreq=256.0)]
    with pytest.raises(OSError, match="No space left"):
        prepare_recordings(rec, tmp_path / "c", workers=1, progress=False)
    leftovers = [p.name for p in (tmp_path / "c").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_permission_error_is_not_cached_as_a_rejection(tmp_path, monkeypatch, caplog):
    rec = Recording(key="a", label=0, subject="s1", ch_names=["C3", "C4"], data=eeg(2, 256.0, 10), sfreq=256.0)
    real_load = Recording.load

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/a.edf")
    monkeypatch.setattr(Recording, "load", denied)
    with caplog.at_level(logging.WARNING, logger="lumamba.data"):
        first = prepare_recordings([rec], tmp_path / "c", workers=1, progress=False)
    assert dict(first.skipped) == {"read error": 1}
    assert not (tmp_path / "c" / "rejected" / "a.json").exists()
    assert any("PermissionError: Permission denied (not remembered: fix the access" in r.getMessage()
               for r in caplog.records)
    monkeypatch.setattr(Recording, "load", real_load)
    second = prepare_recordings([rec], tmp_path / "c", workers=1, progress=False)
    assert (second.processed, dict(second.skipped)) == (1, {})


def test_old_cached_permission_rejections_are_retried(tmp_path):
    rec = Recording(key="a", label=0, subject="s1", ch_names=["C3", "C4"], data=eeg(2, 256.0, 10), sfreq=256.0)
    prepare_recordings([rec], tmp_path / "c", workers=1, progress=False)
    (tmp_path / "c" / "windows" / "a.json").unlink()
    import json
    (tmp_path / "c" / "rejected" / "a.json").write_text(json.dumps(
        {**rec.metadata(), "key": "a", "reason": "unreadable", "detail": "PermissionError: [Errno 13] denied"}))
    again = prepare_recordings([rec], tmp_path / "c", workers=1, progress=False)
    assert again.processed == 1


def test_ctrl_c_in_lumamba_data_is_one_line(monkeypatch, capsys, tmp_path):
    import lumamba.data.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_synth", interrupted)
    parser_run = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_run(parser_run(), interrupted))
    assert data_main(["synth", "--out", str(tmp_path)]) == 130
    one_line_error(capsys, "lumamba-data synth: interrupted")


def _with_run(parser, run):
    parser.set_defaults(run=run)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(run=run)
    return parser


# ---- window length ------------------------------------------------------------------------------------

def test_window_length_must_fit_the_patch_or_be_cropped_or_padded():
    with pytest.raises(ValueError, match=r"window length 3.5 s at 256 Hz is 896 samples, not a multiple of the "
                                         r"40-sample patch: use 3.4375 s or 3.59375 s, or --crop \(to 880 samples\) "
                                         r"/ --pad \(to 920 samples\)"):
        PreprocessConfig(window_s=3.5)
    x = eeg(2, 256.0, 7.0)
    cropped = preprocess(x, ["C3", "C4"], 256.0, None, PreprocessConfig(window_s=3.5, fit_patch="crop"))
    padded = preprocess(x, ["C3", "C4"], 256.0, None, PreprocessConfig(window_s=3.5, fit_patch="pad"))
    assert cropped.data.shape == (2, 2, 880) and padded.data.shape == (2, 2, 920)
    # Padding reflects the end of the window: sample 896 + k mirrors sample 894 - k (before z-scoring,
    # which is affine per window, so the mirror holds after it too).
    np.testing.assert_allclose(padded.data[..., 896:], padded.data[..., 894:870:-1], rtol=1e-6)


# ---- lumamba-data import -------------------------------------------------------------------------------

def _table(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def trials(tmp_path) -> tuple[Path, Path]:
    x = np.stack([eeg(2, 256.0, 3.5, seed=i) for i in range(8)]).astype(np.float32)
    np.save(tmp_path / "trials.npy", x)
    rows = [{"label": i % 2, "subject": f"s{i // 2}", "split": "test" if i >= 6 else "train"} for i in range(8)]
    return tmp_path / "trials.npy", _table(tmp_path / "labels.csv", rows)


def test_import_of_trials_with_a_declared_reference(trials, tmp_path, capsys):
    arrays, table = trials
    assert data_main(["import", "--table", str(table), "--arrays", str(arrays), "--channels", "A1,C4",
                      "--reference", "Cz", "--sfreq", "256", "--window-s", "3.5", "--crop", "--out",
                      str(tmp_path / "c"), "--workers", "1", "--no-progress"]) == 0
    index = load_index(tmp_path / "c")
    assert [f["channels"] for f in index["files"]] == [["A1-CZ", "C4-CZ"]] * 8
    assert np.load(tmp_path / "c" / index["files"][0]["file"]).shape == (1, 2, 880)
    assert [f["official_set"] for f in index["files"]] == ["train"] * 6 + ["eval"] * 2


@pytest.mark.parametrize("change, text", [
    (lambda rows: rows[:-1], "7 rows but --arrays"),
    (lambda rows: [{**r, "label": 2} if i == 3 else r for i, r in enumerate(rows)],
     "row 5: label 2 is outside 0..1 (--n-classes 2)"),
    (lambda rows: [{**r, "label": "x"} if i == 0 else r for i, r in enumerate(rows)], "row 2: label 'x' is not an integer"),
    (lambda rows: [{**r, "split": "eval"} if i == 7 else r for i, r in enumerate(rows)],
     "row 9: split 'eval': name the held-out recordings 'test'"),
    (lambda rows: [{**r, "split": "val"} for r in rows], "row 2: split 'val': validation recordings are drawn"),
    (lambda rows: [{**r, "split": "test"} for r in rows], "no 'train' rows"),
    (lambda rows: [{k: v for k, v in r.items() if k != "subject"} for r in rows], "missing column(s) subject"),
])
def test_import_table_errors(trials, tmp_path, change, text):
    arrays, table = trials
    with open(table) as f:
        rows = list(csv.DictReader(f))
    _table(table, change(rows))
    with pytest.raises(ValueError) as info:
        plan_import(table, arrays=arrays, channels=["C3", "C4"], sfreq=256.0, window_s=3.5, fit_patch="crop")
    assert text in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("options, text", [
    (dict(sfreq=10.0), "--sfreq 10: below the 100 Hz the pipeline needs"),
    (dict(sfreq=float("nan")), "--sfreq must be positive"),
    (dict(window_s=3.5, fit_patch=None), "--crop (to 880 samples) / --pad (to 920 samples)"),
    (dict(window_s=5.0), "trials are 3.5 s, shorter than the 5 s window; pass --window-s 3.5"),
    (dict(channels=["C3"]), "2 channels per trial but 1 channel names"),
    (dict(channels=["C3", "XX9"]), "--channels 'XX9'"),
    (dict(channels=["C3", "CZ"], reference="Cz"), "CZ is the --reference itself"),
    (dict(reference="Cz", montage=["C3-C4"]), "--reference applies to --montage as-is only"),
    (dict(unit="microvolt"), "unit 'microvolt' is not one of"),
    (dict(normalisation="minmax"), "normalisation 'minmax' is not one of"),
])
def test_import_option_errors(trials, options, text):
    arrays, table = trials
    kwargs = dict(arrays=arrays, channels=["C3", "C4"], sfreq=256.0, window_s=3.5, fit_patch="crop", **{})
    kwargs.update(options)
    with pytest.raises(ValueError) as info:
        plan_import(table, **kwargs)
    assert text in str(info.value), str(info.value)


def test_import_warns_about_one_subject_and_a_missing_test_split(tmp_path, trials, capsys):
    arrays, table = trials
    _table(table, [{"label": i % 2, "subject": "only", "split": "train"} for i in range(8)])
    plan = plan_import(table, arrays=arrays, channels=["C3", "C4"], sfreq=256.0, window_s=3.5, fit_patch="pad")
    assert plan.warnings == [
        "only one training subject (only): the validation split (drawn by subject) will be empty, so early "
        "stopping uses the training loss; add subjects or train with --set val_fraction=0",
        "no 'test' rows: fine-tuning will report validation metrics only"]


def test_import_of_edf_files_any_montage(tmp_path, capsys):
    for i in range(2):
        write_tuh_edf(tmp_path / f"r{i}.edf", [(f"EEG {n}-REF", row, 250.0, "uV")
                                               for n, row in zip(["A1", "C3", "CZ"], eeg(3, 250.0, 12, seed=i))])
    table = _table(tmp_path / "files.csv", [{"file": f"r{i}.edf", "label": i, "subject": f"p{i}"} for i in range(2)])
    assert data_main(["import", "--table", str(table), "--channels", "A1,C3", "--reference", "CZ",
                      "--out", str(tmp_path / "c"), "--workers", "1", "--no-progress"]) == 0
    index = load_index(tmp_path / "c")
    assert [(f["channels"], f["n_windows"]) for f in index["files"]] == [(["A1-CZ", "C3-CZ"], 2)] * 2
    missing = _table(tmp_path / "missing.csv", [{"file": "nope.edf", "label": 0, "subject": "p"}])
    assert data_main(["import", "--table", str(missing), "--channels", "C3", "--out", str(tmp_path / "d")]) == 2
    one_line_error(capsys, "row 2: file 'nope.edf' not found")
