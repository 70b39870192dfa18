"""Board profiles, toolchain checks, project generation and the failure paths of build and run."""
from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest

from lumamba.export.project.boards import BOARDS, load_board
from lumamba.export.project.build import (BuildError, ToolchainError, build_project, check_toolchain, prepare_project,
                                  render_board_mk)
from lumamba.export.project.test_vectors import write_test_vectors
from lumamba.export.project.qemu import FirmwareRunError, parse_output, run_elf
from toolchain import require_toolchain

MODEL_H = """#define LUMAMBA_N_CHANNELS 1
#define LUMAMBA_N_SAMPLES 2
#define LUMAMBA_N_CLASSES 1
int lumamba_init(void);
int lumamba_infer(const float *window, float *logits);
"""


def tiny_project(root, infer_body: str = "logits[0] = window[0] + window[1];", windows=None):
    """A one-line model; ``infer_body`` is the body of lumamba_infer()."""
    root.mkdir()
    (root / "model.h").write_text(MODEL_H)
    (root / "model.c").write_text(
        '#include "lumamba_runtime.h"\n#include "model.h"\n'
        "int lumamba_init(void) { return LUMAMBA_OK; }\n"
        "int lumamba_infer(const float *window, float *logits)\n{\n"
        f"    (void)window;\n    (void)logits;\n    {infer_body}\n    return LUMAMBA_OK;\n}}\n")
    write_test_vectors(root, np.array([[1.5, 2.0]], np.float32) if windows is None else windows)
    return root


def test_required_boards_exist_and_load():
    assert {"cortex-m4f", "cortex-m55", "riscv32", "host"} <= set(BOARDS)
    for name in BOARDS:
        board = load_board(name)
        assert board.name == name
        if board.emulator is not None:
            e, t = board.emulator, board.target
            # The emulator must hold whatever the real chip can.
            assert e.flash.size >= t.flash_bytes and e.ram.size >= t.ram_bytes
            regions = sorted([(e.flash.origin, e.flash.size), (e.ram.origin, e.ram.size)])
            assert regions[0][0] + regions[0][1] <= regions[1][0], f"{name}: flash and RAM overlap"
            assert "{elf}" in " ".join(e.command) and "{icount_shift}" in " ".join(e.command)
            assert e.command[e.command.index("-M") + 1] == e.machine


def test_every_profile_says_what_an_adc_count_is():
    """Board and chip profiles carry the ADC scale with its source; the board's make fragment
    passes it to the firmware; chip builds use their front end's (chips/<chip>.mk agrees)."""
    from lumamba.export.project.boards import CHIPS, CHIPS_DIR, chip_adc
    for name in BOARDS:
        adc = load_board(name).adc
        assert adc.uv_per_count == 0.1 and "convention" in adc.source     # all boards are emulated or the host
        assert f"-DLUMAMBA_ADC_UV_PER_COUNT=0.1f" in render_board_mk(load_board(name))
    for chip in CHIPS:
        adc = chip_adc(chip)
        assert adc.uv_per_count == pytest.approx(2 * 4.5 / 24 / 2 ** 24 * 4 * 1e6) and "ADS1299" in adc.source
        mk = (CHIPS_DIR / f"{chip}.mk").read_text()
        assert f"CHIP_ADC_UV_PER_COUNT := {adc.c_literal}\n" in mk


@pytest.mark.parametrize("adc, message", [
    (None, 'no "adc" object'),
    ({"uv_per_count": 0, "source": "x"}, "adc.uv_per_count must be a positive number"),
    ({"uv_per_count": "0.1", "source": "x"}, "adc.uv_per_count must be a positive number"),
    ({"uv_per_count": float("inf"), "source": "x"}, "adc.uv_per_count must be a positive number"),
    ({"uv_per_count": 0.1}, "adc.source must say where"),
])
def test_a_bad_adc_scale_is_a_one_line_error_naming_the_profile(tmp_path, monkeypatch, adc, message):
    import json

    from lumamba.export.project import boards
    profile = json.loads((boards.BOARDS_DIR / "cortex-m4f.json").read_text())
    if adc is None:
        del profile["adc"]
    else:
        profile["adc"] = adc
    (tmp_path / "cortex-m4f.json").write_text(json.dumps(profile))
    monkeypatch.setattr(boards, "BOARDS_DIR", tmp_path)
    with pytest.raises(boards.ProfileError, match=re.escape(message)) as err:
        load_board("cortex-m4f")
    assert str(err.value).startswith(f"{tmp_path / 'cortex-m4f.json'}: ") and "\n" not in str(err.value)


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(ValueError, match="cortex-m7") as err:
        load_board("cortex-m7")
    for name in BOARDS:
        assert name in str(err.value)


def test_board_make_fragment_matches_profile():
    board = load_board("cortex-m4f")
    mk = render_board_mk(board)
    assert f"CC := {board.compiler}\n" in mk
    assert "-Wl,--defsym=__flash=0x21000000" in mk and "-Wl,--defsym=__ram_size=0x400000" in mk
    assert f"-DLUMAMBA_QEMU_ICOUNT_SHIFT={board.emulator.icount_shift}" in mk
    assert f"RUN_CMD = {' '.join(board.emulator.render('$(ELF)'))}" in mk
    assert "-icount shift=7" in mk and "loader,file=$(ELF),cpu-num=0" in mk


def test_missing_compiler_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed
    with pytest.raises(ToolchainError) as err:
        check_toolchain("cortex-m4f")
    message = str(err.value)
    assert "arm-none-eabi-gcc (Debian package gcc-arm-none-eabi)" in message
    assert re.search(r"sudo apt-get install .*gcc-arm-none-eabi", message)
    assert "qemu-system-arm" in message and "make" in message
    with pytest.raises(ToolchainError) as err:
        check_toolchain("riscv32", need_emulator=False)
    assert "gcc-riscv64-unknown-elf" in str(err.value) and "qemu-system-misc" not in str(err.value)


def test_missing_picolibc_names_its_package(monkeypatch, tmp_path):
    # A compiler that finds no picolibc echoes the bare file name back, as gcc does.
    fake = tmp_path / "arm-none-eabi-gcc"
    fake.write_text('#!/bin/sh\necho "${1#-print-file-name=}"\n')
    fake.chmod(0o755)
    for tool in ("make", "qemu-system-arm"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if not real:
            pytest.skip(f"{tool} not installed")
        (tmp_path / tool).symlink_to(real)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match=r"picolibc\.specs \(Debian package picolibc-arm-none-eabi\)") as err:
        check_toolchain("cortex-m4f")
    assert "gcc-arm-none-eabi" not in str(err.value)


def test_compiler_error_is_reported_with_its_output(tmp_path):
    require_toolchain("host")
    project = tiny_project(tmp_path / "p", infer_body="logits[0] = undeclared_name;")
    with pytest.raises(BuildError, match=r"(?s)model\.c.*error: .undeclared_name. undeclared"):
        build_project(project, "host")


def test_window_length_mismatch_stops_the_build(tmp_path):
    require_toolchain("host")
    project = tiny_project(tmp_path / "p", windows=np.zeros((2, 3), np.float32))  # model wants 1 x 2
    with pytest.raises(BuildError, match="lumamba_test_window_length_must_equal_channels_times_samples"):
        build_project(project, "host")


def test_test_vectors_hold_exact_float32_values(tmp_path):
    rng = np.random.default_rng(1)
    windows = rng.standard_normal((2, 40)).astype(np.float32)
    windows[0, :4] = [np.float32(1e-45), np.float32(-0.0), np.finfo(np.float32).max, np.float32(3e-39)]
    windows[1, :3] = [np.nan, np.inf, -np.inf]
    header = write_test_vectors(tmp_path, windows).read_text()
    body = header[header.index("= {") + 3:header.rindex("};")]
    literals = re.findall(r"[-\w.+]+", body)
    special = {"NAN": np.nan, "INFINITY": np.inf, "-INFINITY": -np.inf}
    values = np.array([special[s] if s in special else float.fromhex(s[:-1]) for s in literals], np.float64)
    assert values.size == windows.size
    parsed = values.astype(np.float32).reshape(windows.shape)
    finite = np.isfinite(windows)
    np.testing.assert_array_equal(parsed[finite].view(np.uint32), windows[finite].view(np.uint32))
    np.testing.assert_array_equal(np.isnan(parsed), np.isnan(windows))
    np.testing.assert_array_equal(np.isposinf(parsed), np.isposinf(windows))


def test_generated_project_builds_and_runs_with_plain_make(tmp_path):
    """The project's own Makefile works without Python: make, then make run."""
    require_toolchain("host")
    project = tiny_project(tmp_path / "p")
    prepare_project(project, "host")
    makefiles = [project / "Makefile", project / "firmware" / "project.mk", *(project / "firmware" / "boards").glob("*.mk")]
    assert not any("python" in f.read_text().lower() for f in makefiles)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    run = subprocess.run(["make", "-s", "-C", str(project), "run"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "LOGITS 0 40600000" in run.stdout and "DONE 0" in run.stdout  # 1.5 + 2.0 = 3.5f


def test_emulated_project_runs_with_make_run(tmp_path):
    require_toolchain("cortex-m4f")
    project = tiny_project(tmp_path / "p")
    prepare_project(project, "cortex-m4f")
    run = subprocess.run(["make", "-s", "-C", str(project), "run"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "LOGITS 0 40600000" in run.stderr and "DONE 0" in run.stderr  # semihosting -> stderr


def test_hung_firmware_times_out(tmp_path):
    require_toolchain("host")
    project = tiny_project(tmp_path / "p", infer_body="volatile int spin = 1;\n    while (spin) {\n    }")
    with pytest.raises(FirmwareRunError, match="did not finish within 1"):
        run_elf(build_project(project, "host"), "host", timeout_s=1)


def test_faulting_firmware_is_reported(tmp_path):
    require_toolchain("cortex-m4f")
    # A write to unmapped memory: BusFault, picolibc's fault handler prints and exits.
    project = tiny_project(tmp_path / "p", infer_body="*(volatile float *)0xF0000000u = window[0];")
    with pytest.raises(FirmwareRunError, match="no DONE line"):
        run_elf(build_project(project, "cortex-m4f"), "cortex-m4f", timeout_s=30)


def test_parse_output_checks_the_protocol():
    good = "LUMAMBA 1 2\nLOGITS 0 3f800000 c0000000\nINSNS 0 77\nDONE 0\n"
    result = parse_output(good)
    assert result.logits.tolist() == [[1.0, -2.0]] and result.insns == [77] and result.statuses == [0]
    with pytest.raises(FirmwareRunError, match="expected 2"):
        parse_output(good.replace(" c0000000", ""))
    with pytest.raises(FirmwareRunError, match="results for 0 of 1 windows"):
        parse_output("LUMAMBA 1 2\nDONE 0\n")
    with pytest.raises(FirmwareRunError, match=r"lumamba_init\(\) failed with status 2"):
        parse_output("LUMAMBA 1 2\nINIT 2 NOT_INITIALISED\nDONE 2\n")
