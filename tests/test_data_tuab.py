"""The TUAB tree: labels from folders, subjects from names, subject-disjoint splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumamba.data.tuab import assign_splits, find_tuab_files, split_subjects

TREE = [
    "train/normal/01_tcp_ar/aaaaaaab_s001_t000.edf",
    "train/normal/01_tcp_ar/aaaaaaab_s002_t001.edf",
    "train/abnormal/01_tcp_ar/aaaaaaac_s004_t000.edf",
    "eval/normal/01_tcp_ar/aaaaaaad_s001_t000.EDF",
    "eval/abnormal/01_tcp_ar/aaaaaaae_s010_t002.edf",
    "train/abnormal/01_tcp_ar/notes.edf",
    "train/abnormal/01_tcp_ar/readme.txt",
]


@pytest.fixture
def tree(tmp_path) -> Path:
    for name in TREE:
        path = tmp_path / "v3.0.1" / "edf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return tmp_path / "v3.0.1"


def test_files_labels_and_subjects_come_from_the_path(tree):
    files, rejects = find_tuab_files(tree)
    got = [(f.official_set, f.label, f.subject, f.session, f.take) for f in files]
    assert got == [("train", 0, "aaaaaaab", 1, 0), ("train", 0, "aaaaaaab", 2, 1),
                   ("train", 1, "aaaaaaac", 4, 0), ("eval", 0, "aaaaaaad", 1, 0),
                   ("eval", 1, "aaaaaaae", 10, 2)]
    assert files[2].key == "train-abnormal-aaaaaaac_s004_t000"
    assert [(Path(p).name, e.reason) for p, e in rejects] == [("notes.edf", "bad file name")]


def test_the_edf_folder_itself_is_accepted(tree):
    assert len(find_tuab_files(tree / "edf")[0]) == 5


def test_a_folder_without_the_layout_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="TUAB v3 layout"):
        find_tuab_files(tmp_path)


def _subjects(n_normal: int, n_abnormal: int) -> dict[str, int]:
    labels = {f"n{i:03d}": 0 for i in range(n_normal)}
    labels.update({f"a{i:03d}": 1 for i in range(n_abnormal)})
    return labels


def test_split_is_by_subject_stratified_and_seeded():
    labels = _subjects(40, 35)
    train, val = split_subjects(labels, 0.2, seed=7)
    assert train.isdisjoint(val) and train | val == set(labels)
    assert sum(labels[s] == 0 for s in val) == 8  # round(0.2 * 40)
    assert sum(labels[s] == 1 for s in val) == 7  # round(0.2 * 35)
    assert split_subjects(labels, 0.2, seed=7) == (train, val)
    assert split_subjects(dict(reversed(labels.items())), 0.2, seed=7) == (train, val)
    assert split_subjects(labels, 0.2, seed=8)[1] != val


def test_bad_val_fraction_is_rejected():
    with pytest.raises(ValueError, match="val_fraction"):
        split_subjects({"a": 0}, 1.0)


def test_every_session_of_a_subject_lands_in_one_split():
    records = [{"official_set": "train", "subject": f"s{i % 20:02d}", "label": i % 20 % 2}
               for i in range(60)]
    records += [{"official_set": "eval", "subject": "e00", "label": 1}]
    splits = assign_splits(records, 0.2, seed=0)
    by_subject: dict[str, set[str]] = {}
    for record, split in zip(records, splits):
        by_subject.setdefault(record["subject"], set()).add(split)
    assert all(len(s) == 1 for s in by_subject.values())
    assert by_subject["e00"] == {"test"}
    assert sum(s == {"val"} for s in by_subject.values()) == 4  # 2 of 10 per label
    assert assign_splits(records, 0.2, seed=0) == splits
