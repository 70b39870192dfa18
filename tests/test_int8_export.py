"""`lumamba-export --int8` end to end: calibration windows -> quantised graphs -> int8 C -> firmware
project -> ELF -> QEMU (or native), compared bit for bit with the int8 golden model.

No tolerance anywhere: the generated C performs the golden model's integer and float32 operations
in its order (lumamba.quant.golden), so every logit's float32 bit pattern must be equal.

The default tests share one CLI run (random micro model, tcp22, T=640, Cortex-M4F, --int8 --verify,
calibration windows from a small .npz); host, M55 and RISC-V builds reuse that project. The CLI's
own host run and the default synthetic-corpus calibration are exports of their own, marked slow.
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from test_quant_golden import eeg_like

from lumamba.export import cli
from lumamba.export.build import ToolchainError, check_toolchain
from lumamba.export.int8_project import FMATH_UNIT, INT8_DIR
from lumamba.export.verify import VerificationError, compare_bit_exact, verify_int8_on_board
from lumamba.montages import MONTAGES
from lumamba.train.data import save_npz_windows

N_SAMPLES = 640
CHANNELS = list(MONTAGES["tcp22"])
MICRO_ARGS = ["--config", "micro", "--montage", "tcp22", "--n-samples", str(N_SAMPLES)]
N_CALIB = 4


def require_toolchain(board: str) -> None:
    try:
        check_toolchain(board)
    except ToolchainError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def calib_npz(tmp_path_factory):
    """Calibration windows as the generic path stores them: 6 train windows of 1280 samples (cut
    to the export's 640), channels in reverse order (the CLI must reorder them), 2 val windows."""
    x = eeg_like(8, len(CHANNELS), 2 * N_SAMPLES, seed=3)[:, ::-1]
    split = ["train"] * 6 + ["val"] * 2
    return save_npz_windows(tmp_path_factory.mktemp("calib") / "calib.npz", x, np.zeros(8), CHANNELS[::-1], split)


def export(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "lumamba.export.cli", *args], capture_output=True, text=True,
                         timeout=timeout)
    print(run.stdout, run.stderr)
    return run


@pytest.fixture(scope="module")
def m4_project(tmp_path_factory, calib_npz):
    """micro, int8, Cortex-M4F, verified in QEMU. --no-fit-check: micro's frontend buffers need
    more RAM than the STM32F407 has, as in the float path."""
    require_toolchain("cortex-m4f")
    out = tmp_path_factory.mktemp("int8") / "micro-m4"
    run = export(["--target", "cortex-m", *MICRO_ARGS, "--int8", "--calib-data", str(calib_npz),
                  "--calib-windows", str(N_CALIB), "--verify", "--no-fit-check", "--out", str(out)])
    return out, run


def test_cli_cortex_m_int8_bit_exact_in_qemu(m4_project):
    out, run = m4_project
    assert run.returncode == 0, run.stdout + run.stderr
    log = run.stdout
    assert re.search(r"\[1/8\] exporting recurrent-mode ONNX graphs", log)
    assert f"{N_CALIB} windows from --calib-data" in log
    assert re.search(r"\[4/8\] compiling the integer graphs", log)
    assert "cortex-m4f (QEMU mps2-an386): 2 windows, logits bit-identical to the int8 golden model" in log
    assert int(re.search(r"([\d,]+) instructions per window", log).group(1).replace(",", "")) > 1_000_000
    # the project holds the quantised model it was verified against, and int8 weights in flash
    assert (out / INT8_DIR / "quant.json").is_file() and (out / FMATH_UNIT).is_file()
    index = (out / INT8_DIR / "quant.json").read_text()
    assert f'"n_windows": {N_CALIB}' in index
    weights = "".join(p.read_text() for p in out.glob("weights_lumamba_*.c"))
    assert "const int8_t" in weights


def test_same_sources_bit_exact_on_host(m4_project):
    out, run = m4_project
    assert run.returncode == 0
    result = verify_int8_on_board(out, "host")
    assert result.bit_exact and result.logits.shape == (2, 2)


@pytest.mark.slow
@pytest.mark.parametrize("board", ["cortex-m55", "riscv32"])
def test_same_sources_bit_exact_on_other_boards(m4_project, board):
    require_toolchain(board)
    out, run = m4_project
    assert run.returncode == 0
    result = verify_int8_on_board(out, board)
    assert result.bit_exact and min(result.insns) > 1_000_000


def test_a_one_ulp_difference_is_named(m4_project):
    """The comparison is on bit patterns: the next float32 up is a failure naming window and logit."""
    out, run = m4_project
    assert run.returncode == 0
    result = verify_int8_on_board(out, "host")
    moved = result.logits.copy()
    moved[1, 0] = np.nextafter(moved[1, 0], np.float32(np.inf))
    compare_bit_exact(result.logits, result.reference, "host")
    with pytest.raises(VerificationError, match=r"1 logit\(s\) differ, first window 1, logit 0"):
        compare_bit_exact(moved, result.reference, "host")


def test_calibration_windows_from_npz(calib_npz, tmp_path):
    x, what = cli.calibration_windows(str(calib_npz), CHANNELS, N_SAMPLES, 3, tmp_path)
    full = eeg_like(8, len(CHANNELS), 2 * N_SAMPLES, seed=3)
    assert x.shape == (3, len(CHANNELS), N_SAMPLES) and x.dtype == np.float32
    # every window is a train window's first N_SAMPLES samples, back in the export's channel order
    for window in x:
        assert any(np.array_equal(window, full[i, :, :N_SAMPLES]) for i in range(6))
    assert "--calib-data" in what


def test_calibration_windows_errors(calib_npz, tmp_path, capsys):
    with pytest.raises(cli.ExportError, match="--calib-data .*missing.npz: not found"):
        cli.calibration_windows(str(tmp_path / "missing.npz"), CHANNELS, N_SAMPLES, 4, tmp_path)
    with pytest.raises(cli.ExportError, match="windows have 1280 samples, the export needs 2560"):
        cli.calibration_windows(str(calib_npz), CHANNELS, 2 * 2 * N_SAMPLES, 4, tmp_path)
    with pytest.raises(cli.ExportError, match=r"channels \['XX-YY'\] not in"):
        cli.calibration_windows(str(calib_npz), ["XX-YY"], N_SAMPLES, 4, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(cli.ExportError, match="empty holds neither edf/ nor train/ and eval/.*expected a window cache"):
        cli.calibration_windows(str(tmp_path / "empty"), CHANNELS, N_SAMPLES, 4, tmp_path / "scratch")
    x, _ = cli.calibration_windows(str(calib_npz), CHANNELS, N_SAMPLES, 32, tmp_path)
    assert len(x) == 6 and "only 6 train windows, fewer than --calib-windows 32" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--target", "onnx", "--int8"], "--int8 needs a firmware target"),
    (["--target", "host", "--calib-data", "x.npz"], "apply only with --int8"),
    (["--target", "host", "--calib-windows", "4"], "apply only with --int8"),
    (["--target", "host", "--int8", "--calib-windows", "0"], "--calib-windows 0: must be >= 1"),
])
def test_bad_int8_options_name_the_option(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


# --- slow: exports of their own ------------------------------------------------------------------


@pytest.mark.slow
def test_cli_host_int8_verify(tmp_path, calib_npz):
    run = export(["--target", "host", *MICRO_ARGS, "--int8", "--calib-data", str(calib_npz),
                  "--calib-windows", str(N_CALIB), "--verify", "--out", str(tmp_path / "host")])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "host (native): 2 windows, logits bit-identical to the int8 golden model" in run.stdout


@pytest.mark.slow
def test_default_calibration_is_the_synthetic_corpus(tmp_path, capsys):
    x, what = cli.calibration_windows(None, CHANNELS, N_SAMPLES, 32, tmp_path)
    assert x.shape == (32, len(CHANNELS), N_SAMPLES) and what == "the default synthetic corpus"
    assert np.isfinite(x).all() and 0.5 < float(x.std()) < 2.0     # z-scored EEG
    assert "generating the default synthetic corpus" in capsys.readouterr().out
