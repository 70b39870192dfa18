"""The window cache: skips with reasons, resumable, atomic, parallel, and the dataset over it."""

from __future__ import annotations

import json
import logging
import pickle
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lumamba.data.cache as cache_module
from lumamba.data.cache import load_index, prepare_cache
from lumamba.data.channels import TCP20, TCP22, TUH_ELECTRODES
from lumamba.data.dataset import WindowDataset, collate_windows
from lumamba.data.synth import SynthConfig, make_corpus, write_tuh_edf
from lumamba.data.tuab import find_tuab_files

SMALL = SynthConfig(seed=3, train_subjects=6, eval_subjects=2, max_sessions=2,
                    min_duration_s=11, max_duration_s=22, no_ears_fraction=0.3)
BROKEN = {  # file stem -> reason it must be skipped for
    "zzzzzzz1_s001_t000": "truncated",
    "zzzzzzz2_s001_t000": "missing electrodes",
    "zzzzzzz3_s001_t000": "flat channel",
    "zzzzzzz4_s001_t000": "too short",
}


def _eeg(fs: float, seconds: int, skip=()) -> list[tuple]:
    rng = np.random.default_rng(0)
    return [(f"EEG {e}-REF", 20 * rng.standard_normal(int(fs * seconds)), fs, "uV")
            for e in TUH_ELECTRODES if e not in skip]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, SMALL)
    folder = root / "edf" / "train" / "normal" / "01_tcp_ar"
    good = sorted(folder.glob("*.edf"))[0].read_bytes()
    (folder / "zzzzzzz1_s001_t000.edf").write_bytes(good[: len(good) // 2])
    write_tuh_edf(folder / "zzzzzzz2_s001_t000.edf", _eeg(256.0, 12, skip=("C3", "CZ")))
    flat = _eeg(256.0, 12)
    flat[TUH_ELECTRODES.index("O1")] = ("EEG O1-REF", np.zeros(256 * 12), 256.0, "uV")
    write_tuh_edf(folder / "zzzzzzz3_s001_t000.edf", flat)
    write_tuh_edf(folder / "zzzzzzz4_s001_t000.edf", _eeg(250.0, 3))
    (folder / "recording-notes.edf").write_bytes(b"")
    return root


def _good_files(corpus: Path) -> list[dict]:
    return json.loads((corpus / "synth.json").read_text())["files"]


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    """The corpus prepared with two worker processes, and the log of that run."""
    out = tmp_path_factory.mktemp("cache")
    handler, logger = _ListHandler(), logging.getLogger("lumamba.data")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        files, rejects = find_tuab_files(corpus)
        summary = prepare_cache(files, out, workers=2, progress=False, rejects=rejects)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return out, summary, handler.messages


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_each_unusable_file_gets_one_log_line_and_is_counted(corpus, prepared):
    _, summary, messages = prepared
    for stem, reason in BROKEN.items():
        lines = [m for m in messages if stem in m]
        assert len(lines) == 1, lines
        path = corpus / "edf" / "train" / "normal" / "01_tcp_ar" / f"{stem}.edf"
        assert lines[0].startswith(f"skipped {path}: {reason}: ")
    assert sum("recording-notes.edf: bad file name" in m for m in messages) == 1
    assert dict(summary.skipped) == {"truncated": 1, "missing electrodes": 1, "flat channel": 1,
                                     "too short": 1, "bad file name": 1}
    assert summary.processed == len(_good_files(corpus))
    assert "5 skipped (bad file name 1, flat channel 1, missing electrodes 1, too short 1, " \
           "truncated 1)" in messages[-1]


def test_windows_per_file_and_metadata(corpus, prepared):
    out, summary, _ = prepared
    index = load_index(out)
    by_name = {Path(r["source"]).name: r for r in index["files"]}
    subjects = {s["id"]: s for s in json.loads((corpus / "synth.json").read_text())["subjects"]}
    for written in _good_files(corpus):
        record = by_name[Path(written["file"]).name]
        assert record["n_windows"] == written["duration_s"] // 5
        assert record["sfreq_in"] == written["sfreq"]
        assert record["channels"] == list(TCP22 if written["ears"] else TCP20)
        assert record["age"] == subjects[written["subject"]]["age"]
        assert record["label"] == subjects[written["subject"]]["label"]
        assert record["subject"] == written["subject"]
        array = np.load(out / record["file"], mmap_mode="r")
        assert array.shape == (record["n_windows"], len(record["channels"]), 1280)
        assert array.dtype == np.float32
    assert summary.windows == sum(w["duration_s"] // 5 for w in _good_files(corpus))
    assert {r["reason"] for r in index["rejected"]} == set(BROKEN.values()) | {"bad file name"}


def test_second_run_processes_nothing(corpus, prepared, caplog):
    out, first, _ = prepared
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "windows").iterdir()}
    files, rejects = find_tuab_files(corpus)
    with caplog.at_level(logging.INFO, logger="lumamba.data"):
        summary = prepare_cache(files, out, workers=2, progress=False, rejects=rejects)
    assert summary.processed == 0
    assert summary.already_done == first.processed
    assert summary.skipped == first.skipped
    assert {p: p.stat().st_mtime_ns for p in (out / "windows").iterdir()} == mtimes
    # Rejected files are still reported, once each, without being read again.
    for stem in BROKEN:
        assert sum(stem in r.getMessage() for r in caplog.records) == 1


def test_interrupted_run_leaves_no_entry_and_resumes(corpus, prepared, tmp_path, monkeypatch):
    reference, _, _ = prepared
    files, _ = find_tuab_files(corpus)
    files = [f for f in files if not f.subject.startswith("zzz")][:4]
    real_write_json = cache_module._write_json
    written = []

    def interrupt_on_third_entry(path, obj):
        if path.parent.name == "windows":
            if len(written) == 2:
                raise KeyboardInterrupt  # e.g. Ctrl-C between the array and its metadata
            written.append(path)
        real_write_json(path, obj)

    monkeypatch.setattr(cache_module, "_write_json", interrupt_on_third_entry)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(files, tmp_path, workers=1, progress=False)
    monkeypatch.undo()

    third = files[2].key
    assert (tmp_path / "windows" / f"{third}.npy").exists()  # array written, entry not complete
    assert not (tmp_path / "windows" / f"{third}.json").exists()
    assert sorted(p.name for p in (tmp_path / "windows").glob("*.json")) == \
        sorted(f"{f.key}.json" for f in files[:2])
    with pytest.raises(FileNotFoundError, match="run `lumamba-data prepare`"):
        load_index(tmp_path)

    (tmp_path / "windows" / f"{third}.npy.tmp999").write_bytes(b"partial")  # a torn write
    summary = prepare_cache(files, tmp_path, workers=1, progress=False)
    assert (summary.processed, summary.already_done) == (2, 2)
    assert not list((tmp_path / "windows").glob("*.tmp*"))
    for f in files:  # serial resumed run == parallel run, bit for bit
        np.testing.assert_array_equal(np.load(tmp_path / "windows" / f"{f.key}.npy"),
                                      np.load(reference / "windows" / f"{f.key}.npy"))


def test_changed_source_is_preprocessed_again(corpus, tmp_path):
    """The fingerprint is the content: an edit that keeps size and mtime is seen, a touch is not."""
    files, _ = find_tuab_files(corpus)
    files = [f for f in files if not f.subject.startswith("zzz")][:2]
    prepare_cache(files, tmp_path, workers=1, progress=False)
    path = files[0].path
    copy = tmp_path / "copy.edf"
    shutil.copy2(path, copy)
    stat = path.stat()
    try:
        path.touch()  # new mtime, same content: the entry is still good
        touched = prepare_cache(files, tmp_path, workers=1, progress=False)
        content = bytearray(copy.read_bytes())
        content[-2] ^= 0x01  # one sample changes; size and mtime are kept
        path.write_bytes(bytes(content))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
        edited = prepare_cache(files, tmp_path, workers=1, progress=False)
    finally:
        shutil.copy2(copy, path)
    assert (touched.processed, touched.already_done) == (0, 2)
    assert (edited.processed, edited.already_done) == (1, 1)


def test_other_settings_need_another_cache(corpus, prepared):
    out, _, _ = prepared
    files, _ = find_tuab_files(corpus)
    with pytest.raises(ValueError, match="was built with"):
        prepare_cache(files, out, montage=None, workers=1, progress=False)


def test_dataset_splits_are_subject_disjoint_and_cover_everything(prepared):
    out, summary, _ = prepared
    datasets = {s: WindowDataset(out, s, seed=0) for s in ("train", "val", "test")}
    assert sum(len(d) for d in datasets.values()) == summary.windows
    subjects = {s: {f["subject"] for f in d.files} for s, d in datasets.items()}
    assert subjects["train"].isdisjoint(subjects["val"])
    assert subjects["test"].isdisjoint(subjects["train"] | subjects["val"])
    assert {f["official_set"] for f in datasets["test"].files} == {"eval"}
    assert len(subjects["val"]) == 2  # round(0.2 * 3) of each label's 3 train subjects
    other = WindowDataset(out, "val", seed=1)
    assert {f["subject"] for f in other.files} != subjects["val"]

    x, label, meta = datasets["train"][0]
    assert x.dtype == torch.float32 and x.shape == (len(meta["channels"]), 1280)
    assert label == datasets["train"].files[0]["label"]
    assert meta["window"] == 0 and meta["split"] == "train"
    np.testing.assert_array_equal(x.numpy(), np.load(out / datasets["train"].files[0]["file"])[0])


def test_channel_selection_gives_uniform_batches(prepared):
    out, _, _ = prepared
    mixed = WindowDataset(out, ["train", "val", "test"])
    assert {len(f["channels"]) for f in mixed.files} == {20, 22}  # the corpus mixes montages
    with pytest.raises(ValueError, match="pass channels= to WindowDataset"):
        batch = [mixed[i] for i in range(len(mixed))]
        collate_windows(batch)

    uniform = WindowDataset(out, ["train", "val", "test"], channels=TCP20)
    assert len(uniform) == len(mixed)
    loader = torch.utils.data.DataLoader(uniform, batch_size=16, collate_fn=collate_windows)
    x, labels, channels, metas = next(iter(loader))
    assert x.shape == (16, 20, 1280) and channels == list(TCP20) and len(metas) == 16
    f = next(i for i, rec in enumerate(uniform.files) if len(rec["channels"]) == 22)
    first = int(np.flatnonzero(uniform.file_of == f)[0])
    full = np.load(out / uniform.files[f]["file"])[0]
    np.testing.assert_array_equal(uniform[first][0].numpy(), full[:20])  # TCP20 is TCP22[:20]

    ears_only = WindowDataset(out, ["train", "val", "test"], channels=["A1-T3"])
    assert len(ears_only) < len(mixed) and all(len(f["channels"]) == 22 for f in ears_only.files)


def test_dataset_pickles_without_its_memory_maps(prepared):
    ds = WindowDataset(prepared[0], "test")
    x = ds[len(ds) - 1][0]
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    assert clone._arrays == {} and len(clone) == len(ds)
    np.testing.assert_array_equal(clone[len(ds) - 1][0].numpy(), x.numpy())


def test_unknown_split_is_rejected(prepared):
    with pytest.raises(ValueError, match="unknown split"):
        WindowDataset(prepared[0], "validation")
