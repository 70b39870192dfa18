"""Windows for an int8 export: calibration windows (activation ranges) and evaluation windows
(the float vs int8 accuracy drift the export reports).

Both come from one source: a prepared window cache (`lumamba-data prepare`), a `.npz` (the
generic path), a TUAB-style EDF tree (preprocessed first), or, with no source, the default
synthetic corpus generated on the spot. Calibration uses the train split, the drift the test
split (the TUAB eval folder); windows are in the export's channel order and cut to its length.

The windows are normalised by the model's own method (the export manifest's `preprocess`, from
the checkpoint; lumamba.normalise): the generated corpus and EDF trees are prepared with it, and a
cache or `.npz` normalised differently is refused, since activation ranges calibrated on windows
of another scale would not be the ones the firmware's normalised windows produce.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIB_SPLIT = "train"
EVAL_SPLIT = "test"
SOURCE_HINT = "expected a window cache with index.json, a .npz, or a TUAB-style EDF tree"


class Int8DataError(ValueError):
    """A calibration source that cannot be used; the message names the option and the file."""


@dataclass
class Int8Windows:
    """Calibration and evaluation windows of one source."""

    calibration: np.ndarray              # (N, C, T) float32, train split
    source: str                          # where they came from, for messages
    eval_x: np.ndarray | None = None     # (M, C, T) float32, test split; None when unusable
    eval_labels: np.ndarray | None = None
    eval_missing: str = ""               # why there is no drift evaluation


def source_normalisation(path: str | Path) -> str:
    """How the windows of a window cache or `.npz` were normalised ("zscore" when it does not say,
    as for data prepared before the choice was recorded)."""
    import json

    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as f:
                return str(f["normalisation"]) if "normalisation" in f.files else "zscore"
        index = json.loads((path / "index.json").read_text(encoding="utf-8"))
        return str(index.get("config", {}).get("normalisation", "zscore"))
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise Int8DataError(f"--calib-data {path}: cannot read how its windows were normalised ({e})") from None


def check_normalisation_matches(path: str | Path, normalisation: str) -> None:
    """Int8DataError unless the windows at `path` (a cache or `.npz`) are normalised by `normalisation`."""
    given = source_normalisation(path)
    if given != normalisation:
        raise Int8DataError(f"--calib-data {path} holds {given}-normalised windows but the model was trained on "
                            f"{normalisation}-normalised ones; prepare it with --normalisation {normalisation}")


def load_int8_windows(data: str | None, channels: list[str], n_samples: int, n_calib: int,
                      scratch: Path, warn=print, normalisation: str = "zscore") -> Int8Windows:
    """Calibration windows (at most `n_calib`) and all evaluation windows of `data` (None: the
    default synthetic corpus, generated into `scratch`; EDF trees are also preprocessed there),
    normalised by the model's `normalisation` (see the module docstring)."""
    from .calibration import load_windows

    cache, what = _window_source(data, scratch, normalisation)
    check_normalisation_matches(cache, normalisation)
    try:
        x, _, _ = load_windows(cache, CALIB_SPLIT, n_calib, channels=channels)
    except (ValueError, FileNotFoundError) as e:
        raise Int8DataError(f"{what}: no calibration windows for the export's {len(channels)} channels: {e}") from None
    if x.shape[2] < n_samples:
        raise Int8DataError(f"{what}: windows have {x.shape[2]} samples, the export needs {n_samples} (--n-samples)")
    if len(x) < n_calib:
        warn(f"{what}: only {len(x)} {CALIB_SPLIT} windows, fewer than --calib-windows {n_calib}")
    windows = Int8Windows(_cut(x, n_samples), what)
    try:
        x_eval, labels, _ = load_windows(cache, EVAL_SPLIT, None, channels=channels)
    except (ValueError, FileNotFoundError) as e:
        windows.eval_missing = f"{what} has no usable {EVAL_SPLIT} windows ({e})"
        return windows
    if len(np.unique(labels)) < 2:
        windows.eval_missing = f"the {EVAL_SPLIT} windows of {what} hold one class only: AUROC is undefined"
        return windows
    windows.eval_x, windows.eval_labels = _cut(x_eval, n_samples), labels
    return windows


def _cut(x: np.ndarray, n_samples: int) -> np.ndarray:
    return np.ascontiguousarray(x[:, :, :n_samples], np.float32)


def _window_source(data: str | None, scratch: Path, normalisation: str) -> tuple[Path, str]:
    """(a window cache or .npz, its description) for `data`; trees are prepared with `normalisation`."""
    if data is None:
        from lumamba.data.synth import SynthConfig, make_corpus
        print(f"      no --calib-data: generating the default synthetic corpus in {scratch}", flush=True)
        tree, what = scratch / "synth", "the default synthetic corpus"
        make_corpus(tree, SynthConfig())
        return _prepare_tree(tree, scratch / "cache", what, normalisation), what
    path = Path(data)
    what = f"--calib-data {path}"
    if not path.exists():
        raise Int8DataError(f"{what}: not found ({SOURCE_HINT})")
    if path.suffix == ".npz" or (path / "index.json").is_file():
        return path, what
    return _prepare_tree(path, scratch / "cache", what, normalisation), what


def _prepare_tree(root: Path, cache: Path, what: str, normalisation: str) -> Path:
    """Preprocess a TUAB-style EDF tree into a window cache, with progress."""
    from lumamba.data.cache import prepare_cache
    from lumamba.data.preprocess import PreprocessConfig
    from lumamba.data.tuab import find_tuab_files

    try:
        files, rejects = find_tuab_files(root)
    except FileNotFoundError as e:
        raise Int8DataError(f"{what}: {e}; {SOURCE_HINT}") from None
    if not files:
        raise Int8DataError(f"{what}: no EDF recordings found ({SOURCE_HINT})")
    print(f"      preprocessing {len(files)} recordings of {what} into {cache}", flush=True)
    prepare_cache(files, cache, config=PreprocessConfig(normalisation=normalisation), workers=2, progress=True,
                  rejects=rejects)
    return cache
