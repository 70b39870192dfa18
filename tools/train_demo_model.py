"""Train the bundled demo model, the default of `lumamba-export`, with one command.

    .venv/bin/python tools/train_demo_model.py [--out runs/demo] [--assets lumamba/assets]

Writes lumamba/assets/demo_model.safetensors (a `micro` classifier, normal vs abnormal EEG, for
the tcp22 montage) and lumamba/assets/demo_model.json (its metrics next to the band-power
baseline's, and how it was made). Work files (corpora, caches, run directories) go to --out; a
corpus already there with the same settings is reused. tests/test_demo_model.py checks the
shipped pair. The whole run takes about 10 minutes on 2 CPU cores (more when they are shared).

Phases:

1. corpora: the pre-training corpus (tools/demo/corpus.json: another seed and more subjects than
   the default, so its subjects are disjoint from the default corpus's, which is checked) and the
   default corpus (SynthConfig(), seed 0: the one CI and the test generate).
2. prepare: both into window caches (TCP bipolar montage, 5 s windows at 256 Hz).
3. pretrain: `micro` with the mixed objective (tools/demo/pretrain.json) on the pre-training
   corpus; its own train/val split by subject, val for choosing the checkpoint.
4. finetune: from the pre-trained encoder on the default corpus's train/val split
   (tools/demo/finetune.json); the checkpoint with the lowest val loss is kept.
5. evaluate: on the default corpus's test split (its official eval set, never trained on), the
   model and the band-power baseline (fitted on the same train windows) on the same windows.

Every phase uses the 22 tcp22 channels, the deployment montage, so only recordings with both ear
electrodes take part (about 85% of them): the training loop stacks windows of one channel count
per batch, and cutting every recording down to 20 channels would never show the model the ear
derivations A1-T3 and T4-A2 it is exported with.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shlex
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from lumamba.checkpoint import load_pretrained, save_checkpoint
from lumamba.data.baseline import band_power_features, run_baseline
from lumamba.data.cache import prepare_cache
from lumamba.data.dataset import WindowDataset
from lumamba.data.synth import SynthConfig, make_corpus
from lumamba.data.tuab import find_tuab_files
from lumamba.metrics import classification_metrics, write_json
from lumamba.evaluate.predict import predict
from lumamba.montages import MONTAGES
from lumamba.train.cli import run as train_run
from lumamba.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "tools" / "demo"
MONTAGE = "tcp22"
EVAL_CORPUS = SynthConfig()   # the default corpus; tests/test_demo_model.py regenerates it
EVAL_SPLIT = "test"           # the default corpus's official eval set
EVAL_BATCH = 64               # the test predicts with the same batch size, for bit-equal logits
METRICS = ("auroc", "aupr", "balanced_accuracy", "accuracy", "n", "class_counts")


def synth_config(path: Path) -> SynthConfig:
    """The pre-training corpus: SynthConfig defaults overridden by the JSON file."""
    values = json.loads(path.read_text())
    known = {f.name for f in fields(SynthConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown SynthConfig field(s) {unknown}; known: {sorted(known)}")
    config = SynthConfig(**values)
    if config.seed == EVAL_CORPUS.seed:
        raise ValueError(f"{path}: seed {config.seed} is the default corpus's; the pre-training corpus "
                         "needs another seed so that the default corpus's eval subjects stay unseen")
    return config


def corpus_and_cache(config: SynthConfig, root: Path) -> Path:
    """Generate the corpus under root (unless root holds one with these settings) and prepare its
    window cache at root/cache; returns the cache directory."""
    manifest = root / "synth.json"
    if not (manifest.is_file() and json.loads(manifest.read_text())["config"] == json.loads(
            json.dumps(asdict(config)))):
        shutil.rmtree(root, ignore_errors=True)   # files of other settings must not join the corpus
        make_corpus(root, config)
    files, rejects = find_tuab_files(root)
    summary = prepare_cache(files, root / "cache", montage="tcp", workers=2, progress=False,
                            rejects=rejects)
    print(f"  {root}: {summary}", flush=True)
    return root / "cache"


def check_eval_subjects_unseen(pretrain_root: Path, default_root: Path) -> None:
    """No subject of the default corpus's eval split may be in a corpus or split trained on."""
    def subjects(root: Path, official_set: str) -> set[str]:
        return {s["id"] for s in json.loads((root / "synth.json").read_text())["subjects"]
                if official_set in ("any", s["official_set"])}

    seen = subjects(pretrain_root, "any") | subjects(default_root, "train")
    leaked = subjects(default_root, "eval") & seen
    if leaked:
        raise RuntimeError(f"eval subjects {sorted(leaked)} are also in the training data")


def baseline_probabilities(cache: Path, channels: list[str], seed: int, val_fraction: float,
                           C: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and class probabilities of the band-power baseline on the eval split: the model of
    lumamba.data.baseline.run_baseline (which reports AUROC only), refitted here for AUPR and
    balanced accuracy; evaluate() checks that the AUROC equals run_baseline's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = WindowDataset(cache, split, val_fraction=val_fraction, seed=seed, channels=channels)
        x = np.stack([ds[i][0].numpy() for i in range(len(ds))])
        return band_power_features(x, ds.sfreq), ds.labels

    x_train, y_train = features("train")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000)).fit(x_train, y_train)
    x_eval, y_eval = features(EVAL_SPLIT)
    return y_eval, model.predict_proba(x_eval)


def evaluate(checkpoint: Path, cache: Path, channels: list[str], split_seed: int,
             val_fraction: float) -> dict:
    """Model and baseline metrics on the same windows: the eval split's recordings that have all
    of `channels`. The model is read from `checkpoint`, as tests/test_demo_model.py reads it."""
    model = load_pretrained(checkpoint, n_classes=2)
    dataset = WindowDataset(cache, EVAL_SPLIT, val_fraction=val_fraction, seed=split_seed,
                            channels=channels)
    labels, probs = predict(model, dataset, batch_size=EVAL_BATCH)
    reference = run_baseline(cache, seed=split_seed, val_fraction=val_fraction, channels=channels)
    base_labels, base_probs = baseline_probabilities(cache, channels, split_seed, val_fraction,
                                                     reference["C"])
    if not np.array_equal(labels, base_labels):
        raise RuntimeError("the model and the baseline were scored on different windows")
    model_metrics = classification_metrics(labels, probs)
    baseline_metrics = classification_metrics(base_labels, base_probs)
    if abs(baseline_metrics["auroc"] - reference[f"auroc_{EVAL_SPLIT}"]) > 1e-12:
        raise RuntimeError(f"refitted baseline AUROC {baseline_metrics['auroc']} differs from "
                           f"run_baseline's {reference[f'auroc_{EVAL_SPLIT}']}")
    return {"split": EVAL_SPLIT, "windows": len(dataset), "recordings": len(dataset.files),
            "subjects": len({f["subject"] for f in dataset.files}),
            "model": {k: model_metrics[k] for k in METRICS},
            "baseline": {"method": reference["features"] + ", standardised, logistic regression "
                         f"C={reference['C']}, fitted on the {reference['windows']['train']} "
                         "train-split windows", **{k: baseline_metrics[k] for k in METRICS}}}


def train(task: str, config_file: Path, run_dir: Path, channels: list[str], **values) -> tuple[dict, dict]:
    """One lumamba-train run in this process; returns its summary and its settings."""
    cfg = load_config(task, config_file, [f"channels={','.join(channels)}"], **values)
    summary = train_run(cfg, run_dir)
    return summary, cfg.to_dict()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recorded(settings: dict, out: Path) -> dict:
    """Run settings as recorded: work paths relative to --out (they are machine-specific), and
    without the pre-training settings a fine-tuning run ignores (model size, objective)."""
    ignored = ("model", "objective") if settings["task"] == "finetune" else ()
    return {k: (f"<out>/{Path(v).relative_to(out)}" if k in ("data", "init") and v else v)
            for k, v in settings.items() if k not in ignored}


def split_windows(cache: Path, channels: list[str], settings: dict) -> dict[str, int]:
    """Windows per split with all `channels`, as the run with `settings` split them."""
    return {split: len(WindowDataset(cache, split, val_fraction=settings["val_fraction"],
                                     seed=settings["seed"], channels=channels))
            for split in ("train", "val", "test")}


@contextmanager
def timed(name: str, timings: dict[str, float]):
    """Print a phase's name, run it, record and print its wall time."""
    print(f"== {name}", flush=True)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)
    print(f"== {name}: {timings[name]} s", flush=True)


def describe(checkpoint: Path, model, result: dict, pretrain_corpus: SynthConfig,
             caches: dict[str, Path], runs: dict[str, tuple[dict, dict]], out: Path,
             command: list[str], timings: dict[str, float]) -> dict:
    """The metrics file: results first, then everything needed to make the model again."""
    (pt_summary, pt_settings), (ft_summary, ft_settings) = runs["pretrain"], runs["finetune"]
    channels = pt_settings["channels"]
    return {
        "checkpoint": checkpoint.name, "bytes": checkpoint.stat().st_size, "sha256": sha256(checkpoint),
        "config": pt_settings["model"], "model_config": model.config.to_dict(), "n_classes": 2,
        "parameters": sum(p.numel() for p in model.parameters()),
        "montage": MONTAGE, "channels": channels,
        "eval": result,
        "beats_baseline": result["model"]["auroc"] > result["baseline"]["auroc"],
        "corpora": {
            "pretrain": {"synth_config": asdict(pretrain_corpus),
                         "windows": split_windows(caches["pretrain"], channels, pt_settings)},
            "finetune_and_eval": {"synth_config": asdict(EVAL_CORPUS),
                                  "windows": split_windows(caches["finetune"], channels, ft_settings)},
        },
        "seeds": {"pretrain_corpus": pretrain_corpus.seed, "default_corpus": EVAL_CORPUS.seed,
                  "pretrain": pt_settings["seed"], "finetune": ft_settings["seed"],
                  "train_val_split": ft_settings["seed"]},
        "training": {
            task: {**recorded(settings, out), "steps": summary["steps"], "epochs_run": summary["epochs"],
                   "best_val_loss": summary["best_val_loss"], "stopped_early": summary["stopped_early"]}
            for task, (summary, settings) in runs.items()},
        "command": " ".join([".venv/bin/python", "tools/train_demo_model.py", *map(shlex.quote, command)]),
        "timings_s": timings, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="work directory (default: runs/demo)")
    parser.add_argument("--assets", default=str(REPO / "lumamba" / "assets"),
                        help="where demo_model.safetensors/.json go (default: lumamba/assets)")
    parser.add_argument("--configs", default=str(CONFIG_DIR),
                        help="folder of corpus.json, pretrain.json, finetune.json (default: tools/demo)")
    args = parser.parse_args(argv)
    out, assets, configs = Path(args.out).resolve(), Path(args.assets), Path(args.configs)
    channels = list(MONTAGES[MONTAGE])
    pretrain_corpus = synth_config(configs / "corpus.json")
    timings: dict[str, float] = {}
    started = time.perf_counter()

    with timed("corpora+prepare", timings):
        caches = {"pretrain": corpus_and_cache(pretrain_corpus, out / "pretrain_corpus"),
                  "finetune": corpus_and_cache(EVAL_CORPUS, out / "default_corpus")}
        check_eval_subjects_unseen(out / "pretrain_corpus", out / "default_corpus")
    runs: dict[str, tuple[dict, dict]] = {}
    with timed("pretrain", timings):
        runs["pretrain"] = train("pretrain", configs / "pretrain.json", out / "pretrain", channels,
                                 data=str(caches["pretrain"]))
    with timed("finetune", timings):
        runs["finetune"] = train("finetune", configs / "finetune.json", out / "finetune", channels,
                                 data=str(caches["finetune"]), init=runs["pretrain"][0]["best_weights"])
    with timed("evaluate", timings):
        # Staged in --out and scored from the file, exactly as shipped; copied to --assets only
        # when it beats the baseline, so a failed run never replaces a good demo model.
        model = load_pretrained(runs["finetune"][0]["best_weights"], n_classes=2)
        checkpoint = save_checkpoint(model, out / "demo_model.safetensors")
        settings = runs["finetune"][1]
        result = evaluate(checkpoint, caches["finetune"], channels, settings["seed"], settings["val_fraction"])
    timings["total"] = round(time.perf_counter() - started, 1)

    report = describe(checkpoint, model, result, pretrain_corpus, caches, runs, out,
                      sys.argv[1:] if argv is None else argv, timings)
    write_json(report, out / "demo_model.json")
    print(json.dumps({"eval": result, "timings_s": timings, "bytes": report["bytes"]}, indent=1))
    if not report["beats_baseline"]:
        print(f"the model does NOT beat the band-power baseline's AUROC; {assets} left as it was "
              f"(this run's files are in {out})", file=sys.stderr)
        return 1
    assets.mkdir(parents=True, exist_ok=True)
    for name in ("demo_model.safetensors", "demo_model.json"):
        shutil.copyfile(out / name, assets / name)
    print(f"wrote {assets / 'demo_model.safetensors'} and demo_model.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
