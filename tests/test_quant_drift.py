"""`lumamba-eval drift` end to end on the synthetic TUAB corpus (EDF -> `lumamba-data prepare` cache).

A random `micro` classifier, 4 evaluation windows of the test split, 6 calibration windows of the
train split, on the 20 TCP channels every synthetic recording has. The AUROC of such a small set is
coarse, so the check here is the mechanics: files written, the report's contents, and the exit
status on both sides of the threshold (--max-drift -1 cannot be met: |drift| >= 0).
"""
from __future__ import annotations

import json

import pytest
import torch

from lumamba.checkpoint import save_checkpoint
from lumamba.config import CONFIGS
from lumamba.data import cli as data_cli
from lumamba.data.synth import SynthConfig, make_corpus
from lumamba.evaluate.cli import main as eval_main
from lumamba.model import LuMamba

TCP20 = ["FP1-F7", "F7-T3", "T3-T5", "T5-O1", "FP2-F8", "F8-T4", "T4-T6", "T6-O2", "T3-C3", "C3-CZ",
         "CZ-C4", "C4-T4", "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4", "F4-C4", "C4-P4", "P4-O2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant_drift")
    make_corpus(root / "tuab", SynthConfig(seed=3, train_subjects=2, eval_subjects=2, max_sessions=1,
                                           min_duration_s=31, max_duration_s=36))
    assert data_cli.main(["prepare", "--root", str(root / "tuab"), "--out", str(root / "cache"),
                          "--workers", "1", "--no-progress"]) == 0
    torch.manual_seed(0)
    checkpoint = save_checkpoint(LuMamba(CONFIGS["micro"], n_classes=2).eval(), root / "run" / "best.safetensors")
    return root, checkpoint


def drift(setup, *extra: str) -> int:
    root, checkpoint = setup
    return eval_main(["drift", "--checkpoint", str(checkpoint), "--data", str(root / "cache"),
                      "--channels", ",".join(TCP20), "--windows", "4", "--calib-windows", "6",
                      "--out", str(root / "drift"), "--no-progress", *extra])


def test_drift_report_and_exit_status(setup, capsys):
    root, _ = setup
    assert drift(setup, "--max-drift", "-1") == 1
    assert "exceeds --max-drift -1" in capsys.readouterr().err
    report = json.loads((root / "drift" / "drift.json").read_text())
    png = (root / "drift" / "drift.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert report["passed"] is False and report["max_drift"] == -1
    assert report["n_windows"] == 4 and report["calibration"]["n_windows"] == 6
    for side in ("float", "int8"):
        assert {"auroc", "aupr", "balanced_accuracy"} <= set(report[side])
    if report["float"]["auroc"] is not None:
        assert report["auroc_drift"] == pytest.approx(abs(report["int8"]["auroc"] - report["float"]["auroc"]))
    assert 0.0 <= report["label_agreement"] <= 1.0
    assert report["logits"]["sqnr_db"] > 20
    # 28 int8 layers + the streamed front end's statistics passes' 1 + 2 + 3 convs, 2 float (the DFT)
    assert len(report["layer_sqnr_db"]) == 28 + 6 + 2 and report["quantized"]["int8_nodes"] == 28 + 6
    assert report["float_layers"] == ["frontend/frontend:node_matmul", "frontend/frontend:node_matmul_1"]   # the DFT
    assert all(isinstance(v, str) or v > 15 for v in report["layer_sqnr_db"].values())

    # a second run reuses the export (same checkpoint, montage, length) and passes a loose threshold
    manifest = root / "drift" / "onnx" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    expected = 0 if report["auroc_drift"] is not None else 1
    assert drift(setup, "--max-drift", "1") == expected
    assert manifest.stat().st_mtime_ns == stamp
    assert json.loads((root / "drift" / "drift.json").read_text())["max_drift"] == 1

    # a config naming no layer is reported, not raised (the export is reused again)
    bad = root / "bad.json"
    bad.write_text('{"float": ["classifier.fc9"]}')
    capsys.readouterr()
    assert drift(setup, "--config", str(bad)) == 2
    assert "'classifier.fc9'" in capsys.readouterr().err
