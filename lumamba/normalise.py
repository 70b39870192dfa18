"""Per-window amplitude normalisation: the one place its arithmetic lives.

The choice is recorded with the data (``cache.json``/``index.json`` config, the ``.npz``
``normalisation`` entry) and with the model (checkpoint metadata ``lumamba_preprocess``), so
training, evaluation and export apply the same one. Three methods, each per window and channel:

- ``zscore``  (default, the paper's): ``(x - mean) / (unbiased std + 1e-8)``. Removes the window's
  DC level and its amplitude.
- ``robust``: ``(x - median) / (IQR / 1.349 + 1e-8)``. Like z-score but a few artefact samples do
  not shrink the rest of the window (IQR / 1.349 is the std of a Gaussian).
- ``fixed``:  ``x / 50 uV``. Keeps the slow (DC) level of the window relative to the recording and
  its absolute amplitude, which some tasks depend on (slow cortical potentials).

:func:`normalise` works on numpy and on torch tensors alike (the export side can call it on the
input it feeds the model and generate the same arithmetic in C). :func:`normalise_counts` is the
firmware's version, from int16 ADC counts in float32 (lumamba_infer_counts() applies it on the
device), repeated here bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NORMALISATIONS = ("zscore", "robust", "fixed")
DEFAULT = "zscore"
EPS = 1e-8
FIXED_SCALE_UV = 50.0         # typical scalp-EEG amplitude: fixed-scale windows are O(1)
IQR_TO_STD = 1.349            # IQR of a standard normal distribution


def check_normalisation(method: Any, where: str = "normalisation") -> str:
    """A known method name, else a ValueError naming ``where`` and listing them."""
    if method not in NORMALISATIONS:
        raise ValueError(f"{where} {method!r} is not one of {', '.join(NORMALISATIONS)}")
    return method


def spec(method: str = DEFAULT) -> dict:
    """What is recorded with the data and the model: the method and its constants."""
    check_normalisation(method)
    out: dict = {"normalisation": method, "eps": EPS}
    if method == "fixed":
        out["scale_uv"] = FIXED_SCALE_UV
    if method == "robust":
        out["iqr_to_std"] = IQR_TO_STD
    return out


def check_spec(record: Any, where: str = "preprocess") -> dict:
    """A preprocess record as :func:`spec` writes it (method and exactly its constants, which the
    firmware's lumamba_normalise.c implements), else a ValueError naming ``where``."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be an object like {spec()}, got {record!r}")
    method = check_normalisation(record.get("normalisation"), f"{where} normalisation")
    if record != spec(method):
        raise ValueError(f"{where} {record!r} differs from the {method} record {spec(method)} (the constants "
                         "the training and the firmware use)")
    return record


def normalise(windows, method: str = DEFAULT):
    """Normalise the last axis of ``windows`` (microvolts; numpy array or torch tensor) by ``method``."""
    check_normalisation(method)
    if isinstance(windows, np.ndarray):
        if method == "zscore":
            mean = windows.mean(axis=-1, keepdims=True)
            std = windows.std(axis=-1, ddof=1, keepdims=True)
            return (windows - mean) / (std + EPS)
        if method == "robust":
            q1, median, q3 = np.percentile(windows, [25, 50, 75], axis=-1, keepdims=True)
            return (windows - median) / ((q3 - q1) / IQR_TO_STD + EPS)
        return windows / FIXED_SCALE_UV
    import torch  # a tensor: the same arithmetic in torch (export-side use)

    x = windows
    if method == "zscore":
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, unbiased=True, keepdim=True) + EPS)
    if method == "robust":
        q = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75], dtype=x.dtype, device=x.device), dim=-1,
                           keepdim=True)
        return (x - q[1]) / ((q[2] - q[0]) / IQR_TO_STD + EPS)
    return x / FIXED_SCALE_UV


def _quantiles_x4(c: np.ndarray) -> np.ndarray:
    """Four times the 25th, 50th and 75th percentiles of each row of int64 counts (3, C), exactly:
    np.percentile's linear interpolation at q*(n-1), whose fraction is a multiple of 1/4."""
    n = c.shape[1]
    ordered = np.sort(c, axis=1)
    out = []
    for quarter in (1, 2, 3):
        lo, frac = divmod(quarter * (n - 1), 4)
        a = ordered[:, lo]
        b = ordered[:, lo + 1] if frac else a
        out.append(4 * a + (b - a) * frac)
    return np.stack(out)


def normalise_counts(counts: np.ndarray, uv_per_count: float, method: str = "zscore") -> np.ndarray:
    """One window of (C, T) int16 ADC counts of ``uv_per_count`` microvolts -> (C, T) float32, as
    the firmware's lumamba_normalise_row_s16() (firmware/runtime/lumamba_normalise.c) computes it,
    bit for bit: statistics exact on the integer counts, then float32 arithmetic in the C's order
    (numpy's float32 operations round like the firmware's). It equals :func:`normalise` of the
    microvolts up to float32 rounding (tests/test_normalise_c.py)."""
    check_normalisation(method)
    c = np.asarray(counts, np.int64)
    n = c.shape[1]
    scale = np.float32(uv_per_count)
    eps, iqr_to_std, fixed_scale = np.float32(EPS), np.float32(IQR_TO_STD), np.float32(FIXED_SCALE_UV)
    if method == "zscore":
        s1 = c.sum(axis=1)
        s2 = (c * c).sum(axis=1)
        var = (n * s2 - s1 * s1).astype(np.float32) / np.float32(n * (n - 1))
        den = np.sqrt(var) * scale + eps
        centred = (n * c - s1[:, None]).astype(np.float32) / np.float32(n)
        return ((centred * scale) / den[:, None]).astype(np.float32)
    if method == "robust":
        q1, q2, q3 = _quantiles_x4(c)
        median = q2.astype(np.float32) * np.float32(0.25)
        den = (((q3 - q1).astype(np.float32) * np.float32(0.25)) * scale) / IQR_TO_STD + eps
        centred = c.astype(np.float32) - median[:, None]
        return ((centred * scale) / den[:, None]).astype(np.float32)
    return ((c.astype(np.float32) * scale) / fixed_scale).astype(np.float32)
