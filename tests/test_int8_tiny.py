"""`lumamba-export --int8` on the largest config, `tiny` (random seeded weights, tcp22, T=640):
the generated integer C must give logits bit-identical to the int8 golden model natively and on
an emulated board, as for `micro` (tests/test_int8_export.py), with its ~4.5 MB of int8 weights
in flash. Slow (about 1.5 min): one export of tiny (TVM compile of every integer graph) and QEMU
runs of ~100 M MACs per window.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from test_int8_export import export
from test_quant_golden import eeg_like

from lumamba import CONFIGS, LuMamba
from lumamba.export.project.boards import load_board
from lumamba.export.project.build import build_project
from lumamba.export.project.flash_regions import place_weights
from lumamba.export.project.int8_project import INT8_DIR
from lumamba.export.project.memory_report import check_fits, memory_report
from lumamba.export.project.test_vectors import N_VERIFIED
from lumamba.export.verify import verify_int8_on_board
from lumamba.montages import MONTAGES
from lumamba.quant import load_golden
from lumamba.train.data import save_npz_windows
from toolchain import require_toolchain

N_SAMPLES = 640
CHANNELS = list(MONTAGES["tcp22"])
N_CALIB = 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_host(tmp_path_factory):
    """tiny, int8, exported and verified natively by the CLI; calibration windows from a .npz
    with train windows only, so the drift step is skipped (its cost is the golden model's)."""
    root = tmp_path_factory.mktemp("int8_tiny")
    x = eeg_like(N_CALIB, len(CHANNELS), N_SAMPLES, seed=5)
    calib = save_npz_windows(root / "calib.npz", x, np.arange(N_CALIB) % 2, CHANNELS, ["train"] * N_CALIB)
    out = root / "tiny-host"
    run = export(["--target", "host", "--config", "tiny", "--montage", "tcp22", "--n-samples", str(N_SAMPLES),
                  "--int8", "--calib-data", str(calib), "--calib-windows", str(N_CALIB), "--out", str(out)],
                 timeout=1800)
    return out, run


def test_tiny_int8_bit_exact_on_host(tiny_host):
    out, run = tiny_host
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{N_CALIB} calibration windows from --calib-data" in run.stdout
    assert f"host (native): {N_VERIFIED} windows, logits bit-identical to the int8 golden model" in run.stdout
    assert re.search(r"drift: +not measured: .* no usable test windows", run.stdout)   # none in the .npz
    # flash holds int8 weights: under a third of the float32 model's bytes (~4.5 of 18 MB at T=1280)
    float_bytes = 4 * sum(p.numel() for p in LuMamba(CONFIGS["tiny"], n_classes=2).parameters())
    weights = json.loads((out / "memory.json").read_text())["flash"]["weights"]
    assert 0.2 * float_bytes < weights < float_bytes / 3
    # the golden model the C matched is the quantised copy of this export: same manifest
    golden = load_golden(out / INT8_DIR)
    assert (golden.manifest.n_channels, golden.manifest.n_samples) == (len(CHANNELS), N_SAMPLES)


@pytest.mark.parametrize("board", ["cortex-m55", "riscv32"])
def test_tiny_int8_bit_exact_in_qemu(tiny_host, board):
    """The host project's sources, built for an emulated board: the same bits as the golden model."""
    require_toolchain(board)
    out, run = tiny_host
    assert run.returncode == 0, run.stdout + run.stderr
    result = verify_int8_on_board(out, board)
    assert result.bit_exact and result.logits.shape == (2, 2)
    assert min(result.insns) > 100_000_000    # ~100 M MACs per 640-sample window of tiny


def test_tiny_int8_deploys_to_the_default_cortex_m4f_chip(tiny_host):
    """tiny's int8 weights (~4.5 MB) exceed the Apollo4 Plus's 2 MB MRAM: the coldest go to the
    board's external flash, the build then fits, and the placed image stays bit-exact on QEMU."""
    require_toolchain("cortex-m4f")
    out, run = tiny_host
    assert run.returncode == 0, run.stdout + run.stderr
    board = load_board("cortex-m4f")
    report = memory_report(build_project(out, board), board, out)
    assert not report["flash"]["fits"]
    placement = place_weights(out, board, report, out / "onnx" / "manifest.json")
    assert placement is not None and placement.external_bytes >= report["flash"]["deployable"] - (2 << 20)
    report = memory_report(build_project(out, board), board, out)
    check_fits(report)
    assert report["external_flash"]["weights"] == placement.external_bytes
    result = verify_int8_on_board(out, "cortex-m4f")
    assert result.bit_exact
