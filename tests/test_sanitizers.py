"""The generated C under AddressSanitizer and UndefinedBehaviorSanitizer, on a few hundred random
and extreme windows (issue 10): no out-of-bounds access, no undefined behaviour, statuses as
documented, and the logits of every OK window bit-identical to the unsanitised host build.

Float32 and int8 projects of a random `micro` model (T = 640) are built natively with
`-fsanitize=address,undefined -fno-sanitize-recover=all` (the first finding aborts the run) around
tests/c/window_runner.c, which reads the windows from a file.
"""
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lumamba import CONFIGS, LuMamba
from lumamba.export.onnx.exporter import export_onnx
from lumamba.export.project.firmware_project import compile_model, write_project
from lumamba.export.project.boards import load_board
from lumamba.export.project.host_c_runner import load_host_c
from lumamba.export.project.int8_project import compile_int8_model, write_int8_project
from lumamba.export.project.test_vectors import fixed_windows
from lumamba.firmware import ROOT as FIRMWARE_ROOT
from lumamba.montages import load_montage
from lumamba.quant import calibrate, quantize

T = 640
N_RANDOM = 200
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")
HARNESS = Path(__file__).parent / "c" / "window_runner.c"
OK, NONFINITE_INPUT, NONFINITE_OUTPUT = 0, 1, 5


def windows(n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows, kind) with kind 0 = finite and ordinary, 1 = finite and extreme, 2 = non-finite."""
    rng = np.random.default_rng(11)
    random = rng.standard_normal((N_RANDOM, n_channels, T)) * rng.uniform(0.01, 30, (N_RANDOM, 1, 1))
    extreme = [np.zeros((n_channels, T)), np.full((n_channels, T), 3.5), np.full((n_channels, T), -1e4),
               1e-30 * rng.standard_normal((n_channels, T)), np.full((n_channels, T), 1e-40),   # denormals
               np.where(rng.random((n_channels, T)) < 0.5, 3e38, -3e38)]
    spike = rng.standard_normal((n_channels, T))
    spike[4, 17] = 1e30
    extreme.append(spike)
    dead = rng.standard_normal((n_channels, T))
    dead[2:9] = 0.0
    extreme.append(dead)
    bad = []
    for value in (np.nan, np.inf, -np.inf):
        w = rng.standard_normal((n_channels, T))
        w[n_channels - 1, T - 1] = value
        bad.append(w)
    x = np.concatenate([random, np.stack(extreme), np.stack(bad)]).astype(np.float32)
    kind = np.array([0] * N_RANDOM + [1] * len(extreme) + [2] * len(bad))
    return x, kind


def sanitized_run(project: Path, x: np.ndarray, tmp_path: Path) -> list[tuple[int, np.ndarray]]:
    """Build project + harness with the sanitizers, run it on x; [(status, logits)] per window."""
    runtime, kernels = FIRMWARE_ROOT / "runtime", FIRMWARE_ROOT / "kernels"
    exe = tmp_path / "window_runner"
    sources = [*sorted(map(str, project.glob("*.c"))), str(runtime / "lumamba_runtime.c"),
               str(runtime / "lumamba_fmath.c"), str(runtime / "lumamba_normalise.c"),
               *sorted(map(str, kernels.glob("*.c"))), str(HARNESS)]
    cmd = ["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", *SANITIZE,
           "-I", str(project), "-I", str(runtime), "-I", str(kernels), *sources, "-o", str(exe), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    data = tmp_path / "windows.f32"
    x.astype(np.float32).tofile(data)
    proc = subprocess.run([str(exe), str(data)], capture_output=True, text=True, timeout=600,
                          env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"})
    assert proc.returncode == 0 and "runtime error" not in proc.stderr and "Sanitizer" not in proc.stderr, \
        proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == list(range(len(x)))
    return [(int(r[1]), np.array([int(h, 16) for h in r[2:]], np.uint32).view(np.float32)) for r in rows]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(3)
    root = tmp_path_factory.mktemp("sanitize")
    names = load_montage("tcp22")
    manifest = export_onnx(LuMamba(CONFIGS["micro"], n_classes=2).eval(), names, T, root / "onnx")
    return root, manifest


def check(results, x, kind, reference) -> None:
    for i, (status, logits) in enumerate(results):
        if kind[i] == 2:
            assert status == NONFINITE_INPUT, i
            continue
        assert status in (OK, NONFINITE_OUTPUT), (i, status)
        if kind[i] == 0:
            assert status == OK, i
        if status == OK:   # never OK with a non-finite logit, and the same bits as without sanitizers
            assert np.all(np.isfinite(logits)), i
            want = np.zeros_like(logits)
            assert reference.infer(x[i], want) == OK
            assert np.array_equal(logits.view(np.uint32), want.view(np.uint32)), i


def test_float_c_under_sanitizers(exported, tmp_path):
    root, manifest = exported
    project = root / "float"
    write_project(compile_model(manifest, root / "onnx"), project, fixed_windows(manifest.n_channels, T), board="host")
    x, kind = windows(manifest.n_channels)
    check(sanitized_run(project, x, tmp_path), x, kind, load_host_c(project))


def test_int8_c_under_sanitizers(exported, tmp_path):
    root, manifest = exported
    x, kind = windows(manifest.n_channels)
    calibration = calibrate(root / "onnx", x[:8], progress=False)
    q = quantize(root / "onnx", calibration, out_dir=root / "int8")
    project = root / "int8_project"
    # the host's micro-kernel form, as lumamba-export --target host --int8 compiles it
    compiled = compile_int8_model(q.out_dir, root / "onnx", gemm_form=load_board("host").int8_gemm)
    assert "lumamba_s8_gemm_4x4_c(" in "".join(g.kernels_c for g in compiled.cgraphs.values())
    write_int8_project(compiled, q.out_dir, project, fixed_windows(manifest.n_channels, T), board="host")
    check(sanitized_run(project, x, tmp_path), x, kind, load_host_c(project))
