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
input it feeds the model and generate the same arithmetic in C).
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
