"""The TUAB v3 tree: files, labels, subjects and the subject-disjoint splits.

Layout: ``edf/{train,eval}/{normal,abnormal}/01_tcp_ar/<subject>_s<NNN>_t<NNN>.edf``. The label
comes from the folder (abnormal = 1), the subject from the file name; the official ``eval`` set is
the test split and the official ``train`` set is split 80/20 by subject into train/val.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .edf_reader import Signals, read_edf
from .errors import UnusableRecording

log = logging.getLogger("lumamba.data")

LABELS = {"normal": 0, "abnormal": 1}
OFFICIAL_SETS = ("train", "eval")
SPLITS = ("train", "val", "test")
_FILE_NAME = re.compile(r"^(?P<subject>[^_]+)_s(?P<session>\d+)_t(?P<take>\d+)\.edf$",
                        re.IGNORECASE)


@dataclass(frozen=True)
class TUABFile:
    """One TUAB recording and what its path says about it."""

    path: Path
    official_set: str  # "train" or "eval"
    label: int  # 0 normal, 1 abnormal
    subject: str
    session: int
    take: int

    @property
    def key(self) -> str:
        """Unique, file-name-safe id: ``<set>-<normal|abnormal>-<file stem>``."""
        label_name = "abnormal" if self.label else "normal"
        return f"{self.official_set}-{label_name}-{self.path.stem}"

    @property
    def source(self) -> str:
        return str(self.path)

    def load(self) -> Signals:
        """The 21 referential electrodes (19 when the file has no A1/A2), in microvolts."""
        return read_edf(self.path)

    def metadata(self) -> dict:
        return {"source": str(self.path), "official_set": self.official_set, "label": self.label,
                "subject": self.subject, "session": self.session, "take": self.take}


def _edf_dir(root: Path) -> Path:
    """Accept the ``edf`` folder itself or any folder that contains it."""
    if all((root / s).is_dir() for s in OFFICIAL_SETS):
        return root
    if (root / "edf").is_dir():
        return root / "edf"
    raise FileNotFoundError(f"{root} holds neither edf/ nor train/ and eval/ (TUAB v3 layout)")


def find_tuab_files(
    root: str | os.PathLike,
) -> tuple[list[TUABFile], list[tuple[str, UnusableRecording]]]:
    """All recordings under a TUAB tree, sorted by path, and the EDF files that do not fit it.

    Files whose name is not ``<subject>_s<NNN>_t<NNN>.edf`` are returned as rejects rather than
    guessed at.
    """
    edf_dir = _edf_dir(Path(root))
    files: list[TUABFile] = []
    rejects: list[tuple[str, UnusableRecording]] = []
    for official_set in OFFICIAL_SETS:
        for label_name, label in LABELS.items():
            folder = edf_dir / official_set / label_name
            if not folder.is_dir():
                continue
            for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".edf"):
                match = _FILE_NAME.match(path.name)
                if match is None:
                    rejects.append((str(path), UnusableRecording(
                        "bad file name", "expected <subject>_s<NNN>_t<NNN>.edf")))
                    continue
                files.append(TUABFile(path=path, official_set=official_set, label=label,
                                      subject=match["subject"], session=int(match["session"]),
                                      take=int(match["take"])))
    if not files and not rejects:
        raise FileNotFoundError(f"no EDF files under {edf_dir}/{{train,eval}}/{{normal,abnormal}}")
    return files, rejects


def split_subjects(subject_labels: Mapping[str, int], val_fraction: float = 0.2,
                   seed: int = 0) -> tuple[set[str], set[str]]:
    """Split subjects into (train, val), stratified by label, deterministic from ``seed``.

    ``subject_labels`` maps each subject to one label (use 1 for a subject with any abnormal
    recording). Each label group contributes ``round(val_fraction * size)`` subjects to val.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train: set[str] = set()
    val: set[str] = set()
    for label in sorted(set(subject_labels.values())):
        group = sorted(s for s, lab in subject_labels.items() if lab == label)
        order = rng.permutation(len(group))
        n_val = int(round(val_fraction * len(group)))
        val.update(group[i] for i in order[:n_val])
        train.update(group[i] for i in order[n_val:])
    return train, val


def assign_splits(records: Iterable[Mapping], val_fraction: float = 0.2,
                  seed: int = 0) -> list[str]:
    """The split ("train", "val" or "test") of each record (dicts with official_set, subject,
    label): official eval -> test, official train -> train/val by subject."""
    records = list(records)
    subject_labels: dict[str, int] = {}
    for r in records:
        if r["official_set"] == "train":
            subject_labels[r["subject"]] = max(subject_labels.get(r["subject"], 0), int(r["label"]))
    _, val = split_subjects(subject_labels, val_fraction, seed)
    return ["test" if r["official_set"] == "eval" else ("val" if r["subject"] in val else "train")
            for r in records]
