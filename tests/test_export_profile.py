"""`lumamba-export --profile` (lumamba.export.project.kernel_profile): instructions per window per
graph and kernel, measured on the emulated board in a scratch copy of the project.

One float32 export of a random micro model (T=640, Cortex-M4F, about 45 s) with --profile; the
profile's per-kernel sum must match the unprofiled verification count (report.json) within the
counter reads' overhead, name every graph driver of the project and leave the project unchanged.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from lumamba.export import cli
from lumamba.export.project.kernel_profile import (ProfileError, instrument_driver, kernel_kind,
                                                   profile_project)
from toolchain import require_toolchain


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    require_toolchain("cortex-m4f")
    out = tmp_path_factory.mktemp("profile") / "micro-m4"
    run = subprocess.run([sys.executable, "-m", "lumamba.export.cli", "--target", "cortex-m", "--config", "micro",
                          "--n-samples", "640", "--profile", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    print(run.stdout, run.stderr)
    return out, run


def test_profile_sums_to_the_unprofiled_count(profiled):
    out, run = profiled
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


def test_profile_on_the_host_is_refused(profiled):
    out, _ = profiled
    with pytest.raises(ProfileError, match="needs an emulated board"):
        profile_project(out, "host")


@pytest.mark.parametrize("target", ["onnx", "host"])
def test_profile_needs_an_emulated_board(target, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["--target", target, "--profile", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    assert err[-1].endswith(f"--profile needs an emulated board with an instruction counter (cortex-m, "
                            f"cortex-m55, riscv), not --target {target}")


def test_instrumented_driver_times_every_call_once():
    driver = ("int lumamba_g_run(uint8_t *arena)\n{\n"
              "  lumamba_g_k0_qlinear_dequantize(arena, arena + 16);\n"
              "  lumamba_g_k1_softplus1(arena);\n  return 0;\n}\n")
    text, names = instrument_driver(driver)
    assert names == ["lumamba_g_k0_qlinear_dequantize", "lumamba_g_k1_softplus1"]
    assert text.count("lumamba_counter_read()") == 4 and text.count("lumamba_g_k0_qlinear_dequantize(arena") == 1
    assert kernel_kind("lumamba_block0_fwd_k6_qlinear1_dequantize1") == "qlinear_dequantize"
