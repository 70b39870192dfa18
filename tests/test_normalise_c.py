"""The device's input normalisation (firmware/runtime/lumamba_normalise.c), built natively and fed
int16 counts: bit for bit the host mirror lumamba.stream.reference.device_normalise, and, for all
three methods, the training normalisation lumamba.normalise.normalise (float64, on the counts'
microvolts) within float32 rounding.

Tolerance vs float64: the C computes the statistics exactly on the integer counts (int64 sums,
exact order statistics), then 4-6 float32 roundings per output (count -> centred, * scale, the
denominator's sqrt/multiply/divide/add, the final divide), each at most half an ulp (6e-8)
relative; so |C - reference| <= RTOL * |reference| with RTOL = 1e-6 (about 16 ulp, some three
times the worst case), plus ATOL = 1e-7 for the float64 reference's own rounding where the output
is near zero (a constant channel: the C's exact integer mean gives 0, float64's mean of inexact
microvolts may not). Measured on these windows: at most 2.4e-7 relative (zscore), 1.7e-7 (robust),
1.0e-7 (fixed), and 1.2e-10 absolute where |reference| < 1e-3.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from lumamba.normalise import NORMALISATIONS, normalise
from lumamba.stream.reference import device_normalise
from toolchain import build_runtime_harness

HARNESS = Path(__file__).parent / "c" / "normalise_harness.c"
METHOD_CODE = {"zscore": 0, "robust": 1, "fixed": 2}     # LUMAMBA_NORM_* in lumamba_normalise.h
OK, NULL_POINTER, BAD_ARGUMENT = 0, 3, 6
RTOL, ATOL = 1e-6, 1e-7
SCALE = 0.1


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    return build_runtime_harness(HARNESS, ["lumamba_normalise.c", "lumamba_runtime.c"],
                                 tmp_path_factory.mktemp("normalise") / "normalise_harness")


def run_c(harness: Path, counts: np.ndarray, method, scale: float = SCALE, layout: str = "rows"):
    """(status, (C, T) float32 or None) of the C on (C, T) counts."""
    c, n = counts.shape
    data = np.ascontiguousarray(counts.T if layout == "instants" else counts, "<i2").tobytes()
    bits = f"{int(np.array([scale], np.float32).view(np.uint32)[0]):08x}"
    code = METHOD_CODE.get(method, method)
    out = subprocess.run([str(harness), str(c), str(n), bits, str(code), layout], input=data,
                         capture_output=True, check=True).stdout.decode().splitlines()
    status = int(out[0].split()[1])
    if status != OK:
        return status, None
    return status, np.array([int(h, 16) for h in out[1].split()[1:]], np.uint32).view(np.float32).reshape(c, n)


def windows() -> dict[str, np.ndarray]:
    """(C, T) int16 count windows: EEG-like, large DC offsets, a constant channel and dead (zero)
    leads, spikes, saturation, and ties (few distinct values)."""
    rng = np.random.default_rng(7)
    t = np.arange(1280) / 256.0
    eeg = 400 * np.sin(2 * np.pi * rng.uniform(1, 30, (22, 1)) * t + rng.uniform(0, 6, (22, 1))) \
        + 300 * rng.standard_normal((22, 1280))
    dead = eeg.copy()
    dead[::3] = 0                                        # dead leads
    dead[1] = 1234                                       # a constant channel (a DC level, no signal)
    dead[2] = -32768                                     # a lead stuck at the rail
    spikes = eeg.copy()
    spikes[:, ::97] = 32767                              # artefact samples (robust ignores them)
    return {
        "eeg": eeg,
        "dc_offset": eeg / 20 + rng.uniform(-30000, 30000, (22, 1)),   # std ~25 counts on a DC of 1e4
        "dead_and_constant": dead,
        "spikes": spikes,
        "saturated": eeg * 100,
        "ties": rng.integers(-2, 3, (22, 1280)),
        "odd_length": eeg[:5, :333],                     # every interpolation fraction
    }


def as_counts(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("method", NORMALISATIONS)
@pytest.mark.parametrize("name", list(windows()))
def test_c_is_the_host_mirror_bit_for_bit_and_the_training_normalisation(harness, method, name):
    counts = as_counts(windows()[name])
    status, got = run_c(harness, counts, method)
    assert status == OK
    mirror = device_normalise(counts, SCALE, method)
    np.testing.assert_array_equal(got.view(np.uint32), mirror.view(np.uint32))
    reference = normalise(counts.astype(np.float64) * float(np.float32(SCALE)), method)
    err = np.abs(got.astype(np.float64) - reference)
    assert (err <= RTOL * np.abs(reference) + ATOL).all(), (name, method, float(err.max()))


def test_constant_channels_and_dead_leads_give_zero_not_noise(harness):
    counts = as_counts(windows()["dead_and_constant"])
    for method in ("zscore", "robust"):
        _, got = run_c(harness, counts, method)
        assert (got[::3] == 0).all() and (got[1] == 0).all() and (got[2] == 0).all(), method
    _, fixed = run_c(harness, counts, "fixed")
    assert fixed[1, 0] == np.float32(np.float32(1234 * np.float32(SCALE)) / np.float32(50))   # DC kept


def test_instant_major_in_place_and_patchwise_windows_equal_channel_major_ones(harness):
    """"patches": per-channel statistics, then runs of 7 samples of every channel at a time (the
    streamed front end's per-patch normalisation), bit for bit the whole-row normalisation."""
    for name in ("eeg", "dead_and_constant", "odd_length"):
        counts = as_counts(windows()[name])
        for method in NORMALISATIONS:
            _, rows = run_c(harness, counts, method, layout="rows")
            for layout in ("instants", "in_place", "patches"):
                _, other = run_c(harness, counts, method, layout=layout)
                np.testing.assert_array_equal(rows.view(np.uint32), other.view(np.uint32), err_msg=(name, layout))


def test_percentiles_match_numpy_for_every_length(harness):
    # (n - 1) / 4 takes every fraction 0, 1/4, 1/2, 3/4 over four consecutive lengths
    rng = np.random.default_rng(8)
    for n in (2, 3, 4, 5, 6, 7, 40, 41, 42, 43):
        counts = rng.integers(-32768, 32768, (3, n)).astype(np.int16)
        _, got = run_c(harness, counts, "robust", scale=1.0)
        reference = normalise(counts.astype(np.float64), "robust")
        assert np.allclose(got, reference, rtol=RTOL, atol=ATOL), n


def test_bad_arguments_are_refused(harness):
    counts = as_counts(windows()["eeg"][:2, :64])
    for scale in (0.0, -0.1, float("inf"), float("nan")):
        assert run_c(harness, counts, "zscore", scale=scale)[0] == BAD_ARGUMENT, scale
    assert run_c(harness, counts, 7)[0] == BAD_ARGUMENT
    assert run_c(harness, counts, 7, layout="patches")[0] == BAD_ARGUMENT        # the statistics refuse it too
    assert run_c(harness, counts, "zscore", scale=0.0, layout="patches")[0] == BAD_ARGUMENT
    assert run_c(harness, counts[:, :1], "zscore")[0] == BAD_ARGUMENT    # one sample has no std
