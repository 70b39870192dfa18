"""`lumamba-export --int8` end to end: calibration windows -> quantised graphs -> int8 C -> firmware
project -> ELF -> QEMU (or native), compared bit for bit with the int8 golden model.

No tolerance anywhere: the generated C performs the golden model's integer and float32 operations
in its order (lumamba.quant.golden), so every logit's float32 bit pattern must be equal.

The default tests share one CLI run (random micro model, tcp22, T=640, Cortex-M4F, --int8, verified,
calibration and drift windows from a small .npz); host, M55 and RISC-V builds reuse that project.
The CLI's own host run and the default synthetic-corpus calibration are exports of their own,
marked slow.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from test_quant_golden import eeg_like

from lumamba.export import cli
from lumamba.export.onnx.mamba_chunk import DEFAULT_CHUNK
from lumamba.quant.calibration_data import Int8DataError, load_int8_windows
from lumamba.export.project.int8_project import INT8_DIR
from lumamba.export.project.test_vectors import N_VERIFIED
from lumamba.export.verify import VerificationError, compare_bit_exact, verify_int8_on_board
from lumamba.montages import MONTAGES
from lumamba.train.data import save_npz_windows
from toolchain import require_toolchain

N_SAMPLES = 640
CHANNELS = list(MONTAGES["tcp22"])
MICRO_ARGS = ["--config", "micro", "--montage", "tcp22", "--n-samples", str(N_SAMPLES)]
N_CALIB = 4
N_NPZ = 14


@pytest.fixture(scope="module")
def calib_npz(tmp_path_factory):
    """Windows as the generic path stores them: 6 train windows of 1280 samples (cut to the
    export's 640), channels in reverse order (the CLI must reorder them), 2 val windows, and 6
    test windows of both classes for the drift."""
    x = eeg_like(N_NPZ, len(CHANNELS), 2 * N_SAMPLES, seed=3)[:, ::-1]
    split = ["train"] * 6 + ["val"] * 2 + ["test"] * 6
    labels = np.arange(N_NPZ) % 2
    return save_npz_windows(tmp_path_factory.mktemp("calib") / "calib.npz", x, labels, CHANNELS[::-1], split)


def export(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "lumamba.export.cli", *args], capture_output=True, text=True,
                         timeout=timeout)
    print(run.stdout, run.stderr)
    return run


@pytest.fixture(scope="module")
def m4_project(tmp_path_factory, calib_npz):
    """micro, int8, Cortex-M4F, verified in QEMU; it fits the default Cortex-M4F chip. A
    quantisation config keeps the classifier's last layer float, so the firmware mixes int8 and
    float nodes in one graph."""
    require_toolchain("cortex-m4f")
    root = tmp_path_factory.mktemp("int8")
    config = root / "quant.json"
    config.write_text('{"float": ["classifier.fc3"]}')
    out = root / "micro-m4"
    run = export(["--target", "cortex-m", *MICRO_ARGS, "--int8", "--calib-data", str(calib_npz),
                  "--calib-windows", str(N_CALIB), "--quant-config", str(config), "--max-drift", "1",
                  "--out", str(out)])
    return out, run


def test_cli_cortex_m_int8_bit_exact_in_qemu(m4_project):
    out, run = m4_project
    assert run.returncode == 0, run.stdout + run.stderr
    log = run.stdout
    assert re.search(r"\[1/9\] exporting recurrent-mode ONNX graphs", log)
    assert f"{N_CALIB} calibration windows from --calib-data" in log and "; 6 evaluation windows" in log
    assert re.search(r"\[4/9\] compiling the integer graphs", log)
    parity = f"cortex-m4f (QEMU mps2-an386): {N_VERIFIED} windows, logits bit-identical to the int8 golden model"
    assert int(re.search(r"([\d,]+) instructions per window", log).group(1).replace(",", "")) > 1_000_000
    # the closing report: parity, memory against the chip, drift (verification is on by default)
    report = log[log.index("Report: random 'micro' model"):]
    assert re.search(r"parity: +" + re.escape(parity), report)
    assert re.search(r"memory: +flash [\d,]+ B of 2,097,152 \(fits\), RAM [\d,]+ B of 2,883,584 \(fits\) on Ambiq Apollo4", report)
    drift = re.search(r"drift: +AUROC float (\S+), int8 (\S+), \|drift\| (\S+) \(max 1\) on 6 windows", report)
    assert drift and abs(abs(float(drift[1]) - float(drift[2])) - float(drift[3])) <= 1.5e-4
    assert (out / "drift.json").is_file() and (out / "drift.png").is_file()
    # the project holds the quantised model it was verified against, and int8 weights in flash
    assert (out / INT8_DIR / "quant.json").is_file() and not list(out.glob("*fmath*.c"))
    index = json.loads((out / INT8_DIR / "quant.json").read_text())
    assert index["calibration"]["n_windows"] == N_CALIB
    assert [n["int8"] for n in index["nodes"].values() if n["layer"] == "classifier.fc3"] == [False]
    assert sum(node["int8"] for node in index["nodes"].values()) > 20
    assert (out / INT8_DIR / "qdq" / "frontend.onnx").is_file()   # the QDQ set for onnxruntime users
    weights = "".join(p.read_text() for p in out.glob("weights_lumamba_*.c"))
    assert "const int8_t" in weights
    # every qlinear calls the Cortex-M4F's micro-kernel (SMLAD), whose sources the project carries
    kernels = "".join(p.read_text() for p in out.glob("lumamba_*_kernels.c"))
    assert kernels.count("lumamba_s8_gemm_2x2_smlad(") >= 10 and "lumamba_s8_gemm_4x4_c(" not in kernels
    assert (out / "firmware" / "kernels" / "lumamba_s8_gemm_fallback_c.c").is_file()


def test_int8_default_front_end_keeps_int8_conv_outputs(m4_project):
    """--int8 defaults to the stored front end: h1..h3 are int8 buffers at the parameters of the
    qconv output each holds (nothing else is int8), one byte per element in the arena, converted
    around the calls; and storing the codes is lossless: the golden model with float32 h1..h3
    gives the same logits bit for bit."""
    import dataclasses

    from lumamba.quant import load_golden
    from lumamba.quant.buffer_storage import int8_output_params
    from lumamba.quant.golden import GoldenRunner

    out, run = m4_project
    assert run.returncode == 0
    golden = load_golden(out / INT8_DIR)
    m = golden.manifest
    ch, C = m.config["embed_dim"] // 4, m.n_channels
    assert [s.graph for s in m.schedule[:7]] == ["frontend_conv1", "frontend_gn1", "frontend_conv2", "frontend_gn2",
                                                 "frontend_conv3", "frontend_gn3", "frontend"]
    for k in (1, 2, 3):
        h = m.buffer(f"h{k}")
        assert (h.dtype, h.shape) == ("int8", (m.n_patches, ch, C, 4))
        assert int8_output_params(golden.executors[f"frontend_conv{k}"].graph, "h_t") == (h.scale, h.zero_point)
    assert [b.name for b in m.buffers if b.dtype == "int8"] == ["h1", "h2", "h3"]
    model_c = (out / "model.c").read_text()
    row = ch * C * 4
    assert re.search(r"int8_t \*buf_h2 = \(int8_t \*\)\(arena \+ \d+u\);", model_c)
    assert f"h2 activation int8[{m.n_patches}, {ch}, {C}, 4]" in model_c
    assert model_c.count("quantize_row_s8(row_") == 3 and model_c.count("dequantize_row_s8(buf_h") == 3
    assert f"dequantize_row_s8(buf_h1 + t * {row}u, row_2_x, {row}u" in model_c
    as_float = dataclasses.replace(m, buffers=tuple(dataclasses.replace(b, dtype="float32", scale=0.0, zero_point=0)
                                                    for b in m.buffers))
    plain = GoldenRunner(as_float, {name: e.graph for name, e in golden.executors.items()})
    x = eeg_like(2, m.n_channels, m.n_samples, seed=5)
    compare_bit_exact(golden(x), plain(x), "golden model with float32 h1..h3")


def test_same_sources_bit_exact_on_host(m4_project):
    out, run = m4_project
    assert run.returncode == 0
    result = verify_int8_on_board(out, "host")
    assert result.bit_exact and result.logits.shape == (N_VERIFIED, 2)


def test_fast_host_scoring_build_is_bit_exact(m4_project):
    """The library built for scoring (load_host_c(fast=True): -O3, vectorised for this machine,
    the SMLAD form's portable fallback) scores windows bit-identically to the golden model, with
    two workers in parallel."""
    from lumamba.export.project.host_c_runner import load_host_c
    from lumamba.quant import load_golden

    out, run = m4_project
    assert run.returncode == 0
    golden = load_golden(out / INT8_DIR)
    windows = eeg_like(6, golden.manifest.n_channels, golden.manifest.n_samples, seed=9)
    model = load_host_c(out, workers=2, fast=True)
    compare_bit_exact(model(windows), golden(windows), "host C (fast build)")


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


def _int8_gemm_macs(project) -> dict[str, int]:
    """Per graph, the MACs per window of its int8 MatMul/Gemm and Conv nodes (a conv through im2col:
    Cin x kh x kw per output element), from the ONNX shapes and the schedule (an independent count
    of what the GEMM micro-kernels must do)."""
    import onnx

    manifest = json.loads((project / "onnx" / "manifest.json").read_text())
    nodes = json.loads((project / INT8_DIR / "quant.json").read_text())["nodes"]
    runs: dict[str, int] = {}
    for s in manifest["schedule"]:     # a graph may run in several stages (the chunk form's chunks)
        span = s.get("span") or (0, manifest["n_patches"])
        runs[s["graph"]] = runs.get(s["graph"], 0) + (1 if s["loop"] == "once" else span[1] - span[0])
    macs = {}
    for graph, n_runs in runs.items():
        model = onnx.shape_inference.infer_shapes(onnx.load(project / "onnx" / f"{graph}.onnx"))
        g = model.graph
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in [*g.value_info, *g.input, *g.output]}
        shapes.update({i.name: list(i.dims) for i in g.initializer})
        total = 0
        for node in g.node:
            if node.op_type in ("MatMul", "Gemm") and nodes.get(f"{graph}:{node.name}", {}).get("int8"):
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                w = shapes[node.input[1]]
                total += int(np.prod(shapes[node.input[0]])) * (w[0] if trans_b else w[-1])
            elif node.op_type == "Conv" and nodes.get(f"{graph}:{node.name}", {}).get("int8"):
                total += int(np.prod(shapes[node.output[0]])) * int(np.prod(shapes[node.input[1]][1:]))
        macs[graph] = total * n_runs
    return macs


def test_kernel_profile_counts_every_gemm_mac(m4_project):
    """The profile (lumamba-export --profile's) of the int8 project: every manifest graph appears,
    the kernels add up to the unprofiled count, and the micro-kernel MACs it counted per graph are
    exactly the int8 matmuls' MACs."""
    from lumamba.export.project.kernel_profile import profile_project

    out, run = m4_project
    assert run.returncode == 0
    profile = profile_project(out, "cortex-m4f")
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert list(profile.graphs()) == [g["name"] for g in manifest["graphs"]]
    unprofiled = json.loads((out / "report.json").read_text())["instructions_per_window"]
    # the instrumented run does the same work plus two counter reads around every kernel call
    assert unprofiled < profile.instructions_per_window < 1.05 * unprofiled
    # outside the kernels: the drivers (stage calls, state copies) and the input normalisation,
    # a few % of micro's count (the chunk form has more stage calls than the step form)
    assert 0.95 * unprofiled < profile.kernel_instructions < profile.instructions_per_window
    counted = {g: 0 for g in profile.graphs()}
    for k in profile.kernels:
        counted[k.graph] += k.gemm_macs
    assert counted == _int8_gemm_macs(out) and sum(counted.values()) > 1_000_000
    # the streamed front end's matmuls run over the patch's 22 channel tokens per call, the Mamba
    # projections (the int8 default: the chunk form) over a chunk of tokens
    assert max(k.tokens_per_call for k in profile.gemm_kernels() if k.graph == "frontend") == len(CHANNELS)
    assert manifest["mamba_form"] == "chunk" and manifest["mamba_chunk"] == DEFAULT_CHUNK
    assert {k.tokens_per_call for k in profile.gemm_kernels() if k.graph.startswith("block")} == {DEFAULT_CHUNK}
    assert 1 < profile.gemm_instructions_per_mac() < 10


def test_int8_windows_from_npz(calib_npz, tmp_path):
    w = load_int8_windows(str(calib_npz), CHANNELS, N_SAMPLES, 3, tmp_path)
    full = eeg_like(N_NPZ, len(CHANNELS), 2 * N_SAMPLES, seed=3)
    assert w.calibration.shape == (3, len(CHANNELS), N_SAMPLES) and w.calibration.dtype == np.float32
    # every calibration window is a train window's first N_SAMPLES samples, in the export's channel order
    for window in w.calibration:
        assert any(np.array_equal(window, full[i, :, :N_SAMPLES]) for i in range(6))
    # the drift windows are all test windows, in order, with their labels
    np.testing.assert_array_equal(w.eval_x, full[8:, :, :N_SAMPLES])
    np.testing.assert_array_equal(w.eval_labels, np.arange(8, N_NPZ) % 2)
    assert "--calib-data" in w.source


def test_int8_windows_without_usable_test_windows(tmp_path):
    x = eeg_like(6, len(CHANNELS), N_SAMPLES, seed=4)
    one_class = save_npz_windows(tmp_path / "one.npz", x, np.zeros(6), CHANNELS, ["train"] * 4 + ["test"] * 2)
    w = load_int8_windows(str(one_class), CHANNELS, N_SAMPLES, 4, tmp_path)
    assert w.eval_x is None and "one class only: AUROC is undefined" in w.eval_missing
    no_test = save_npz_windows(tmp_path / "none.npz", x, np.arange(6) % 2, CHANNELS, ["train"] * 6)
    w = load_int8_windows(str(no_test), CHANNELS, N_SAMPLES, 4, tmp_path)
    assert w.eval_x is None and "no usable test windows" in w.eval_missing


def test_int8_windows_errors(calib_npz, tmp_path):
    with pytest.raises(Int8DataError, match="--calib-data .*missing.npz: not found"):
        load_int8_windows(str(tmp_path / "missing.npz"), CHANNELS, N_SAMPLES, 4, tmp_path)
    with pytest.raises(Int8DataError, match="windows have 1280 samples, the export needs 2560"):
        load_int8_windows(str(calib_npz), CHANNELS, 2 * 2 * N_SAMPLES, 4, tmp_path)
    with pytest.raises(Int8DataError, match=r"channels \['XX-YY'\] not in"):
        load_int8_windows(str(calib_npz), ["XX-YY"], N_SAMPLES, 4, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Int8DataError, match="empty holds neither edf/ nor train/ and eval/.*expected a window cache"):
        load_int8_windows(str(tmp_path / "empty"), CHANNELS, N_SAMPLES, 4, tmp_path / "scratch")
    # calibration windows must be normalised as the model was trained (calib_npz: z-scored)
    with pytest.raises(Int8DataError, match=r"holds zscore-normalised windows but the model was trained on "
                                            r"robust-normalised ones; prepare it with --normalisation robust"):
        load_int8_windows(str(calib_npz), CHANNELS, N_SAMPLES, 4, tmp_path, normalisation="robust")
    warnings = []
    w = load_int8_windows(str(calib_npz), CHANNELS, N_SAMPLES, 32, tmp_path, warn=warnings.append)
    assert len(w.calibration) == 6 and "only 6 train windows, fewer than --calib-windows 32" in warnings[0]


def test_drift_beyond_the_threshold_fails_the_export(m4_project, calib_npz, tmp_path):
    """The drift step of the shared project's export, re-run with a threshold below its drift."""
    import argparse
    out, run = m4_project
    assert run.returncode == 0
    drift = float(re.search(r"\|drift\| (\S+)", run.stdout)[1])
    model, _, _ = cli.load_model(None, "micro")
    windows = load_int8_windows(str(calib_npz), CHANNELS, N_SAMPLES, N_CALIB, tmp_path)
    args = argparse.Namespace(max_drift=drift - 0.01, min_agreement=0.0)
    with pytest.raises(cli.ExportError, match=r"\|AUROC_int8 - AUROC_float\| = .* exceeds --max-drift"):
        cli._drift(args, model, CHANNELS, out / "onnx", out / INT8_DIR, windows, tmp_path)
    assert "|drift|" in cli._drift(argparse.Namespace(max_drift=drift + 0.01, min_agreement=0.0), model, CHANNELS,
                                   out / "onnx", out / INT8_DIR, windows, tmp_path)
    with pytest.raises(cli.ExportError, match=r"label agreement .* is below --min-agreement 100.00 %"):
        cli._drift(argparse.Namespace(max_drift=1.0, min_agreement=1.0 + 1e-9), model, CHANNELS, out / "onnx",
                   out / INT8_DIR, windows, tmp_path)


def test_bad_quant_config_names_the_option_and_pattern(calib_npz, tmp_path):
    config = tmp_path / "typo.json"
    config.write_text('{"float": ["classifier.fc9"]}')
    run = export(["--target", "host", *MICRO_ARGS, "--int8", "--calib-data", str(calib_npz), "--calib-windows", "2",
                  "--quant-config", str(config), "--out", str(tmp_path / "out")])
    assert run.returncode == 1
    assert re.search(r"error: --quant-config: .*typo.json.*classifier.fc9", run.stderr)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize("args, message", [
    (["--target", "onnx", "--int8"], "--int8 needs a firmware target"),
    (["--target", "host", "--calib-data", "x.npz"], "--calib-data: only with --int8"),
    (["--target", "host", "--calib-windows", "4", "--max-drift", "0.1"], "--calib-windows, --max-drift: only with --int8"),
    (["--target", "host", "--int8", "--max-drift", "2"], "--max-drift 2.0: must be between 0 and 1"),
    (["--target", "host", "--int8", "--calib-windows", "0"], "--calib-windows 0: must be >= 1"),
    (["--target", "host", "--precision", "int8", "--target-sqnr", "25"], "--precision, --target-sqnr: only with --int8"),
    (["--target", "host", "--int8", "--min-agreement", "1.5"], "--min-agreement 1.5: must be between 0 and 1"),
    (["--target", "host", "--int8", "--flash-budget", "-1"], "--flash-budget -1.0: must be between 0 and 10"),
    (["--target", "host", "--int8", "--precision", "int4"], "invalid choice: 'int4'"),
])
def test_bad_int8_options_name_the_option(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


# --- slow: exports of their own ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mamba_form", ["window", "step", "chunk"])
def test_cli_host_int8_verify(tmp_path, calib_npz, mamba_form):
    """The native verification of the default (automatic precision) int8 export, in every Mamba
    form (m4_project covers the default form in the default suite; the chunk form with chunks of
    3 of the 16 tokens: shared chunk graphs and a last chunk of 1). The .npz holds 3 + 3
    test windows of a random model, so its AUROC moves in steps of 1/9: one swapped pair exceeds
    any --max-drift below 0.11. The gate is m4_project's and test_drift_gate's subject, not this one's."""
    chunk = ["--mamba-chunk", "3"] if mamba_form == "chunk" else []
    run = export(["--target", "host", *MICRO_ARGS, "--int8", "--calib-data", str(calib_npz), "--mamba-form", mamba_form,
                  *chunk,
                  "--calib-windows", str(N_CALIB), "--max-drift", "1", "--verify", "--out", str(tmp_path / "host")])
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Mamba in {mamba_form} form" in run.stdout
    assert f"host (native): {N_VERIFIED} windows, logits bit-identical to the int8 golden model" in run.stdout


@pytest.mark.slow
def test_default_calibration_is_the_synthetic_corpus(tmp_path, capsys):
    w = load_int8_windows(None, CHANNELS, N_SAMPLES, 32, tmp_path)
    assert w.calibration.shape == (32, len(CHANNELS), N_SAMPLES) and w.source == "the default synthetic corpus"
    assert np.isfinite(w.calibration).all() and 0.5 < float(w.calibration.std()) < 2.0     # z-scored EEG
    assert len(w.eval_x) > 100 and set(np.unique(w.eval_labels)) == {0, 1}
    assert "generating the default synthetic corpus" in capsys.readouterr().out
