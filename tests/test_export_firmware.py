"""`lumamba-export` end to end: LuMamba -> ONNX -> TVM C -> firmware project -> ELF -> QEMU,
checked against onnxruntime; the generated C on the host; the CLI's errors and fit check.

Tolerances (absolute, on logits of magnitude ~0.1-1):
- host C vs onnxruntime, micro: 1e-5. Both float32; the C and onnxruntime differ in operation
  order and libm (a few ulp per op), which over the ~100 ops and 16-token recurrences of micro
  stays near 1e-7 (measured 6e-8); a wrong weight or state moves logits by 1e-2 or more.
- firmware (QEMU) vs onnxruntime: 1e-4, the CLI's --verify bound (lumamba.export.verify explains
  it); measured ~4e-8 for micro.

The default tests share one CLI run (micro, tcp22, T=640, Cortex-M4F, --verify --profile); the other
boards rebuild that project. Full exports of their own (determinism, a too-small chip through
the CLI, tiny) are marked slow.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from lumamba import CONFIGS, LuMamba, save_checkpoint
from lumamba.export import cli, load
from lumamba.export.project.boards import load_board
from lumamba.export.project.build import elf_path
from lumamba.export.project.firmware_project import ONNX_DIR, compile_model, model_sources
from lumamba.export.project.host_c_runner import load_host_c
from lumamba.export.project.kernel_profile import ProfileError, profile_project
from lumamba.export.onnx.manifest import Manifest
from lumamba.export.project.memory_report import memory_report
from lumamba.export.project.test_vectors import N_VERIFIED, N_WINDOWS, fixed_windows
from lumamba.export.verify import TOLERANCE, verify_on_board
from toolchain import require_toolchain

HOST_TOL = 1e-5
BOARDS = ("cortex-m4f", "cortex-m55", "riscv32")
MICRO_ARGS = ["--config", "micro", "--montage", "tcp22", "--n-samples", "640"]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    status = cli.main(args)
    out, err = capsys.readouterr()
    print(out, err)   # shown by pytest -s and on failure
    return status, out, err


@pytest.fixture(scope="module")
def micro_project(tmp_path_factory):
    """One CLI run: micro for the Cortex-M4F, verified in QEMU (it fits the default chip and the
    STM32F407: test_named_chip_profile), then profiled (--profile)."""
    require_toolchain("cortex-m4f")
    out = tmp_path_factory.mktemp("cli") / "micro-m4"
    capture = subprocess.run(
        [sys.executable, "-m", "lumamba.export.cli", "--target", "cortex-m", *MICRO_ARGS, "--out", str(out),
         "--verify", "--profile"], capture_output=True, text=True, timeout=600)
    return out, capture


def test_cli_cortex_m_verify_end_to_end(micro_project):
    out, run = micro_project
    assert run.returncode == 0, run.stdout + run.stderr
    log = run.stdout
    print(log)
    # progress, the memory report and the verification all show
    assert re.search(r"\[1/7\] exporting recurrent-mode ONNX graphs", log)
    assert "Memory report, board cortex-m4f" in log
    m = re.search(r"max abs error of the logits vs onnxruntime (\S+) \(tolerance", log)
    assert m and float(m.group(1)) <= TOLERANCE
    assert int(re.search(r"([\d,]+) instructions per window", log).group(1).replace(",", "")) > 1_000_000
    assert "randomly initialised 'micro' model" in run.stderr
    # the project: sources, ELF, memory.json, the export it came from, a Makefile for make alone
    assert elf_path(out, "cortex-m4f").is_file()
    report = json.loads((out / "memory.json").read_text())
    assert report["board"] == "cortex-m4f" and report["flash"]["weights"] > 0
    assert (out / "Makefile").is_file() and (out / "firmware" / "project.mk").is_file()
    # report.json: the run's numbers for a user's CI, consistent with the log and memory.json
    facts = json.loads((out / "report.json").read_text())
    insns = int(re.search(r"([\d,]+) instructions per window", log).group(1).replace(",", ""))
    assert facts["board"] == "cortex-m4f" and facts["precision"] == "float32"
    assert facts["instructions_per_window"] == insns
    # micro, 22 x 640, without the folded position embedding, with the convolutions the streamed front
    # end's statistics passes compute again (22 x 16 x 4 positions x 3 x (8 x 19 + 3 x 8 x 8))
    assert facts["macs_per_window"] == 8_392_768 + 1_453_056
    assert facts["instructions_per_mac"] == round(insns / facts["macs_per_window"], 3)
    assert facts["flash_bytes"] == report["flash"]["deployable"] and facts["ram_bytes"] == report["ram"]["total"]
    assert 0 < facts["ram_lower_bound_bytes"] <= facts["arena_bytes"]
    # the int16 window, counted: in the arena's input block (lumamba_counts_buffer), not on top
    assert facts["input_window_bytes"] == 22 * 640 * 2 and report["ram"]["input_window_in_arena"]
    assert "input window (int16 counts)" in log
    assert facts["parity"]["reference"] == "onnxruntime" and facts["parity"]["max_abs_error"] <= TOLERANCE
    assert "drift" not in facts
    manifest = Manifest.load(out / ONNX_DIR)
    assert manifest.n_channels == 22 and manifest.n_samples == 640
    assert not list(out.parent.glob(".micro-m4.*"))          # no temporary directory left


def test_cli_profile_sums_to_the_unprofiled_count(micro_project):
    out, run = micro_project
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"\[7/7\] profiling the kernels on cortex-m4f", run.stdout)
    assert re.search(r"profile: +largest graph frontend \([\d.]+ % of kernel instructions\); see profile.json",
                     run.stdout)
    profile = json.loads((out / "profile.json").read_text())
    report = json.loads((out / "report.json").read_text())
    unprofiled = report["instructions_per_window"]
    kernels = sum(k["instructions"] for k in profile["kernels"])
    assert kernels == pytest.approx(profile["kernel_instructions_per_window"], abs=len(profile["kernels"]))
    # the kernels are nearly all of lumamba_infer(); the counter reads add well under 2 %
    assert 0.97 * unprofiled < kernels < 1.02 * unprofiled
    assert unprofiled < profile["instructions_per_window"] < 1.02 * unprofiled
    drivers = {p.name[len("lumamba_"):-len("_driver.c")] for p in out.glob("lumamba_*_driver.c")}
    assert set(profile["graphs"]) == drivers and "frontend" in drivers
    assert sum(g["instructions"] for g in profile["graphs"].values()) == pytest.approx(kernels, abs=len(drivers))
    assert sum(g["share"] for g in profile["graphs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert report["profile"]["file"] == "profile.json"
    assert report["profile"]["graphs"] == {g: v["instructions"] for g, v in profile["graphs"].items()}
    assert profile["gemm"]["macs"] == 0   # float32: no int8 micro-kernel calls
    # the project itself is not instrumented
    assert "lumamba_counter_read" not in "".join(p.read_text() for p in out.glob("lumamba_*_driver.c"))
    assert not list(out.glob("lumamba_profile_gemm.*"))


def test_profile_on_the_host_is_refused(micro_project):
    out, _ = micro_project
    with pytest.raises(ProfileError, match="needs an emulated board"):
        profile_project(out, "host")


def test_shared_encoder_kernels_and_weights_in_flash(micro_project):
    """The encoder graphs of one kind share one kernel set, each with its own weights file: every
    direction's step (the default step form) or, in the window form, the scan and post graphs (the
    pre graphs of the two directions differ: conv side)."""
    out, _ = micro_project
    manifest = Manifest.load(out / ONNX_DIR)
    code = re.sub(r"/\*.*?\*/", "", (out / "model.c").read_text(), flags=re.S)
    kinds = ("encoder_scan", "encoder_post") if manifest.mamba_form == "window" else ("encoder_step",)
    for kind in kinds:
        members = [g.name for g in manifest.graphs if g.kind == kind]
        assert len(members) == 2 * CONFIGS["micro"].n_blocks
        assert len(list(out.glob(f"lumamba_{kind}*_kernels.c"))) == 1
        assert not [p for s in members for p in out.glob(f"lumamba_{s}*")]
        for s in members:
            text = (out / f"weights_{s}.c").read_text()
            assert re.search(rf"^const float lumamba_{s}_\w+\[\d+\] = {{", text, re.M)
        assert code.count(f"lumamba_{kind}_run(") == len(members)
    assert not re.search(r"\b(malloc|calloc|free)\b", code)
    # the memory report counts every weights_*.c as weights: more than the raw parameter bytes
    report = json.loads((out / "memory.json").read_text())
    assert report["flash"]["weights"] >= 4 * sum(g.n_params for g in manifest.graphs) * 0.99


def test_host_c_matches_onnxruntime(micro_project):
    """load_host_c on the ONNX export directory: generates the C there, builds it for the host."""
    out, _ = micro_project
    manifest = Manifest.load(out / ONNX_DIR)
    x = np.concatenate([fixed_windows(22, 640, 2), 3.0 * np.random.default_rng(7).standard_normal((2, 22, 640))])
    got = load_host_c(out / ONNX_DIR)(x.astype(np.float32))
    want = load(out / ONNX_DIR)(x)
    err = float(np.abs(got - want).max())
    print(f"micro host C vs onnxruntime: max abs error {err:.2e}, |logits| <= {np.abs(want).max():.2f}")
    assert got.shape == (4, manifest.n_classes)
    assert err <= HOST_TOL


def test_extreme_finite_window_is_not_ok(micro_project):
    """A finite sample of 1e30 overflows inside the model (its square in the GroupNorm variance):
    onnxruntime gives NaN logits, and the C driver must return NONFINITE_OUTPUT, never OK with
    non-finite logits."""
    out, _ = micro_project
    model = load_host_c(out / ONNX_DIR)
    x = fixed_windows(22, 640, 1)[0].copy()
    x[5, 100] = 1e30
    logits = np.zeros(2, np.float32)
    status = model.infer(x, logits)
    assert model.status_name(status) == "NONFINITE_OUTPUT"
    assert not np.all(np.isfinite(load(out / ONNX_DIR)(x[None])))    # the reference overflows too
    with pytest.raises(ValueError, match="NONFINITE_OUTPUT"):
        model(x[None])


@pytest.mark.parametrize("board", ["cortex-m55", "riscv32"])
def test_micro_on_other_boards(micro_project, board):
    """The same project rebuilt for another board (make BOARD=...) agrees with onnxruntime."""
    require_toolchain(board)
    out, _ = micro_project
    result = verify_on_board(out, board, timeout_s=300)
    print(result.summary())
    assert result.max_abs_error <= TOLERANCE and len(result.insns) == N_VERIFIED and min(result.insns) > 1_000_000


def test_make_rebuilds_without_python(micro_project, tmp_path):
    out, _ = micro_project
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("build", ONNX_DIR))
    run = subprocess.run(["make", "-C", str(copy), "BOARD=riscv32", "-j2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert elf_path(copy, "riscv32").is_file()


COMPILERS = {board: load_board(board) for board in (*BOARDS, "host")}


@pytest.mark.parametrize("board", sorted(COMPILERS))
def test_sources_compile_warning_free(micro_project, board, tmp_path):
    """Every generated source with -std=c99 -Wall -Wextra -Werror, for each compiler."""
    b = COMPILERS[board]
    if shutil.which(b.compiler) is None:
        pytest.skip(f"{b.compiler} not installed")
    out, _ = micro_project
    sources = sorted(str(p) for p in out.glob("*.c"))
    cmd = [b.compiler, *b.cflags, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-c",
           "-I", str(out), "-I", str(out / "firmware" / "runtime"), *sources]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert len(list(tmp_path.glob("*.o"))) == len(sources)


def test_generation_is_deterministic(micro_project):
    """The same export compiled again gives byte-identical sources."""
    out, _ = micro_project
    again = model_sources(compile_model(Manifest.load(out / ONNX_DIR), out / ONNX_DIR))
    on_disk = {p.name: p.read_text() for p in [*out.glob("*.c"), *out.glob("*.h")] if p.name != "test_vectors.h"}
    assert again == on_disk


def test_too_small_chip_fails_by_how_much(micro_project, tmp_path):
    out, _ = micro_project
    profile = tmp_path / "small_chip.json"
    profile.write_text(json.dumps({"target": {"name": "SmallChip-64K", "flash_bytes": 65536, "ram_bytes": 16384}}))
    board = cli.board_with_limits("cortex-m4f", str(profile))
    report = memory_report(elf_path(out, "cortex-m4f"), board, out)
    over_flash = report["flash"]["deployable"] - 65536
    over_ram = report["ram"]["total"] - 16384
    with pytest.raises(cli.ExportError) as e:
        cli.check_fit(report)
    message = str(e.value)
    assert "does not fit SmallChip-64K" in message
    assert f"over by {over_flash:,} bytes" in message and f"over by {over_ram:,} bytes" in message
    cli.check_fit(report, no_fit_check=True)   # a warning only


def test_named_chip_profile(micro_project):
    """`--board-profile stm32f407vg` (firmware/chips): the STM32F407 (128 KiB SRAM for data), which micro fits with
    the streamed front end (its whole-window front end needed more RAM than the chip has), as does
    the default Cortex-M4F chip (Apollo4 Plus); a chip that is too small: test_too_small_chip_fails_by_how_much."""
    out, _ = micro_project
    board = cli.board_with_limits("cortex-m4f", "stm32f407vg")
    # RAM: the linker's 128 KiB data region, not the chip's 192 KiB: the 64 KiB CCM is a region of
    # its own that the arena cannot span (it holds the streaming demo's ring buffer)
    assert (board.target.flash_bytes, board.target.ram_bytes) == (1 << 20, 128 * 1024)
    assert "STM32F407" in board.target.name and board.name == "cortex-m4f"
    assert "RAM limit 131,072 bytes: the linker's data region, of 196,608 on the chip" in board.target.notes
    elf = elf_path(out, "cortex-m4f")
    report = memory_report(elf, board, out)
    assert report["ram"]["limit"] == 131_072 and 0 < report["ram"]["total"] <= 131_072
    cli.check_fit(report)
    cli.check_fit(memory_report(elf, "cortex-m4f", out))
    with pytest.raises(cli.ExportError, match=r"neither a board .*, a chip \(alif-e7-m55, gap9, nrf52840, stm32f407vg\) nor an existing file"):
        cli.board_with_limits("cortex-m4f", "stm32f999")


def test_bad_options_name_the_option(capsys, tmp_path):
    status, _, err = run_cli(["--target", "cortex-m", "--montage", "no_such_montage", "--out", str(tmp_path / "o")],
                             capsys)
    assert status == 1 and "--montage" in err and "no_such_montage" in err
    missing = tmp_path / "missing.safetensors"
    status, _, err = run_cli(["--target", "onnx", "--checkpoint", str(missing), "--out", str(tmp_path / "o")], capsys)
    assert status == 1 and "--checkpoint" in err and str(missing) in err
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    status, _, err = run_cli(["--target", "onnx", "--checkpoint", str(corrupt), "--out", str(tmp_path / "o")], capsys)
    assert status == 1 and str(corrupt) in err and "safetensors" in err
    status, _, err = run_cli(["--target", "onnx", "--config", "huge", "--out", str(tmp_path / "o")], capsys)
    assert status == 1 and "--config 'huge'" in err and "micro" in err
    status, _, err = run_cli(["--target", "onnx", *MICRO_ARGS[:2], "--n-samples", "100", "--out", str(tmp_path / "o")],
                             capsys)
    assert status == 1 and "--n-samples 100" in err and "40" in err
    status, _, err = run_cli(["--target", "cortex-m", "--board-profile", str(tmp_path / "nope.json"),
                              *MICRO_ARGS, "--out", str(tmp_path / "o")], capsys)
    assert status == 1 and "--board-profile" in err and "nope.json" in err
    assert not (tmp_path / "o").exists()


def test_checkpoint_and_demo_model_selection(tmp_path, monkeypatch, capsys):
    torch.manual_seed(3)
    trained = LuMamba(CONFIGS["micro"], n_classes=4)
    path = save_checkpoint(trained, tmp_path / "fine_tuned.safetensors")
    model, description, checkpoint = cli.load_model(str(path), None)
    assert checkpoint == path and model.n_classes == 4 and str(path) in description
    for k, v in trained.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(cli.ExportError, match="--config applies only without --checkpoint"):
        cli.load_model(str(path), "micro")
    pretrain = save_checkpoint(LuMamba(CONFIGS["micro"], n_classes=0), tmp_path / "pretrain.safetensors")
    with pytest.raises(cli.ExportError, match=r"pretrain.safetensors: no classifier weights"):
        cli.load_model(str(pretrain), None)
    # no checkpoint: the bundled demo model when it exists ...
    monkeypatch.setattr(cli, "demo_model_path", lambda: path)
    model, description, checkpoint = cli.load_model(None, None)
    assert checkpoint == path and model.n_classes == 4
    # ... else a seeded random micro model, with a warning
    monkeypatch.setattr(cli, "demo_model_path", lambda: tmp_path / "absent.safetensors")
    model, description, checkpoint = cli.load_model(None, None)
    assert checkpoint is None and model.config == CONFIGS["micro"]
    assert "absent.safetensors" in capsys.readouterr().err
    again, _, _ = cli.load_model(None, None)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k      # seeded: the same model every time


# --- slow: exports of their own ------------------------------------------------------------------


@pytest.mark.slow
def test_export_twice_gives_identical_sources(micro_project, tmp_path, capsys):
    """A second, independent CLI run (ONNX export included) writes byte-identical C sources."""
    out, _ = micro_project
    second = tmp_path / "second"
    status, _, _ = run_cli(["--target", "cortex-m", *MICRO_ARGS, "--out", str(second), "--no-fit-check"], capsys)
    assert status == 0
    names = sorted(p.name for p in [*out.glob("*.c"), *out.glob("*.h"), out / "Makefile"])
    assert names == sorted(p.name for p in [*second.glob("*.c"), *second.glob("*.h"), second / "Makefile"])
    for name in names:
        assert (out / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.slow
def test_cli_too_small_chip_keeps_the_previous_project(micro_project, tmp_path, capsys):
    out, _ = micro_project
    target = tmp_path / "project"
    shutil.copytree(out, target)
    before = {p: p.read_bytes() for p in target.glob("*.c")}
    profile = tmp_path / "small_chip.json"
    profile.write_text(json.dumps({"target": {"name": "SmallChip-64K", "flash_bytes": 65536, "ram_bytes": 16384}}))
    status, stdout, err = run_cli(["--target", "cortex-m", *MICRO_ARGS, "--out", str(target),
                                   "--board-profile", str(profile)], capsys)
    assert status == 1
    assert re.search(r"does not fit SmallChip-64K .*over by [\d,]+ bytes", err)
    assert "DOES NOT FIT" in stdout
    assert {p: p.read_bytes() for p in target.glob("*.c")} == before     # the good project stays
    assert (tmp_path / "project.rejected" / "memory.json").is_file()
    assert not list(tmp_path.glob(".project.*"))


@pytest.mark.slow
def test_onnx_target_verifies_against_pytorch(tmp_path, capsys):
    status, stdout, _ = run_cli(["--target", "onnx", *MICRO_ARGS, "--out", str(tmp_path / "onnx"), "--verify"], capsys)
    assert status == 0
    assert (tmp_path / "onnx" / "manifest.json").is_file()
    m = re.search(rf"onnxruntime vs PyTorch: {N_WINDOWS} windows, max abs error of the logits vs PyTorch (\S+)", stdout)
    assert m and float(m.group(1)) <= TOLERANCE


@pytest.mark.slow
def test_tiny_float_does_not_fit_the_emulated_cortex_m4f(tmp_path, capsys):
    """LuMamba-Tiny's float weights (~18 MB) exceed the 8 MiB of PSRAM that stand in for the internal
    flash on mps2-an386: the CLI says so, by how much, and names the way out."""
    require_toolchain("cortex-m4f")
    status, _, err = run_cli(["--target", "cortex-m", "--config", "tiny", "--out", str(tmp_path / "tiny"),
                              "--no-fit-check"], capsys)
    assert status == 1
    assert re.search(r"does not fit the flash of the emulated cortex-m4f machine \(8,388,608 bytes.*\): "
                     r"over by [\d,]+ bytes", err)
    assert not (tmp_path / "tiny").exists()


@pytest.mark.slow
def test_tiny_on_qemu_cortex_m55(tmp_path, capsys):
    """LuMamba-Tiny (float, T=1280) verified on the emulated Cortex-M55 (256 MiB emulated flash)."""
    require_toolchain("cortex-m55")
    status, stdout, _ = run_cli(["--target", "cortex-m55", "--config", "tiny", "--out", str(tmp_path / "tiny"),
                                 "--verify", "--no-fit-check"], capsys)
    assert status == 0
    m = re.search(r"max abs error of the logits vs onnxruntime (\S+) \(tolerance", stdout)
    assert m and float(m.group(1)) <= TOLERANCE
