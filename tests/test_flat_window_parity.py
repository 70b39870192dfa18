"""Float parity on flat windows (all zero, constant, low amplitude, dead leads): host C vs
onnxruntime vs PyTorch float64, on the bundled demo model, whose logits reach ~100 there.

The time path's GroupNorm used to be exported as ONNX InstanceNormalization, whose statistics are
one float32 sum over 5632 values; on a flat window those rounding errors all have one sign, and the
C differed from onnxruntime by 3.4e-3 (see export/onnx/step_modules.py, blocked_group_norm).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import lumamba
from lumamba.export.onnx.step_modules import blocked_group_norm
from lumamba.export.project.test_vectors import EDGE_CASES, N_RANDOM, fixed_windows
from lumamba.export.verify import RELATIVE_TOLERANCE, TOLERANCE, VerificationError, allowed_error, compare
from lumamba.montages import MONTAGES

CHECKPOINT = Path(lumamba.__file__).resolve().parent / "assets" / "demo_model.safetensors"
N_SAMPLES = 1280


@pytest.mark.parametrize("n_channels, n_patches, groups, fill", [(22, 32, 4, "zero"), (3, 5, 2, "rand"),
                                                                  (4, 7, 4, "const")])
def test_blocked_group_norm_is_group_norm(n_channels, n_patches, groups, fill):
    """Same function as nn.GroupNorm (float64: to 1e-12), on conv-like (1, ch, C*S, W) activations."""
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(groups, 8).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    shape = (1, 8, n_channels * n_patches, 4)
    bias = torch.randn(1, 8, 1, 1, dtype=torch.float64)   # a conv of a flat window: its bias
    x = {"zero": bias.expand(shape), "const": bias.expand(shape) + 0.7,
         "rand": torch.randn(shape, dtype=torch.float64)}[fill]
    with torch.no_grad():
        want, got = norm(x), blocked_group_norm(norm, x, n_channels, n_patches)
    assert float((got - want).abs().max()) < 1e-12


def test_blocked_group_norm_rejects_wrong_layout():
    with pytest.raises(ValueError, match="C=5, S=4"):
        blocked_group_norm(torch.nn.GroupNorm(4, 8), torch.zeros(1, 8, 21, 4), 5, 4)


def test_fixed_windows_include_flat_ones():
    x = fixed_windows(6, 80)
    assert x.shape == (N_RANDOM + len(EDGE_CASES), 6, 80) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:N_RANDOM], fixed_windows(6, 80, N_RANDOM))   # earlier windows kept
    zero, constant, low, dead = x[N_RANDOM:]
    assert not zero.any() and np.all(constant == np.float32(0.7))
    assert 0.5e-4 < low.std() < 2e-4 and np.all(np.isfinite(low))
    assert not dead[::3].any() and dead[1].std() > 0.1 and dead[2].std() > 0.1
    assert len(fixed_windows(6, 80, 9)) == 9 and len(fixed_windows(6, 80, 1)) == 1


def test_compare_tolerance_is_relative_to_large_logits():
    ref = np.array([[1.0, 89.2]])
    assert compare(ref + [[0.9e-4, 8e-4]], ref, "t") == pytest.approx(8e-4)
    np.testing.assert_allclose(allowed_error(ref), TOLERANCE + RELATIVE_TOLERANCE * np.abs(ref))
    with pytest.raises(VerificationError, match="window 0, class 1"):   # the old bug: 3.4e-3 on 89.2
        compare(ref + [[0.0, 3.4e-3]], ref, "t")
    with pytest.raises(VerificationError, match="window 0, class 0"):
        compare(ref + [[1.2e-4, 0.0]], ref, "t")


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    """The demo model exported for tcp22 x 5 s; onnxruntime and host C callables; the model."""
    if not CHECKPOINT.is_file():
        pytest.skip("no bundled demo model")
    from lumamba.export import load
    from lumamba.export.onnx.exporter import export_onnx

    model = lumamba.load_pretrained(CHECKPOINT, n_classes=2).eval()
    out = tmp_path_factory.mktemp("flat") / "onnx"
    export_onnx(model, list(MONTAGES["tcp22"]), N_SAMPLES, out)
    return out, load(out), load(out, backend="c"), model


def _flat_windows(n_channels: int) -> np.ndarray:
    """fixed_windows plus more flat ones: other constants, DC offsets, fainter noise, one live lead."""
    rng = np.random.default_rng(5)
    more = [np.full((n_channels, N_SAMPLES), c) for c in (-3.0, -0.1, 0.01, 5.0)]
    more.append(np.linspace(-1, 1, n_channels)[:, None] * np.ones((n_channels, N_SAMPLES)))
    more.append(1e-6 * rng.standard_normal((n_channels, N_SAMPLES)))
    one = np.zeros((n_channels, N_SAMPLES))
    one[3] = rng.standard_normal(N_SAMPLES)
    more.append(one)
    return np.concatenate([fixed_windows(n_channels, N_SAMPLES), np.asarray(more, np.float32)])


def test_no_instance_normalization_in_frontend(demo_export):
    out = demo_export[0]
    graphs = sorted(out.glob("frontend*.onnx"))
    assert len(graphs) == 7   # three statistics passes, three combinations, the per-patch pass
    ops = {n.op_type for g in graphs for n in onnx.load(g).graph.node}
    assert "InstanceNormalization" not in ops and "ReduceMean" in ops


def test_flat_windows_host_c_onnxruntime_float64(demo_export):
    """Every pair among host C, onnxruntime and PyTorch float64 within verify's tolerance, on flat
    windows whose logits reach ~100 (they were 3.4e-3 apart before blocked_group_norm)."""
    out, ort, host_c, model = demo_export
    x = _flat_windows(22)
    names = list(MONTAGES["tcp22"])
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(torch.from_numpy(x).double(), names).numpy()
    c, o = host_c(x), ort(x)
    assert np.abs(exact).max() > 50   # flat windows do give logits far from unit scale
    for got, ref, what in ((c, o, "C vs onnxruntime"), (c, exact, "C vs float64"), (o, exact, "onnxruntime vs float64")):
        err = np.abs(got - ref)
        print(f"{what}: max abs {err.max():.2e}, max rel {(err / np.maximum(1, np.abs(ref))).max():.2e}")
        compare(got, ref, what)
