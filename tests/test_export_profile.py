"""`lumamba-export --profile` (lumamba.export.project.kernel_profile): instructions per window per
graph and kernel, measured on the emulated board in a scratch copy of the project.

The end-to-end checks share exports run anyway: tests/test_export_firmware.py (the float32 micro
project, exported with --profile: profile.json, report.json, the sum against the unprofiled count)
and tests/test_int8_export.py (the int8 project: the micro-kernel MACs per graph, exactly). Here:
bad use, and the driver rewrite.
"""
from __future__ import annotations

import pytest

from lumamba.export import cli
from lumamba.export.project.kernel_profile import instrument_driver, kernel_kind


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
