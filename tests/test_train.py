"""Training: configuration, optimiser set-up, epoch order, a real interrupt-and-resume, fine-tuning
with early stopping and metrics."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lumamba.checkpoint import load_pretrained, read_checkpoint
from lumamba.config import CONFIGS
from lumamba.metrics import classification_metrics
from lumamba.evaluate.predict import predict
from lumamba.model import LuMamba
from lumamba.train.cli import main as train_main
from lumamba.train.config import ConfigError, load_config
from lumamba.train.data import EpochBatches, open_split, save_npz_windows
from lumamba.train.loop import FAULT_ENV, use_bf16
from lumamba.train.optim import build_optimizer, layer_id, lr_at, param_groups

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["FP1-F7", "F7-T3", "T3-T5", "T5-O1"]
# micro model, 8-patch windows, small LeJEPA views; 20 train windows in batches of 4 = 5 steps/epoch.
PRETRAIN = ["--model", "micro", "--set", "batch_size=4", "--set", "epochs=3", "--set", "warmup_epochs=1",
            "--set", "lr=1e-3", "--set", "checkpoint_every=2", "--set", "progress=false",
            "--set", "objective.global_patches=4", "--set", "objective.local_patches=2",
            "--set", "objective.sigreg_directions=16"]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 14)
    x = rng.standard_normal((28, 4, 320)).astype(np.float32) * (1 + 0.5 * y[:, None, None])
    split = ["train"] * 20 + ["val"] * 4 + ["test"] * 4
    return save_npz_windows(tmp_path_factory.mktemp("data") / "windows.npz", x, y, NAMES, split)


# ---- configuration --------------------------------------------------------------------------

def test_config_file_flags_and_overrides_in_that_order(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('lr = 3e-4\nepochs = 7\nbatch_size = 16\n[objective]\nmode = "lejepa"\nmask_ratio = 0.5\n')
    cfg = load_config("pretrain", toml, ["epochs=2", "objective.mask_ratio=0.25", "channels=FP1-F7,F7-T3"],
                      model="micro", batch_size=8)
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.model) == (3e-4, 2, 8, "micro")
    assert (cfg.objective.mode, cfg.objective.mask_ratio) == ("lejepa", 0.25)
    assert cfg.channels == ["FP1-F7", "F7-T3"]
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"objective.sigreg_directions": 300, "progress": False}))
    cfg = load_config("finetune", js)
    assert cfg.objective.sigreg_directions == 300 and cfg.progress is False
    assert (cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.epochs) == (5e-4, 0.05, 0.75, 50)   # paper's fine-tuning


@pytest.mark.parametrize("contents,overrides,match", [
    ('lr = "fast"\n', [], r"c.toml: lr must be float"),
    ("learning_rate = 1\n", [], r"c.toml: unknown key\(s\) learning_rate"),
    ('task = "finetune"\n', [], "task is 'finetune' but the command is 'pretrain'"),
    ("", ["epochs=two"], r"--set epochs=two: epochs must be int"),
    ("", ["objective.mode=mae"], r"--set objective.mode=mae: objective.mode must be one of"),
    ("", ["lr"], "expected key=value"),
    ("", ["layer_decay=0"], r"layer_decay must be in \(0, 1\]"),
])
def test_bad_settings_name_the_key_and_the_source(tmp_path, contents, overrides, match):
    path = tmp_path / "c.toml"
    path.write_text(contents)
    with pytest.raises(ConfigError, match=match):
        load_config("pretrain", path, overrides)


def test_missing_or_unknown_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config("pretrain", tmp_path / "nope.toml")
    (tmp_path / "c.yaml").write_text("lr: 1")
    with pytest.raises(ConfigError, match=".json or .toml"):
        load_config("pretrain", tmp_path / "c.yaml")


# ---- optimiser and schedule -----------------------------------------------------------------

def test_weight_decay_groups_and_layer_wise_lr():
    model = LuMamba(CONFIGS["small"], 2)                       # two Mamba blocks
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.75)
    seen = [n for g in groups for n in g["names"]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))
    params = dict(model.named_parameters())
    for g in groups:
        for name in g["names"]:
            p = params[name]
            no_decay = p.ndim <= 1 or name.endswith(("A_log",))
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
            depth = 1 if name.startswith(("mamba_blocks.0.", "norm_layers.0.")) else \
                2 if name.startswith(("mamba_blocks.1.", "norm_layers.1.")) else \
                3 if name.startswith("classifier.") else 0
            assert layer_id(name, 2) == depth
            assert g["lr_scale"] == pytest.approx(0.75 ** (3 - depth)), name
    assert "mask_token" not in seen                            # frozen in a classifier
    opt = build_optimizer(model, lr=5e-4, weight_decay=0.05, layer_decay=0.75)
    assert sorted({round(g["lr"] / 5e-4, 6) for g in opt.param_groups}) == [0.421875, 0.5625, 0.75, 1.0]


def test_warmup_then_cosine():
    lr = lambda s: lr_at(s, total_steps=110, warmup_steps=10, lr=1.0, min_lr=0.01)
    assert [lr(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.505)                      # half-way: (lr + min_lr) / 2
    assert lr(110) == pytest.approx(0.01) and lr(500) == pytest.approx(0.01)
    assert all(lr(s) >= lr(s + 1) for s in range(10, 110))


def test_bf16_only_where_asked_or_on_capable_gpus():
    cpu = torch.device("cpu")
    assert not use_bf16("auto", cpu) and not use_bf16("fp32", cpu) and use_bf16("bf16", cpu)


# ---- epoch order ----------------------------------------------------------------------------

def test_epoch_order_is_a_function_of_seed_and_epoch_and_splits_over_ranks():
    def batches(epoch, rank=0, world=1, skip=0, seed=0):
        b = EpochBatches(22, 8, seed=seed, rank=rank, world_size=world)
        b.set_epoch(epoch, skip)
        return list(b)
    e0 = batches(0)
    assert len(e0) == 2 == len(EpochBatches(22, 8)) and all(len(b) == 8 for b in e0)   # tail of 6 dropped
    assert len({i for b in e0 for i in b}) == 16
    assert batches(0) == e0 and batches(1) != e0 and batches(0, seed=1) != e0
    assert batches(0, skip=1) == e0[1:]
    halves = [batches(0, rank=r, world=2) for r in (0, 1)]
    assert [h0 + h1 for h0, h1 in zip(*halves)] == e0
    with pytest.raises(ValueError, match="multiple of the 3 ranks"):
        EpochBatches(22, 8, world_size=3)
    # Evaluation keeps the tail, split over ranks.
    ev = EpochBatches(22, 8, shuffle=False, drop_last=False)
    assert [len(b) for b in ev] == [8, 8, 6] and len(ev) == 3


def test_npz_splits_and_channel_selection(data):
    train = open_split(data, "train", channels=["T3-T5", "FP1-F7"])
    assert len(train) == 20 and train.channel_names == ["T3-T5", "FP1-F7"]
    with np.load(data) as f:
        assert torch.equal(train[3][0], torch.from_numpy(f["x"][3][[2, 0]]))
    with pytest.raises(ValueError, match="not in the file's channels"):
        open_split(data, "train", channels=["CZ-C4"])
    with pytest.raises(FileNotFoundError, match="data not found"):
        open_split(data.parent / "missing", "train")


# ---- interrupt and resume -------------------------------------------------------------------

def _weights(path):
    return load_file(str(path))


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, data):
    """Kill a pre-training run mid-epoch (os._exit after step 7; last checkpoint at step 6), resume
    it, and compare with an uninterrupted run: every tensor must be bit-identical. Same seed, same
    thread count, CPU: the batch order, masks, crops and directions are functions of (seed, step),
    and the dropout/position-noise RNG and AdamW moments are restored from the checkpoint."""
    common = ["pretrain", "--data", str(data), *PRETRAIN]
    assert train_main([*common, "--out", str(tmp_path / "straight")]) == 0

    env = {**os.environ, FAULT_ENV: "7", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "import sys, torch; torch.set_num_threads(1); from lumamba.train.cli import main; "
           "sys.exit(main(sys.argv[1:]))", *common, "--out", str(tmp_path / "broken")]
    killed = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 75, killed.stderr[-2000:]
    state = torch.load(tmp_path / "broken" / "train_state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 1)
    assert [p.name for p in (tmp_path / "broken" / "checkpoints").iterdir()] == ["step-00000006.safetensors"]

    env.pop(FAULT_ENV)
    resumed = subprocess.run([*cmd, "--resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    for name in ("checkpoints/step-00000015.safetensors", "best.safetensors"):
        a, b = _weights(tmp_path / "straight" / name), _weights(tmp_path / "broken" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs"
    h1 = json.loads((tmp_path / "straight" / "history.json").read_text())
    h2 = json.loads((tmp_path / "broken" / "history.json").read_text())
    assert [(h["train_loss"], h["val_loss"]) for h in h1] == [(h["train_loss"], h["val_loss"]) for h in h2]
    # The run directory holds checkpoints in the published layout and the loss curves.
    load_pretrained(tmp_path / "broken" / "best.safetensors")
    assert (tmp_path / "broken" / "loss_curves.png").is_file()


def test_resume_refuses_changed_settings_or_a_missing_state(tmp_path, data, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--out", str(out), "--model", "micro", "--set", "batch_size=4",
            "--set", "epochs=1", "--set", "max_steps_per_epoch=1", "--set", "progress=false",
            "--set", "objective.mode=reconstruction"]
    assert train_main([*args, "--resume"]) == 2
    assert "no training state" in capsys.readouterr().err
    assert train_main(args) == 0
    assert train_main([*args, "--set", "lr=1", "--resume"]) == 2
    assert "different settings for lr" in capsys.readouterr().err


# ---- fine-tuning ----------------------------------------------------------------------------

def test_finetune_from_pretraining_with_early_stopping_and_metrics(tmp_path, data):
    pre = tmp_path / "pre"
    assert train_main(["pretrain", "--data", str(data), "--out", str(pre), "--model", "micro",
                       "--set", "batch_size=4", "--set", "epochs=1", "--set", "progress=false",
                       "--set", "objective.mode=reconstruction"]) == 0
    ft = tmp_path / "ft"
    # lr = 0: the validation loss cannot improve after epoch 1, so patience 2 stops after epoch 3.
    assert train_main(["finetune", "--data", str(data), "--out", str(ft), "--init", str(pre / "best.safetensors"),
                       "--set", "batch_size=4", "--set", "epochs=10", "--set", "patience=2", "--set", "lr=0",
                       "--set", "min_lr=0", "--set", "progress=false"]) == 0
    history = json.loads((ft / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert len({h["val_loss"] for h in history}) == 1
    state = torch.load(ft / "train_state.pt", weights_only=True)
    assert state["finished"] and state["bad_epochs"] == 2
    # Encoder weights come from the pre-training checkpoint, the classifier is new.
    pre_w, _ = read_checkpoint(pre / "best.safetensors")
    ft_w, _ = read_checkpoint(ft / "best.safetensors")
    assert torch.equal(pre_w["mamba_blocks.0.mamba_fwd.in_proj.weight"], ft_w["mamba_blocks.0.mamba_fwd.in_proj.weight"])
    assert "decoder_head.mlp.0.weight" not in ft_w and any(k.startswith("classifier.") for k in ft_w)
    # Metrics of the best checkpoint on val and test, as JSON, with ROC curves.
    model = load_pretrained(ft / "best.safetensors", n_classes=2)
    for split in ("val", "test"):
        written = json.loads((ft / f"{split}_metrics.json").read_text())
        labels, probs = predict(model, open_split(data, split))
        expected = classification_metrics(labels, probs)
        assert written["auroc"] == pytest.approx(expected["auroc"], abs=1e-6)
        assert written["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"], abs=1e-6)
        assert (ft / f"{split}_roc.png").is_file()


def test_finetune_learns_a_separable_task(tmp_path):
    """A few epochs on windows whose class sets the amplitude: training loss must fall."""
    rng = np.random.default_rng(3)
    y = np.array([0, 1] * 16)
    x = rng.standard_normal((32, 4, 160)).astype(np.float32) * (0.3 + 2.0 * y[:, None, None])
    path = save_npz_windows(tmp_path / "d.npz", x, y, NAMES, ["train"] * 24 + ["val"] * 8)
    assert train_main(["finetune", "--data", str(path), "--out", str(tmp_path / "ft"), "--model", "micro",
                       "--set", "batch_size=8", "--set", "epochs=6", "--set", "warmup_epochs=1", "--set", "lr=3e-3",
                       "--set", "progress=false"]) == 0
    history = json.loads((tmp_path / "ft" / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.05


def test_a_cache_mixing_22_and_20_channel_recordings_uses_the_shared_channels(tmp_path, caplog):
    """TUAB has recordings without A1/A2: such a split trains on the 20 channels all files have."""
    from lumamba.data.cache import prepare_cache
    from lumamba.data.synth import SynthConfig, make_corpus
    from lumamba.data.tuab import find_tuab_files
    from lumamba.montages import MONTAGES

    make_corpus(tmp_path / "synth", SynthConfig(train_subjects=6, eval_subjects=2, max_sessions=1,
                                                min_duration_s=11, max_duration_s=16, no_ears_fraction=0.5))
    files, rejects = find_tuab_files(tmp_path / "synth")
    prepare_cache(files, tmp_path / "cache", workers=1, progress=False, rejects=rejects)
    with caplog.at_level("WARNING", logger="lumamba.train.data"):
        ds = open_split(tmp_path / "cache", "train")
    assert "mixes recordings" in caplog.text
    assert {tuple(ds[i][2]["channels"]) for i in range(len(ds))} == {MONTAGES["tcp20"]}
