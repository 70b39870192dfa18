"""Reliability of checkpoints, lumamba-train and lumamba-eval: each bad input, built here, gets
one line on stderr naming the file, option or value, an exit status, and never a traceback."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lumamba import CONFIGS, CheckpointError, LuMamba, load_pretrained, save_checkpoint
from lumamba.checkpoint import read_checkpoint, read_preprocess
from lumamba.evaluate.cli import main as eval_main
from lumamba.train import cli as train_cli
from lumamba.train.cli import main as train_main
from lumamba.train.data import save_npz_windows

NAMES = ["FP1-F7", "F7-T3", "T3-T5", "T5-O1"]
MICRO = CONFIGS["micro"]


def one_line_error(capsys, *needles: str) -> str:
    """The command's stderr: exactly one line, containing every needle, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 10)
    x = rng.standard_normal((20, 4, 80)).astype(np.float32) * (1 + 0.5 * y[:, None, None])
    split = ["train"] * 12 + ["val"] * 4 + ["test"] * 4
    return save_npz_windows(tmp_path_factory.mktemp("data") / "windows.npz", x, y, NAMES, split)


def _finetune(data: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--data", str(data), "--out", str(out), "--model", "micro", "--set", "epochs=1",
            "--set", "batch_size=4", "--set", "progress=false", *extra]


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "ft"
    assert train_main(_finetune(data, out)) == 0
    return out


def _write_checkpoint(path: Path, config: str | None, tensors: dict | None = None) -> Path:
    tensors = tensors if tensors is not None else {"model.x": torch.zeros(2)}
    save_file(tensors, str(path), metadata={"lumamba_config": config} if config is not None else None)
    return path


# ---- checkpoint config metadata and weights ---------------------------------------------------

@pytest.mark.parametrize("config, text", [
    ('{"embed_dim": "32"}', "embed_dim must be int, got '32'"),
    ('{"num_heads": 3, "embed_dim": 32}', "num_heads (3) must divide embed_dim (32)"),
    ('{"embed_dim": 65536, "num_queries": 64}', "parameters, more than the 1e+09 allowed"),
    ('{"n_blocks": 0}', "n_blocks must be >= 1, got 0"),
    ('{"dropout": 2.0}', "dropout must be in [0, 1)"),
    ('{"mlp_ratio": NaN}', "mlp_ratio must be finite"),
    ('{"wrong_field": 1}', "unknown config fields: ['wrong_field']"),
    ('[1, 2]', "config must be a JSON object"),
    ('{not json', "bad lumamba_config metadata"),
])
def test_bad_config_metadata_is_refused_naming_file_and_field(tmp_path, config, text):
    path = _write_checkpoint(tmp_path / "bad.safetensors", config)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and text in message and "\n" not in message


def test_absurd_sizes_are_refused_before_allocating(tmp_path):
    # 2e9 parameters would take 8 GB: refused from the sizes alone, in well under a second.
    path = _write_checkpoint(tmp_path / "huge.safetensors", '{"embed_dim": 4096, "num_queries": 64}')
    import time
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="parameters"):
        load_pretrained(path, n_classes=2)
    assert time.perf_counter() - start < 2.0


def test_parameter_estimate_is_within_ten_percent():
    for config in CONFIGS.values():
        real = sum(p.numel() for p in LuMamba(config, n_classes=2).parameters())
        assert abs(config.approx_parameters() - real) / real < 0.11


def test_nan_or_inf_weights_are_refused_naming_the_tensor(tmp_path):
    model = LuMamba(MICRO, n_classes=2)
    with torch.no_grad():
        model.classifier.fc3.weight[0, 0] = float("nan")
        model.norm_layers[0].weight[0] = float("inf")
    path = save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match=r"non-finite \(NaN or inf\) values in 2 tensor\(s\): "
                                              r"classifier\.fc3\.weight, norm_layers\.0\.weight$"):
        load_pretrained(path, n_classes=2)


def test_garbage_file_is_one_line(tmp_path, capsys, data):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\xff" * 64)
    assert eval_main(["metrics", "--checkpoint", str(path), "--data", str(data), "--out", str(tmp_path)]) == 1
    one_line_error(capsys, "lumamba-eval metrics: error:", str(path), "not a readable safetensors file")


# ---- lumamba-train ------------------------------------------------------------------------------

def test_existing_run_is_not_overwritten_without_a_flag(run_dir, data, capsys):
    before = (run_dir / "best.safetensors").read_bytes()
    assert train_main(_finetune(data, run_dir)) == 2
    one_line_error(capsys, f"--out {run_dir} already holds a run", "--resume", "--overwrite")
    assert (run_dir / "best.safetensors").read_bytes() == before


def test_overwrite_replaces_the_run_and_keeps_other_files(run_dir, data, tmp_path, capsys):
    import shutil
    out = tmp_path / "ft"
    shutil.copytree(run_dir, out)
    (out / "notes.txt").write_text("mine")
    (out / "history.json").write_text("[]")
    assert train_main(_finetune(data, out, "--overwrite")) == 0
    assert len(json.loads((out / "history.json").read_text())) == 1
    assert (out / "notes.txt").read_text() == "mine"
    assert train_main(_finetune(data, out, "--overwrite", "--resume")) == 2
    one_line_error(capsys, "--resume and --overwrite exclude each other")


def test_a_failing_overwrite_deletes_nothing(run_dir, data, capsys):
    assert train_main(_finetune(data, run_dir, "--overwrite", "--set", "batch_size=64")) == 2
    one_line_error(capsys, "only 12 training windows for a batch of 64", "--set batch_size=12")
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "train_state.pt").is_file()


@pytest.mark.parametrize("content, text", [
    (b"not a pickle at all", "corrupt training state"),
    (None, "incomplete training state, missing"),
])
def test_corrupt_or_incomplete_state_on_resume(run_dir, data, tmp_path, capsys, content, text):
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    if content is None:
        torch.save({"format": 1, "weights": "checkpoints/x.safetensors"}, run / "train_state.pt")
    else:
        (run / "train_state.pt").write_bytes(content)
    assert train_main(_finetune(data, run, "--resume")) == 1
    one_line_error(capsys, "lumamba-train finetune: error:", str(run / "train_state.pt"), text)


def test_state_naming_a_file_outside_the_run_is_refused(run_dir, tmp_path, data, capsys):
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    state = torch.load(run / "train_state.pt", weights_only=True)
    state["weights"] = "../../elsewhere.safetensors"
    torch.save(state, run / "train_state.pt")
    assert train_main(_finetune(data, run, "--resume")) == 1
    one_line_error(capsys, "is not a file under checkpoints/")


@pytest.mark.parametrize("override, text", [
    ("lr=inf", "lr must be a finite number, got inf"),
    ("lr=nan", "lr must be a finite number, got nan"),
    ("weight_decay=-1", "must be >= 0"),
    ("epochs=0", "epochs must be >= 1"),
    ("batch_size=many", "batch_size must be int, got 'many'"),
])
def test_bad_numeric_options(data, tmp_path, capsys, override, text):
    assert train_main(_finetune(data, tmp_path / "ft", "--set", override)) == 2
    one_line_error(capsys, text)


def test_corrupt_init_checkpoint(data, tmp_path, capsys):
    init = tmp_path / "init.safetensors"
    init.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    assert train_main(_finetune(data, tmp_path / "ft", "--init", str(init))) == 1
    one_line_error(capsys, str(init), "not a readable safetensors file")


def test_full_disk_is_one_line_and_leaves_no_temporary_file(data, tmp_path, capsys, monkeypatch):
    from lumamba.train import loop

    def full(history_path_dir, history):
        raise OSError(errno.ENOSPC, "No space left on device", str(history_path_dir / "history.json.tmp"))
    monkeypatch.setattr(loop, "_write_history", full)
    out = tmp_path / "ft"
    assert train_main(_finetune(data, out)) == 1
    one_line_error(capsys, "history.json.tmp: No space left on device")
    assert not list(out.rglob("*.tmp"))


def test_ctrl_c_exits_130_with_the_resume_command(data, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_cli, "run", interrupted)
    argv = _finetune(data, tmp_path / "ft", "--overwrite")
    assert train_main(argv) == 130
    line = one_line_error(capsys, "lumamba-train finetune: interrupted; resume with: lumamba-train finetune")
    assert line.endswith("--resume") and "--overwrite" not in line


# ---- lumamba-eval -------------------------------------------------------------------------------

@pytest.mark.parametrize("content, text", [
    ("{", "not JSON"),
    ('{"epoch": 1}', "expected a list of per-epoch objects"),
    ("[]", "no epochs recorded yet"),
])
def test_bad_history(tmp_path, capsys, content, text):
    history = tmp_path / "history.json"
    history.write_text(content)
    assert eval_main(["curves", "--history", str(history), "--out", str(tmp_path / "c.png")]) == 1
    one_line_error(capsys, f"--history {history}", text)


def test_metrics_refuse_data_normalised_differently(run_dir, tmp_path, capsys):
    assert read_preprocess(run_dir / "best.safetensors")["normalisation"] == "zscore"
    rng = np.random.default_rng(1)
    other = save_npz_windows(tmp_path / "fixed.npz", rng.standard_normal((4, 4, 80)), [0, 1, 0, 1], NAMES,
                             ["test"] * 4, normalisation="fixed")
    assert eval_main(["metrics", "--checkpoint", str(run_dir / "best.safetensors"), "--data", str(other),
                      "--out", str(tmp_path), "--no-progress"]) == 1
    one_line_error(capsys, "trained on zscore-normalised windows", "holds fixed-normalised ones",
                   "--normalisation zscore")


def test_training_records_the_data_normalisation(tmp_path):
    rng = np.random.default_rng(2)
    y = np.array([0, 1] * 6)
    data = save_npz_windows(tmp_path / "robust.npz", rng.standard_normal((12, 4, 80)), y, NAMES,
                            ["train"] * 8 + ["val"] * 4, normalisation="robust")
    assert train_main(_finetune(data, tmp_path / "ft")) == 0
    assert read_preprocess(tmp_path / "ft" / "best.safetensors")["normalisation"] == "robust"
    assert load_pretrained(tmp_path / "ft" / "best.safetensors", n_classes=2).preprocess["normalisation"] == "robust"


def test_corrupt_npz_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert train_main(_finetune(bad, tmp_path / "ft")) == 1
    one_line_error(capsys, str(bad), "not a readable .npz file")


def test_labels_outside_the_classes_are_one_line(tmp_path, capsys):
    rng = np.random.default_rng(3)
    data = save_npz_windows(tmp_path / "three.npz", rng.standard_normal((8, 4, 80)), [0, 1, 2, 0, 1, 2, 0, 1], NAMES,
                            ["train"] * 8)
    assert train_main(_finetune(data, tmp_path / "ft")) == 2
    one_line_error(capsys, "the train split has label(s) 2 outside 0..1", "--set n_classes=N")
