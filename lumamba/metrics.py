"""Classification metrics as reported for TUAB: balanced accuracy, AUROC and AUPR, and a JSON writer.

AUROC and AUPR score the positive class (label 1) by its predicted probability; AUPR is the
average precision (scikit-learn's `average_precision_score`, the step-wise area under the
precision-recall curve, no interpolation). Balanced accuracy is the macro-averaged recall of the
arg-max predictions.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:                       # positive-class scores of a binary problem
        probs = np.stack([1 - probs, probs], axis=1)
    if labels.ndim != 1 or probs.ndim != 2 or len(labels) != len(probs):
        raise ValueError(f"labels must be (N,) and probabilities (N, K) or (N,) with the same N; "
                         f"got shapes {labels.shape} and {probs.shape}")
    if len(labels) == 0:
        raise ValueError("no samples to score")
    if not np.isfinite(probs).all():
        raise ValueError(f"{int((~np.isfinite(probs)).sum())} non-finite probabilities")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be integers in [0, {probs.shape[1] - 1}], got {np.unique(labels)[:10]}")
    return labels, probs


def classification_metrics(labels, probs) -> dict:
    """Metrics of class probabilities `probs` (N, K) (or positive-class scores (N,)) against `labels` (N,).

    Binary problems get AUROC and AUPR of probs[:, 1]; with K > 2 AUROC is the macro one-vs-rest
    average and AUPR is left out. A split holding one class only has no AUROC/AUPR: they are None
    and `warnings` says why."""
    labels, probs = _check(labels, probs)
    with warnings.catch_warnings():   # a class predicted but absent is reported below, not warned about
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, probs.argmax(1)))
    out: dict = {"n": int(len(labels)), "class_counts": np.bincount(labels, minlength=probs.shape[1]).tolist(),
                 "balanced_accuracy": balanced,
                 "accuracy": float((labels == probs.argmax(1)).mean()), "auroc": None, "aupr": None,
                 "warnings": []}
    if len(np.unique(labels)) < 2:
        out["warnings"].append("only one class present: AUROC and AUPR are undefined")
    elif probs.shape[1] == 2:
        out["auroc"] = float(roc_auc_score(labels, probs[:, 1]))
        out["aupr"] = float(average_precision_score(labels, probs[:, 1]))
    else:
        present = np.unique(labels)
        if len(present) == probs.shape[1]:
            out["auroc"] = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
        else:
            out["warnings"].append("not every class present: multi-class AUROC is undefined")
    return out


def write_json(obj: dict, path: str | os.PathLike) -> Path:
    """Write `obj` as indented JSON, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    finally:                      # a full disk leaves no orphan temporary file
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
