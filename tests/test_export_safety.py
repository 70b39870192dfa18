"""lumamba-export never loses what the user had and checks its inputs before working
(issue 10): output directory rules, killed exports' leftovers, SIGTERM cleanup, early option errors."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from lumamba.export.cli import main
from lumamba.export.output_dir import (OutputDirError, check_output_dir, install, new_partial,
                                       remove_stale_partials, termination_as_interrupt)


def run_cli(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as e:      # argparse errors exit 2
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def test_output_dir_rules(tmp_path, monkeypatch):
    check_output_dir(tmp_path / "new")                       # new: fine
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")                     # empty: fine
    earlier = tmp_path / "earlier"
    (earlier / "onnx").mkdir(parents=True)
    (earlier / "onnx" / "manifest.json").write_text("{}")
    check_output_dir(earlier)                                # an earlier export: replaced at the end
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(OutputDirError, match="exists and is not a directory"):
        check_output_dir(tmp_path / "file")
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    with pytest.raises(OutputDirError, match="holds other files and is not a lumamba export"):
        check_output_dir(other)
    monkeypatch.chdir(other)
    for bad in (".", "/", str(tmp_path)):
        with pytest.raises(OutputDirError, match="refusing to export into"):
            check_output_dir(__import__("pathlib").Path(bad))


def test_cli_refuses_before_working(tmp_path, capsys):
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me")
    status, _, err = run_cli(["--target", "onnx", "--config", "micro", "--out", str(victim)], capsys)
    assert status == 2 and "exists and is not a directory" in err and victim.read_text() == "keep me"
    status, _, err = run_cli(["--target", "cortex-m", "--config", "micro", "--timeout", "-1",
                              "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "--timeout -1: must be a positive" in err
    bad_config = tmp_path / "q.json"
    bad_config.write_text(json.dumps({"float": None}))
    status, out, err = run_cli(["--target", "host", "--config", "micro", "--int8", "--quant-config", str(bad_config),
                                "--out", str(tmp_path / "o")], capsys)
    assert status == 1 and "'float' must be a list" in err and "exporting" not in out   # before any step
    status, out, err = run_cli(["--target", "host", "--config", "micro", "--int8", "--calib-data",
                                str(tmp_path / "missing"), "--out", str(tmp_path / "o")], capsys)
    assert status == 1 and "--calib-data" in err and "not found" in err and "exporting" not in out
    from lumamba.montages import load_montage
    from lumamba.train.data import save_npz_windows
    robust = save_npz_windows(tmp_path / "robust.npz", np.zeros((2, 22, 640), np.float32), [0, 1],
                              load_montage("tcp22"), ["train", "train"], normalisation="robust")
    status, out, err = run_cli(["--target", "host", "--config", "micro", "--int8", "--calib-data", str(robust),
                                "--out", str(tmp_path / "o")], capsys)
    assert status == 1 and "holds robust-normalised windows but the model was trained on zscore" in err
    assert "exporting" not in out and err.count("lumamba-export: error") == 1
    profile = tmp_path / "chip.json"
    profile.write_text(json.dumps({"target": {"name": "x", "flash_bytes": -1, "ram_bytes": 1024}}))
    status, out, err = run_cli(["--target", "cortex-m", "--config", "micro", "--board-profile", str(profile),
                                "--out", str(tmp_path / "o")], capsys)
    assert status == 1 and "must be positive" in err and "exporting" not in out
    assert not list(tmp_path.glob(".o.*"))                   # no working directory was even created


def test_killed_exports_leftovers_are_removed(tmp_path):
    out = tmp_path / "proj"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".proj.{dead.pid}.abc123.partial"
    stale.mkdir()
    live = tmp_path / f".proj.{os.getpid()}.def456.partial"   # this process: still running
    live.mkdir()
    unrelated = tmp_path / f".other.{dead.pid}.x.partial"
    unrelated.mkdir()
    assert remove_stale_partials(out) == [stale]
    assert not stale.exists() and live.exists() and unrelated.exists()


def test_install_replaces_only_at_the_end(tmp_path):
    out = tmp_path / "proj"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    work = new_partial(out)
    assert work.parent == tmp_path and work.name.startswith(f".proj.{os.getpid()}.")
    (work / "manifest.json").write_text("new")
    install(work, out)
    assert (out / "manifest.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_sigterm_becomes_an_interrupt():
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with termination_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.1) if hasattr(signal, "sigtimedwait") else None
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_during_an_export_leaves_nothing(tmp_path):
    """A real export interrupted by SIGTERM while it works: exit without a partial directory."""
    out = tmp_path / "proj"
    proc = subprocess.Popen([sys.executable, "-m", "lumamba.export.cli", "--target", "onnx", "--config", "micro",
                             "--n-samples", "640", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:            # wait until it is inside the export step
        if "exporting recurrent-mode ONNX graphs" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == f"lumamba-export: interrupted (signal SIGTERM); {out} was not changed"
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def micro_onnx(tmp_path_factory):
    import torch

    from lumamba import CONFIGS, LuMamba
    from lumamba.export.onnx.exporter import export_onnx
    from lumamba.montages import load_montage

    from lumamba.normalise import spec

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("micro_onnx")
    model = LuMamba(CONFIGS["micro"], n_classes=2).eval()
    model.preprocess = spec("robust")      # as read from a checkpoint trained on robust-scaled windows
    export_onnx(model, load_montage("tcp22"), 640, out)
    return out


def test_manifest_records_the_models_normalisation(micro_onnx, tmp_path):
    """The checkpoint's preprocess record reaches manifest.json and survives a round trip; a
    manifest without one (written before it was recorded) means z-score."""
    import shutil

    from lumamba.export.onnx.manifest import Manifest
    from lumamba.normalise import spec

    on_disk = json.loads((micro_onnx / "manifest.json").read_text())
    assert on_disk["preprocess"] == spec("robust") == {"normalisation": "robust", "eps": 1e-8, "iqr_to_std": 1.349}
    manifest = Manifest.load(micro_onnx)
    assert manifest.preprocess == spec("robust")
    copy = tmp_path / "copy"
    shutil.copytree(micro_onnx, copy)
    Manifest.save(manifest, copy)
    assert Manifest.load(copy) == manifest
    del on_disk["preprocess"]
    (copy / "manifest.json").write_text(json.dumps(on_disk))
    assert Manifest.load(copy).preprocess == spec("zscore")


@pytest.mark.parametrize("field, value, message", [
    ("channel", "C3 */ int pwned; /*", "channel name"),
    ("graph_file", "../../etc/passwd.onnx", "file"),
    ("n_classes", "2", "n_classes must be an integer"),
    ("n_samples", 0, r"n_samples must be an integer in \[1, "),
    ("buffer_shape", [1, -5], "must hold positive integers"),
    ("buffer_shape", [1 << 20, 1 << 20], "elements, more than"),
    ("preprocess", "zscore", "preprocess must be an object"),
    ("preprocess", {"normalisation": "minmax", "eps": 1e-8}, "preprocess normalisation 'minmax' is not one of"),
    ("preprocess", {"normalisation": "fixed", "eps": 1e-8, "scale_uv": "50); system(\"x\""},
     "differs from the fixed record"),
])
def test_crafted_manifest_never_reaches_c(micro_onnx, tmp_path, field, value, message):
    """Everything read from an export directory is validated before C is generated from it."""
    import shutil

    from lumamba.export import load
    from lumamba.export.onnx.manifest import Manifest

    crafted = tmp_path / "crafted"
    shutil.copytree(micro_onnx, crafted)
    d = json.loads((crafted / "manifest.json").read_text())
    if field == "channel":
        d["channel_names"][3] = value
    elif field == "graph_file":
        d["graphs"][0]["file"] = value
    elif field == "buffer_shape":
        d["buffers"][0]["shape"] = value
    else:
        d[field] = value
    (crafted / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message):
        Manifest.load(crafted)
    with pytest.raises(ValueError, match=message):
        load(crafted, backend="c")
    assert not (crafted / "host_c").exists()      # nothing was generated, nothing compiled
