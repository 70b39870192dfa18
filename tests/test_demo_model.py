"""The bundled demo model (lumamba/assets/demo_model.safetensors, made by tools/train_demo_model.py).

It loads as a 2-class classifier, it is the one its metrics file describes, and on the default
synthetic corpus's eval split (regenerated here, seed 0) it beats the band-power baseline, with
the AUROCs recorded in demo_model.json reproduced from scratch. AUROC depends only on the ranking
of the window scores: inference is float32 on the CPU with the training script's batch size, so
the scores and the AUROC come out the same, and 1e-6 (far below one swapped pair of windows,
1 / (positives * negatives) ~ 2e-4) allows only for summation order in the metric itself.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

import lumamba
from lumamba.data.baseline import run_baseline
from lumamba.data.cache import prepare_cache
from lumamba.data.dataset import WindowDataset
from lumamba.data.synth import SynthConfig, make_corpus
from lumamba.data.tuab import find_tuab_files
from lumamba.evaluate.predict import predict
from lumamba.montages import MONTAGES

ASSETS = Path(lumamba.__file__).resolve().parent / "assets"
CHECKPOINT = ASSETS / "demo_model.safetensors"
EVAL_BATCH = 64          # tools/train_demo_model.py's EVAL_BATCH
MAX_BYTES = 4 * 2 ** 20  # "a few MB at most" for a file shipped in the repository
TOL = 1e-6


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads((ASSETS / "demo_model.json").read_text())


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_corpus")
    make_corpus(root, SynthConfig())
    files, rejects = find_tuab_files(root)
    prepare_cache(files, root / "cache", workers=2, progress=False, rejects=rejects)
    return root / "cache"


def test_checkpoint_is_the_recorded_one(report):
    data = CHECKPOINT.read_bytes()
    assert hashlib.sha256(data).hexdigest() == report["sha256"]
    assert len(data) == report["bytes"] <= MAX_BYTES
    model = lumamba.load_pretrained(CHECKPOINT, n_classes=2)
    assert model.config == lumamba.get_config(report["config"])
    assert sum(p.numel() for p in model.parameters()) == report["parameters"]
    assert report["montage"] == "tcp22" and report["channels"] == list(MONTAGES["tcp22"])
    # the corpus the metrics were measured on is the one regenerated below
    default = json.loads(json.dumps(asdict(SynthConfig())))
    assert report["corpora"]["finetune_and_eval"]["synth_config"] == default
    assert report["corpora"]["pretrain"]["synth_config"]["seed"] != default["seed"]


def test_lumamba_export_defaults_to_it():
    from lumamba.export.cli import demo_model_path
    assert demo_model_path() == CHECKPOINT


def test_beats_the_baseline_on_the_eval_split_as_recorded(report, default_cache):
    recorded = report["eval"]
    seed = report["seeds"]["train_val_split"]
    channels = list(MONTAGES["tcp22"])
    model = lumamba.load_pretrained(CHECKPOINT, n_classes=2)
    dataset = WindowDataset(default_cache, recorded["split"], seed=seed, channels=channels)
    labels, probs = predict(model, dataset, batch_size=EVAL_BATCH)
    assert len(labels) == recorded["windows"] and np.bincount(labels).tolist() == recorded["model"]["class_counts"]

    auroc = roc_auc_score(labels, probs[:, 1])
    baseline = run_baseline(default_cache, seed=seed, channels=channels)
    baseline_auroc = baseline[f"auroc_{recorded['split']}"]
    assert baseline["windows"][recorded["split"]] == len(labels)     # the same windows
    assert auroc > baseline_auroc
    assert auroc == pytest.approx(recorded["model"]["auroc"], abs=TOL)
    assert average_precision_score(labels, probs[:, 1]) == pytest.approx(recorded["model"]["aupr"], abs=TOL)
    assert baseline_auroc == pytest.approx(recorded["baseline"]["auroc"], abs=TOL)
