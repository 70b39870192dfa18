"""Metrics against hand-computed values and independent implementations; plots and lumamba-eval."""
import json
import struct

import numpy as np
import pytest
import torch

from lumamba.checkpoint import save_checkpoint
from lumamba.config import CONFIGS
from lumamba.evaluate.cli import main as eval_main
from lumamba.metrics import classification_metrics, write_json
from lumamba.plots import plot_loss_curves, plot_roc_curve
from lumamba.evaluate.predict import predict
from lumamba.model import LuMamba
from lumamba.train.data import ArrayWindows, save_npz_windows

NAMES = ["FP1-F7", "F7-T3", "T3-T5", "T5-O1"]


def _auroc_pairs(y, s):
    """Mann-Whitney: the fraction of (positive, negative) pairs ranked correctly, ties count half."""
    pos, neg = s[y == 1], s[y == 0]
    return np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])


def _average_precision(y, s):
    """sum_k (R_k - R_{k-1}) P_k over the distinct score thresholds, from the top."""
    ap, prev_recall = 0.0, 0.0
    for threshold in sorted(set(s), reverse=True):
        predicted = s >= threshold
        tp = np.sum(predicted & (y == 1))
        recall, precision = tp / np.sum(y == 1), tp / np.sum(predicted)
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_hand_computed_example():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(y, np.stack([1 - p1, p1], 1))
    # Pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4.
    assert m["auroc"] == pytest.approx(0.75, abs=1e-12)
    # Ranked: 0.8 (pos) P=1 R=.5; 0.4 (neg); 0.35 (pos) P=2/3 R=1 -> AP = .5*1 + .5*2/3.
    assert m["aupr"] == pytest.approx(0.5 + 1 / 3, abs=1e-12)
    # Arg-max predictions 0,0,0,1: recall 1 on class 0, 1/2 on class 1.
    assert m["balanced_accuracy"] == pytest.approx(0.75, abs=1e-12)
    assert m["accuracy"] == pytest.approx(0.75, abs=1e-12)
    assert m["n"] == 4 and m["class_counts"] == [2, 2] and m["warnings"] == []
    # A 1-D positive-class score is the same problem.
    assert classification_metrics(y, p1)["aupr"] == m["aupr"]


def test_random_data_against_independent_implementations():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.25, 300), 0, 1), 2)   # rounding makes ties
    m = classification_metrics(y, s)
    assert m["auroc"] == pytest.approx(_auroc_pairs(y, s), abs=1e-12)
    assert m["aupr"] == pytest.approx(_average_precision(y, s), abs=1e-12)
    pred = (s > 0.5).astype(int)     # arg-max of (1 - s, s): ties at 0.5 go to class 0
    recalls = [np.mean(pred[y == k] == k) for k in (0, 1)]
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-12)


def test_multiclass_and_single_class():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), 60)
    y = rng.integers(0, 3, 60)
    m = classification_metrics(y, probs)
    assert m["aupr"] is None and 0 <= m["auroc"] <= 1
    one = classification_metrics(np.zeros(5, int), rng.random(5))
    assert one["auroc"] is None and one["aupr"] is None and "one class" in one["warnings"][0]


@pytest.mark.parametrize("labels,probs,match", [
    (np.array([0, 1, 1]), np.array([0.1, 0.2]), "shape"),
    (np.array([0, 1]), np.array([0.1, np.nan]), "non-finite"),
    (np.array([0, 2]), np.array([0.1, 0.9]), "labels must be integers"),
    (np.array([0.0, 1.0]), np.array([0.1, 0.9]), "labels must be integers"),
    (np.array([], int), np.zeros((0, 2)), "no samples"),
])
def test_bad_inputs_are_rejected(labels, probs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(labels, probs)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_json_and_png_writers(tmp_path):
    path = write_json({"auroc": 0.5, "n": 3}, tmp_path / "sub" / "m.json")
    assert json.loads(path.read_text()) == {"auroc": 0.5, "n": 3}
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train": {"loss": 1 / e, "ce": 1 / e}}
               for e in (1, 2, 3)]
    w, h = _png_size(plot_loss_curves(history, tmp_path / "loss.png"))
    assert w > 300 and h > 200
    w, h = _png_size(plot_roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], tmp_path / "roc.png"))
    assert w > 300 and h > 300
    assert not list(tmp_path.glob("*.tmp*"))


def test_lumamba_eval_metrics_on_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = LuMamba(CONFIGS["micro"], 2)
    ckpt = save_checkpoint(model, tmp_path / "clf.safetensors")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 4, 160)).astype(np.float32), np.array([0, 1] * 5)
    data = save_npz_windows(tmp_path / "d.npz", x, y, NAMES, ["test"] * 10)
    assert eval_main(["metrics", "--checkpoint", str(ckpt), "--data", str(data), "--split", "test",
                      "--out", str(tmp_path / "eval"), "--no-progress", "--device", "cpu"]) == 0
    written = json.loads((tmp_path / "eval" / "test_metrics.json").read_text())
    labels, probs = predict(model, ArrayWindows(x, y, NAMES), batch_size=4)
    expected = classification_metrics(labels, probs)
    for key in ("balanced_accuracy", "auroc", "aupr", "n"):
        assert written[key] == pytest.approx(expected[key], abs=1e-6)
    assert (tmp_path / "eval" / "test_roc.png").is_file()
