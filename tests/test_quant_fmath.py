"""fmath (the golden model's float32 transcendentals) and the float islands' sequential reductions.

Accuracy is measured in float32 ulps of the float64 value. The bound, 3 ulp (4 for softplus, a
composition of exp and log1p whose errors add; 1.5 for the table-driven exp, measured 1.3), is what
a polynomial evaluated in float32 (each Horner step rounds) reaches; a wrong coefficient, a
missing range reduction or a float64 leak shows up as thousands of ulps or as a non-float32 result.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from lumamba.quant import fmath
from lumamba.quant.ops import OPS, seq_matmul, seq_sum
from lumamba.quant.qgraph import QNode

F32 = np.float32


def ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


@pytest.mark.parametrize("name, fn, ref, lo, hi, bound", [
    ("exp", fmath.exp, np.exp, -86.5, 88.0, 1.5),
    ("erf", fmath.erf, special.erf, -5.0, 5.0, 3),
    ("atan", fmath.atan, np.arctan, -50.0, 50.0, 3),
    ("sigmoid", fmath.sigmoid, special.expit, -30.0, 30.0, 3),
    ("softplus", fmath.softplus, lambda x: np.logaddexp(0.0, x), -20.0, 30.0, 4),
    ("log1p_unit", fmath.log1p_unit, np.log1p, 0.0, 1.0, 3),
])
def test_accuracy_in_ulp(name, fn, ref, lo, hi, bound):
    x = np.concatenate([np.linspace(lo, hi, 400001), np.geomspace(1e-7, max(abs(lo), hi), 20001)]).astype(np.float32)
    x = x[(x >= lo) & (x <= hi)]
    got = fn(x)
    assert got.dtype == np.float32
    want = ref(x.astype(np.float64))
    keep = np.abs(want) > 1e-30        # sigmoid/softplus far left reach subnormals, where ulps mean little
    err = ulps(got[keep], want[keep])
    assert err.max() <= bound, f"{name}: {err.max():.2f} ulp at x={x[keep][np.argmax(err)]}"


def test_special_values():
    assert fmath.exp(np.array([0.0], F32))[0] == 1.0
    assert fmath.exp(np.array([-np.inf, -100.0, 100.0, np.inf], F32)).tolist() == [0.0, 0.0, np.inf, np.inf]
    x = np.linspace(-6, 6, 1201, dtype=np.float32)
    assert np.array_equal(fmath.erf(-x), -fmath.erf(x)) and fmath.erf(np.zeros(1, F32))[0] == 0.0
    assert np.array_equal(fmath.atan(-x), -fmath.atan(x))
    assert fmath.atan(np.array([np.inf, -np.inf], F32)).tolist() == [float(fmath.PI_2), -float(fmath.PI_2)]
    assert fmath.erf(np.array([4.0, 10.0], F32)).tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="float32"):
        fmath.exp(np.zeros(3))


def test_elementwise_results_do_not_depend_on_array_layout():
    """The same element gives the same bits alone, in a vector, or in a strided view (numpy's SIMD
    and scalar loops must agree, or C could not match)."""
    x = np.random.default_rng(0).normal(0, 4, 4099).astype(np.float32)
    for fn in (fmath.exp, fmath.erf, fmath.atan, fmath.sigmoid, fmath.softplus):
        whole = fn(x)
        single = np.array([fn(np.array(v, F32)) for v in x[:300]], F32)
        assert np.array_equal(whole[:300], single)
        assert np.array_equal(fn(x[::3]), whole[::3])


def python_sequential_sum(values) -> np.float32:
    acc = F32(0.0)
    for v in values:
        acc = F32(acc + F32(v))
    return acc


def test_reductions_are_sequential_left_to_right():
    rng = np.random.default_rng(1)
    x = (rng.normal(0, 1, (3, 5, 700)) * 10 ** rng.uniform(-3, 3, (3, 5, 700))).astype(np.float32)
    got = seq_sum(x, (-1,))
    want = np.array([[python_sequential_sum(x[i, j]) for j in range(5)] for i in range(3)], F32)
    assert np.array_equal(got, want)
    # numpy's pairwise summation differs on this data, so the comparison above can fail
    assert not np.array_equal(got, x.sum(-1))
    # several axes: row-major order of the reduced elements
    got2 = seq_sum(x, (0, 2))
    assert np.array_equal(got2, np.array([python_sequential_sum(x[:, j, :].reshape(-1)) for j in range(5)], F32))


def test_float_matmul_and_layer_norm_against_explicit_loops():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, (4, 96)).astype(np.float32)
    b = rng.normal(0, 1, (96, 7)).astype(np.float32)
    got = seq_matmul(a, b)
    want = np.array([[python_sequential_sum(F32(a[m, k] * b[k, n]) for k in range(96)) for n in range(7)]
                     for m in range(4)], F32)
    assert np.array_equal(got, want)

    x = rng.normal(3, 2, (2, 64)).astype(np.float32)
    gamma, beta = rng.normal(1, 0.1, 64).astype(np.float32), rng.normal(0, 0.1, 64).astype(np.float32)
    node = QNode("LayerNormalization", "ln", ["x", "g", "b"], ["y"], {"axis": -1, "epsilon": 1e-5})
    y = OPS["LayerNormalization"](node, x, gamma, beta)[0]
    eps, n = F32(1e-5), F32(64)
    for row, yrow in zip(x, y):
        mean = F32(python_sequential_sum(row) / n)
        d = [F32(v - mean) for v in row]
        var = F32(python_sequential_sum(F32(v * v) for v in d) / n)
        inv = F32(F32(1.0) / F32(math.sqrt(F32(var + eps))))      # sqrt is correctly rounded in both
        assert np.array_equal(yrow, np.array([F32(F32(v * inv) * g + bb) for v, g, bb in zip(d, gamma, beta)], F32))
    assert np.abs(y - (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True) * gamma - beta).max() < 1e-5


def test_exp2_table_is_correctly_rounded():
    """EXP2_TABLE[j] is 2^(j/64) rounded to nearest float32 (a wrong or shifted entry would put the
    exp of a whole 1/64-octave bucket off by up to 1 %)."""
    table = np.array(fmath.EXP2_TABLE, F32)
    assert table.size == 2 ** fmath.EXP_TABLE_BITS == 64
    want = np.exp2(np.arange(64) / 64.0)
    half_ulp = np.spacing(table).astype(np.float64) / 2
    assert np.all(np.abs(table.astype(np.float64) - want) <= half_ulp)


def exp_edge_inputs() -> np.ndarray:
    """Inputs at the table exp's seams: the bucket boundaries m +- 1/2 of m = round(x 64/ln2) (where
    the rounding of m flips between two table entries and the reduced r changes sign), the octave
    boundaries (j = 63 -> 0, n -> n + 1), the clamps, and the range the selective scan sees
    (exp(dt A): dt > 0, A < 0, so x in [-30, 0])."""
    m = np.arange(-7990, 8130, dtype=np.float64)
    seams = ((m + 0.5) * math.log(2) / 64).astype(np.float32)
    seams = np.concatenate([seams, np.nextafter(seams, F32(np.inf)), np.nextafter(seams, F32(-np.inf))])
    octaves = (np.arange(-125, 128) * math.log(2)).astype(np.float32)
    scan = -np.geomspace(1e-8, 30.0, 20001).astype(np.float32)
    clamps = np.float32([-86.5, np.nextafter(F32(-86.5), F32(0)), 88.0, np.nextafter(F32(88.0), F32(0)), 0.0, -0.0])
    return np.concatenate([seams, octaves, np.nextafter(octaves, F32(0)), scan, clamps])


def test_exp_at_table_seams_and_in_the_scan_range():
    """Within 1.5 ulp of float64 exp at the seams (the bound of the degree-2 polynomial on
    |r| <= ln2/128 plus the table's and the final t + t p rounding), monotone over the scan range."""
    x = exp_edge_inputs()
    x = x[(x >= -86.5) & (x <= 88.0)]
    got = fmath.exp(x)
    want = np.exp(x.astype(np.float64))
    err = ulps(got, want)
    assert err.max() <= 1.5, f"{err.max():.2f} ulp at x={x[np.argmax(err)]}"
    rel = np.abs(got.astype(np.float64) / want - 1)
    assert rel.max() < 1.3e-7
    scan = np.sort(-np.geomspace(1e-8, 30.0, 20001).astype(np.float32))
    assert np.all(np.diff(fmath.exp(scan).astype(np.float64)) >= 0)
    assert fmath.exp(np.float32([-1e-8, 1e-8])).tolist() == [1.0, 1.0]
