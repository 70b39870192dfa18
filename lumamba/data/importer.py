"""``lumamba-data import``: a user's own recordings (arrays or EDF files) -> a window cache.

Two inputs, both described by a CSV table with one row per recording (or trial):

- ``--arrays TRIALS.npy|.npz`` holding trials ``(n, channels, samples)``; row ``i`` of the table
  describes trial ``i``. Channel names and the sampling rate come from ``--channels``/``--sfreq``
  (or the ``.npz`` entries ``channels``/``sfreq``).
- a ``file`` column naming EDF files (channels picked by ``--channels``) or ``.npy``/``.npz``
  recordings ``(channels, samples)``, relative to the table.

Columns: ``label`` (0..n_classes-1), ``subject``, optional ``split`` (``train`` or ``test``;
validation recordings are drawn from the training subjects) and ``key``. Everything is checked
before any preprocessing starts, and each problem is one line naming the file, row and value.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .channels import canonical_electrode
from .generic import Recording, check_sfreq_value, check_unit
from .preprocess import MIN_SFREQ, PreprocessConfig

log = logging.getLogger("lumamba.data")
SPLITS = ("train", "test")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class ImportPlan:
    """Recordings to prepare and the settings to prepare them with."""

    recordings: list[Recording]
    config: PreprocessConfig
    warnings: list[str]


def _read_table(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"--table {path}: file not found")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"--table {path}: not a CSV file ({e})") from None
    if not rows:
        raise ValueError(f"--table {path}: no rows")
    missing = [c for c in ("label", "subject") if c not in rows[0]]
    if missing:
        raise ValueError(f"--table {path}: missing column(s) {', '.join(missing)} "
                         f"(has {', '.join(k for k in rows[0] if k)})")
    return rows


def _label(value: str, n_classes: int, where: str) -> int:
    try:
        label = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{where}: label {value!r} is not an integer") from None
    if not 0 <= label < n_classes:
        raise ValueError(f"{where}: label {label} is outside 0..{n_classes - 1} (--n-classes {n_classes})")
    return label


def _split(value: str | None, where: str) -> str:
    split = (value or "train").strip().lower()
    if split == "eval":
        raise ValueError(f"{where}: split 'eval': name the held-out recordings 'test' (splits: train, test)")
    if split == "val":
        raise ValueError(f"{where}: split 'val': validation recordings are drawn from the 'train' subjects "
                         f"(--val-fraction at training); use train or test")
    if split not in SPLITS:
        raise ValueError(f"{where}: split {value!r} is not one of {', '.join(SPLITS)}")
    return split


def _channel_names(names: Sequence[str], reference: str | None, montage) -> list[str]:
    """Canonical names, each a valid electrode (or electrode pair) for the model."""
    from ..channels import parse_channel

    if not names:
        raise ValueError("--channels is required (the channel names, in the order of the rows)")
    out = [canonical_electrode(n) for n in names]
    if len(set(out)) != len(out):
        raise ValueError(f"--channels: names repeat after normalisation: {', '.join(names)}")
    if reference is not None:
        if montage is not None:
            raise ValueError("--reference applies to --montage as-is only (a bipolar montage cancels the reference)")
        ref = canonical_electrode(reference)
        if ref in out:
            raise ValueError(f"--channels: {ref} is the --reference itself (a flat line); leave it out")
    final = [f"{n}-{canonical_electrode(reference)}" for n in out] if reference else out
    for name, given in zip(final, names):
        try:
            parse_channel(name)
        except ValueError as e:
            raise ValueError(f"--channels {given!r}: {e}") from None
    return out


def _load_arrays(path: Path, channels: Sequence[str] | None, sfreq: float | None):
    if not path.is_file():
        raise FileNotFoundError(f"--arrays {path}: file not found")
    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # zipfile.BadZipFile, pickle refusal, EOF
        raise ValueError(f"--arrays {path}: not a readable .npy/.npz file ({' '.join(str(e).split())})") from None
    if isinstance(loaded, np.ndarray):
        data = loaded
    else:
        with loaded:
            key = "x" if "x" in loaded.files else "data" if "data" in loaded.files else None
            if key is None:
                raise ValueError(f"--arrays {path}: needs an array 'x' (trials, channels, samples); has "
                                 f"{', '.join(loaded.files)}")
            data = loaded[key]
            if not channels and "channels" in loaded.files:
                channels = [str(c) for c in loaded["channels"]]
            if sfreq is None and "sfreq" in loaded.files:
                sfreq = float(loaded["sfreq"])
    if data.ndim != 3:
        raise ValueError(f"--arrays {path}: shape {data.shape}; expected (trials, channels, samples)")
    if not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"--arrays {path}: dtype {data.dtype} is not numeric")
    return data, channels, sfreq


def plan_import(table: str | Path, *, arrays: str | Path | None = None, channels: Sequence[str] = (),
                sfreq: float | None = None, unit: str = "uV", reference: str | None = None,
                montage=None, n_classes: int = 2, window_s: float = 5.0, fit_patch: str | None = None,
                normalisation: str = "zscore") -> ImportPlan:
    """Read and check everything the import needs; raises ValueError/FileNotFoundError naming the
    file, row, column or option at fault."""
    table = Path(table)
    if n_classes < 2:
        raise ValueError(f"--n-classes {n_classes}: must be >= 2")
    check_unit(unit)
    rows = _read_table(table)
    warnings: list[str] = []
    recordings: list[Recording] = []
    if arrays is not None:
        data, channels, sfreq = _load_arrays(Path(arrays), channels, sfreq)
        if sfreq is None:
            raise ValueError("--sfreq is required with --arrays (or an 'sfreq' entry in the .npz)")
        sfreq = check_sfreq_value(sfreq, "--sfreq")
        if sfreq < MIN_SFREQ:
            raise ValueError(f"--sfreq {sfreq:g}: below the {MIN_SFREQ:g} Hz the pipeline needs "
                             f"(nothing above {sfreq / 2:g} Hz was recorded)")
        names = _channel_names(list(channels or ()), reference, montage)
        if data.shape[1] != len(names):
            raise ValueError(f"--arrays {arrays}: {data.shape[1]} channels per trial but {len(names)} channel names")
        if len(rows) != data.shape[0]:
            raise ValueError(f"--table {table}: {len(rows)} rows but --arrays {arrays} holds {data.shape[0]} "
                             f"trials; one row per trial")
    config = _config(window_s, fit_patch, normalisation)
    if arrays is not None:
        trial_s = data.shape[2] / sfreq
        if trial_s + 1e-9 < config.window_s:
            raise ValueError(f"--arrays {arrays}: trials are {trial_s:g} s, shorter than the {config.window_s:g} s "
                             f"window; pass --window-s {trial_s:g}")
    elif "file" not in rows[0]:
        raise ValueError(f"--table {table}: needs a 'file' column, or pass --arrays")
    else:
        names = _channel_names(list(channels or ()), reference, montage)
    for i, row in enumerate(rows):
        where = f"--table {table} row {i + 2}"          # row 1 is the header
        label = _label(row.get("label", ""), n_classes, where)
        split = _split(row.get("split"), where)
        subject = (row.get("subject") or "").strip()
        if not subject:
            raise ValueError(f"{where}: empty subject")
        common = dict(label=label, subject=subject, ch_names=names, unit=unit, reference=reference,
                      official_set="eval" if split == "test" else "train")
        if arrays is not None:
            key = _SAFE.sub("_", row.get("key") or f"trial-{i:06d}")
            recordings.append(Recording(key=key, data=np.asarray(data[i]), sfreq=sfreq, **common))
            continue
        path = (table.parent / row["file"].strip()).resolve() if row.get("file") else None
        if path is None or not path.is_file():
            raise FileNotFoundError(f"{where}: file {row.get('file')!r} not found (relative to {table.parent})")
        key = _SAFE.sub("_", row.get("key") or f"{i:06d}-{path.stem}")
        if path.suffix.lower() == ".edf":
            recordings.append(Recording(key=key, path=str(path), **common))
        elif path.suffix.lower() in (".npy", ".npz"):
            rec, rec_channels, rec_sfreq = _load_recording(path, sfreq, where)
            recordings.append(Recording(key=key, data=rec, sfreq=rec_sfreq, **common))
        else:
            raise ValueError(f"{where}: {path.name}: expected .edf, .npy or .npz")
    keys = [r.key for r in recordings]
    if len(set(keys)) != len(keys):
        raise ValueError(f"--table {table}: keys repeat; give a unique 'key' column")
    warnings += _split_warnings(recordings, n_classes)
    return ImportPlan(recordings, config, warnings)


def _load_recording(path: Path, sfreq: float | None, where: str):
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile.BadZipFile, pickle refusal, EOF
        raise ValueError(f"{where}: {path}: not a readable .npy/.npz file ({e})") from None
    channels = None
    if not isinstance(loaded, np.ndarray):
        with loaded:
            key = "x" if "x" in loaded.files else "data"
            if key not in loaded.files:
                raise ValueError(f"{where}: {path}: needs an array 'x' (channels, samples)")
            if "sfreq" in loaded.files and sfreq is None:
                sfreq = float(loaded["sfreq"])
            loaded = loaded[key]
    if sfreq is None:
        raise ValueError(f"{where}: {path}: no sampling rate; pass --sfreq")
    check_sfreq_value(sfreq, "--sfreq")
    if loaded.ndim != 2:
        raise ValueError(f"{where}: {path}: shape {loaded.shape}; expected (channels, samples)")
    return loaded, channels, float(sfreq)


def _config(window_s: float, fit_patch: str | None, normalisation: str) -> PreprocessConfig:
    try:
        return PreprocessConfig(window_s=window_s, fit_patch=fit_patch, normalisation=normalisation)
    except ValueError as e:
        raise ValueError(f"--window-s: {e}" if "window" in str(e) else str(e)) from None


def _split_warnings(recordings: Sequence[Recording], n_classes: int) -> list[str]:
    """Things that will make training or evaluation degenerate, said before the work starts."""
    out = []
    train = [r for r in recordings if r.official_set == "train"]
    test = [r for r in recordings if r.official_set == "eval"]
    if not train:
        raise ValueError("no 'train' rows: training needs at least one training recording")
    subjects = {r.subject for r in train}
    if len(subjects) < 2:
        out.append(f"only one training subject ({next(iter(subjects))}): the validation split (drawn by "
                   f"subject) will be empty, so early stopping uses the training loss; add subjects or "
                   f"train with --set val_fraction=0")
    if not test:
        out.append("no 'test' rows: fine-tuning will report validation metrics only")
    missing = sorted(set(range(n_classes)) - {r.label for r in train})
    if missing:
        out.append(f"no training recording has label(s) {', '.join(map(str, missing))}")
    return out
