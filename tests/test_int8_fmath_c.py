"""firmware/runtime/lumamba_fmath.c against lumamba.quant.fmath: bit for bit (no tolerance), on
dense sweeps of each function's domain, random float32 bit patterns and the edge values."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest
from test_quant_fmath import exp_edge_inputs

from lumamba.firmware import ROOT as FIRMWARE_ROOT
from lumamba.quant import fmath

SOURCE = FIRMWARE_ROOT / "runtime" / "lumamba_fmath.c"
FUNCTIONS = {"lmb_expf": fmath.exp, "lmb_log1pf": fmath.log1p_unit, "lmb_softplusf": fmath.softplus,
             "lmb_sigmoidf": fmath.sigmoid, "lmb_erff": fmath.erf, "lmb_atanf": fmath.atan}
# a vectorised wrapper so one ctypes call evaluates a whole array
WRAPPER = "\n".join(["#include <stdint.h>", '#include "lumamba_fmath.h"'] + [
    f"void v_{name}(const float *x, float *y, int32_t n) {{ int32_t i; "
    f"for (i = 0; i < n; ++i) {{ y[i] = {name}(x[i]); }} }}" for name in FUNCTIONS])


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("fmath")
    (d / "wrap.c").write_text(WRAPPER)
    so = d / "libfmath.so"
    cmd = ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-fPIC",
           "-shared", "-I", str(SOURCE.parent), str(SOURCE), str(d / "wrap.c"), "-o", str(so), "-lm"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return ctypes.CDLL(str(so))


def _call(lib, name, x):
    x = np.ascontiguousarray(x, np.float32)
    y = np.empty_like(x)
    getattr(lib, f"v_{name}")(x.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p),
                              ctypes.c_int32(x.size))
    return y


def _inputs(name):
    rng = np.random.default_rng(0)
    if name == "lmb_log1pf":
        return np.concatenate([np.linspace(0, 1, 200001, dtype=np.float32),
                               rng.random(100000, dtype=np.float32), np.float32([0, 1, 2 ** -149])])
    bits = rng.integers(0, 2 ** 32, 200000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    bits = bits[np.isfinite(bits)]
    edges = np.float32([0.0, -0.0, 1.0, -1.0, 2.5, 4.0, -4.0, 88.0, 88.00001, -86.5, -86.50001, 0.5,
                        float(fmath.TAN_PI_8), np.inf, -np.inf, 2 ** -149, -(2 ** -149), 3e38, -3e38])
    return np.concatenate([np.linspace(-100, 100, 400001, dtype=np.float32),
                           np.linspace(-5, 5, 200001, dtype=np.float32), bits, edges, exp_edge_inputs()])


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_c_port_is_bit_exact(lib, name):
    x = _inputs(name)
    with np.errstate(all="ignore"):
        ref = FUNCTIONS[name](x)
    got = _call(lib, name, x)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got), nan)     # NaN payloads are unspecified
    mismatch = np.flatnonzero(got[~nan].view(np.uint32) != ref[~nan].view(np.uint32))
    assert mismatch.size == 0, (f"{name}: {mismatch.size} of {x.size} differ, first at x = "
                                f"{x[~nan][mismatch[0]]!r}: C {got[~nan][mismatch[0]]!r}, "
                                f"golden {ref[~nan][mismatch[0]]!r}")


def test_atan_of_nan_is_nan(lib):
    assert np.isnan(_call(lib, "lmb_atanf", np.float32([np.nan]))[0])
