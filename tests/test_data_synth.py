"""The synthetic TUAB-format corpus: variety, realism, determinism, and its baseline AUROC.

The default corpus is generated, prepared and scored once through the ``lumamba-data`` CLI
(about 15-20 s on two cores), exactly as CI and the README do.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from lumamba.data.cache import load_index
from lumamba.data.cli import main
from lumamba.data.edf_reader import read_edf, read_edf_header
from lumamba.data.synth import SynthConfig, make_corpus


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth-default")
    raw, cache = root / "raw", root / "cache"
    start = time.perf_counter()
    assert main(["synth", "--out", str(raw)]) == 0
    synth_s = time.perf_counter() - start
    assert main(["prepare", "--root", str(raw), "--out", str(cache), "--no-progress"]) == 0
    prepare_s = time.perf_counter() - start - synth_s
    assert main(["baseline", "--cache", str(cache)]) == 0
    print(f"\ndefault corpus: synth {synth_s:.1f} s, prepare {prepare_s:.1f} s")
    return raw, cache, json.loads((raw / "synth.json").read_text())


def test_baseline_auroc_on_the_eval_split(default_run):
    _, cache, _ = default_run
    result = json.loads((cache / "baseline.json").read_text())
    print(f"\nbaseline AUROC test {result['auroc_test']:.3f} (val {result['auroc_val']:.3f}), "
          f"windows {result['windows']}")
    # Target band for the synthetic task: separable, but not trivially (see synth.py).
    assert 0.7 <= result["auroc_test"] <= 0.95


def test_every_file_is_usable_and_cut_into_floor_duration_over_5_windows(default_run):
    raw, cache, manifest = default_run
    index = load_index(cache)
    assert index["rejected"] == []
    windows = {Path(r["source"]).name: r["n_windows"] for r in index["files"]}
    assert len(windows) == len(manifest["files"])
    for f in manifest["files"]:
        assert f["duration_s"] % 5 != 0
        assert windows[Path(f["file"]).name] == f["duration_s"] // 5


def test_the_files_carry_the_promised_variety(default_run):
    raw, _, manifest = default_run
    headers = [read_edf_header(raw / f["file"]) for f in manifest["files"]]
    labels = [set(h.labels) for h in headers]
    eeg_rates = {h.sfreqs[0] for h in headers}
    assert eeg_rates == {250.0, 256.0, 512.0}
    assert any("EEG FP1-LE" in lab for lab in labels)
    assert any("EEG FP1-REF" in lab for lab in labels)
    assert any("EEG Fp1-REF" in lab or "EEG Fp1-LE" in lab for lab in labels)  # mixed case
    assert any(not any("A1" in x for x in lab) for lab in labels)  # no ear electrodes
    extras = set().union(*labels) - {x for x in set().union(*labels) if x.startswith("EEG ")
                                     and x[4:].split("-")[0].upper() in
                                     {"FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1",
                                      "O2", "F7", "F8", "T3", "T4", "T5", "T6", "A1", "A2", "FZ",
                                      "CZ", "PZ"}}
    assert {"EKG1-REF", "PHOTIC-REF", "IBI", "BURSTS", "SUPPR", "EEG ROC-REF",
            "EEG 26-REF"} <= extras
    assert any(1.0 in h.sfreqs for h in headers)  # 1 Hz detector channels beside the EEG
    ages = [h.patient.rsplit("Age:", 1)[1] for h in headers]
    assert "999" in ages and any(a != "999" for a in ages)
    sessions: dict[str, set] = {}
    for f in manifest["files"]:
        sessions.setdefault(f["subject"], set()).add(f["session"])
    assert max(len(s) for s in sessions.values()) >= 2
    by_set = {s: {x["id"] for x in manifest["subjects"] if x["official_set"] == s}
              for s in ("train", "eval")}
    assert by_set["train"].isdisjoint(by_set["eval"])
    assert (len(by_set["train"]), len(by_set["eval"])) == (24, 8)
    for official_set in ("train", "eval"):
        labels_in_set = [x["label"] for x in manifest["subjects"]
                         if x["official_set"] == official_set]
        assert sum(labels_in_set) == len(labels_in_set) // 2
    abnormal = [x["abnormality"] for x in manifest["subjects"] if x["label"]]
    assert set(abnormal) == {"diffuse slowing", "focal slowing", "poor background"}


def test_signals_are_eeg_sized_microvolts(default_run):
    raw, _, manifest = default_run
    for f in manifest["files"][:6]:
        signals = read_edf(raw / f["file"])
        rms = signals.data.std(axis=1)
        # Scalp EEG against a common reference: tens of microvolts per channel.
        assert np.all((rms > 10) & (rms < 100)), (f["file"], rms)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    config = SynthConfig(seed=11, train_subjects=2, eval_subjects=2, max_sessions=1,
                         min_duration_s=6, max_duration_s=9)
    first = make_corpus(tmp_path / "a", config)
    second = make_corpus(tmp_path / "b", config)
    other = make_corpus(tmp_path / "c", SynthConfig(**{**config.__dict__, "seed": 12}))
    assert [p.relative_to(tmp_path / "a") for p in first] == \
        [p.relative_to(tmp_path / "b") for p in second]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
    manifests = [(tmp_path / d / "synth.json").read_bytes() for d in ("a", "b")]
    assert manifests[0] == manifests[1]
    assert {p.name for p in other}.isdisjoint({p.name for p in first})  # other subject ids
    assert first[0].read_bytes()[256:] != other[0].read_bytes()[256:]
