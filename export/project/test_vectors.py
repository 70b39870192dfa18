"""The test application's windows: which fixed windows every board and the host compute on, and
`test_vectors.h`, which compiles them into the firmware (firmware/app/main.c runs them).

Two kinds: float32 windows of the model's input (lumamba_infer()), and int16 count windows as
the firmware's ADC delivers them (lumamba_infer_counts(), which normalises them on the device);
the test application reports the count windows after the float ones.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .build import write_if_changed

N_RANDOM = 2
# Windows on which float32 rounding is least random (every token alike, or nearly): the case where
# the generated C once differed from onnxruntime by 3.4e-3 (see export/onnx/step_modules.py,
# blocked_group_norm). Every verification runs them after the random ones.
EDGE_CASES = ("zero", "constant", "low_amplitude", "dead_leads")
N_WINDOWS = N_RANDOM + len(EDGE_CASES)
SEED = 1234
SAMPLE_RATE_HZ = 256.0  # the rate LuMamba's windows are resampled to
CONSTANT = 0.7          # value of every sample of the "constant" window
LOW_AMPLITUDE = 1e-4    # standard deviation of the "low_amplitude" window (white noise)
DEAD_EVERY = 3          # "dead_leads": every third channel (0, 3, 6, ...) is flat zero
N_COUNT_WINDOWS = 1     # int16 count windows, run through lumamba_infer_counts()
DC_COUNTS = 1234        # the constant (DC-only) channel of the count window
N_VERIFIED = N_WINDOWS + N_COUNT_WINDOWS   # windows a default verification runs on the board


def fixed_windows(n_channels: int, n_samples: int, n_windows: int = N_WINDOWS) -> np.ndarray:
    """Deterministic test windows (n_windows, C, T), float32.

    First the random windows of unit scale (n_windows - 4 of them, at least min(n_windows, 2)):
    window 0 is white Gaussian noise; the others are EEG-like: a few rhythms (delta to beta) per
    channel with random amplitudes and phases, plus noise. Then, as far as n_windows allows, the
    EDGE_CASES: all zero, constant CONSTANT, white noise of LOW_AMPLITUDE, and an EEG-like window
    whose every DEAD_EVERY-th channel is zero. Fixed by SEED, so every run, board and host
    computes on the same bits; the first two windows are those of earlier versions.
    """
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    n_random = max(min(n_windows, N_RANDOM), n_windows - len(EDGE_CASES))
    windows = _random_windows(np.random.default_rng(SEED), n_channels, n_samples, n_random)
    edge_rng = np.random.default_rng(SEED + 1)
    edges = {
        "zero": lambda: np.zeros((n_channels, n_samples)),
        "constant": lambda: np.full((n_channels, n_samples), CONSTANT),
        "low_amplitude": lambda: LOW_AMPLITUDE * edge_rng.standard_normal((n_channels, n_samples)),
        "dead_leads": lambda: _random_windows(edge_rng, n_channels, n_samples, 2)[1]
                              * (np.arange(n_channels) % DEAD_EVERY != 0)[:, None],
    }
    extra = [edges[name]() for name in EDGE_CASES[:n_windows - n_random]]
    return np.concatenate([windows, np.asarray(extra).reshape(-1, n_channels, n_samples)]).astype(np.float32)


def fixed_count_windows(n_channels: int, n_samples: int, n_windows: int = N_COUNT_WINDOWS) -> np.ndarray:
    """Deterministic int16 count windows (n_windows, C, T): EEG-like rhythms of a few hundred
    counts on per-channel DC offsets, with the cases normalisation must survive: channel 1 a
    constant DC_COUNTS (no signal), every DEAD_EVERY-th channel (0, 3, ...) a dead lead (zero)."""
    rng = np.random.default_rng(SEED + 2)
    uv = 300.0 * _random_windows(rng, n_channels, n_samples, n_windows + 1)[1:]
    x = uv + rng.uniform(-2000, 2000, (n_windows, n_channels, 1))
    if n_channels > 1:
        x[:, 1] = DC_COUNTS
    x[:, ::DEAD_EVERY] = 0
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _random_windows(rng: np.random.Generator, n_channels: int, n_samples: int, n_windows: int) -> np.ndarray:
    """Window 0 white noise, the others EEG-like rhythms plus noise (float64)."""
    t = np.arange(n_samples) / SAMPLE_RATE_HZ
    windows = rng.standard_normal((n_windows, n_channels, n_samples))
    for w in range(1, n_windows):
        freqs = rng.uniform(1.0, 30.0, size=(n_channels, 4, 1))
        amps = rng.uniform(0.2, 1.0, size=(n_channels, 4, 1))
        phases = rng.uniform(0.0, 2 * np.pi, size=(n_channels, 4, 1))
        rhythms = (amps * np.sin(2 * np.pi * freqs * t + phases)).sum(axis=1)
        windows[w] = rhythms + 0.3 * windows[w]
    return windows


def write_test_vectors(project_dir: str | Path, windows: np.ndarray, counts: np.ndarray | None = None) -> Path:
    """Write ``test_vectors.h`` with ``windows`` (n_windows, ...) as float32, C order per window,
    and ``counts`` (n, ...) as int16 count windows (none if None).

    Values are written as C99 hexadecimal floats (NAN / INFINITY for non-finite ones), so the
    firmware sees exactly the host's float32 bits (NaN payloads aside). A compile-time check
    fails the build if a window's length differs from LUMAMBA_N_CHANNELS * LUMAMBA_N_SAMPLES.
    """
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim < 2 or windows.shape[0] == 0:
        raise ValueError(f"windows must have shape (n_windows, ...) with n_windows >= 1, got {windows.shape}")
    flat = windows.reshape(windows.shape[0], -1)
    rows = [",\n".join(_c_float_rows(row)) for row in flat]
    body = "},\n{\n".join(rows)
    text = (
        "/* Generated by lumamba.export.project.test_vectors: test windows for firmware/app/main.c. */\n"
        "#ifndef LUMAMBA_TEST_VECTORS_H\n#define LUMAMBA_TEST_VECTORS_H\n\n"
        "#include <math.h>\n#include <stdint.h>\n\n"
        f"#define LUMAMBA_N_TEST_WINDOWS {flat.shape[0]}\n"
        f"#define LUMAMBA_TEST_WINDOW_LENGTH {flat.shape[1]}\n\n"
        "/* C99 has no static_assert: a negative array size stops the build on a shape mismatch. */\n"
        "typedef char lumamba_test_window_length_must_equal_channels_times_samples\n"
        "    [(LUMAMBA_TEST_WINDOW_LENGTH == LUMAMBA_N_CHANNELS * LUMAMBA_N_SAMPLES) ? 1 : -1];\n\n"
        "static const float lumamba_test_windows[LUMAMBA_N_TEST_WINDOWS][LUMAMBA_TEST_WINDOW_LENGTH] = {\n{\n"
        f"{body}\n}}\n}};\n\n{_counts_text(counts, flat.shape[1])}#endif\n"
    )
    path = Path(project_dir) / "test_vectors.h"
    write_if_changed(path, text.encode())
    return path


def _counts_text(counts: np.ndarray | None, length: int) -> str:
    """The int16 count windows of test_vectors.h (LUMAMBA_N_TEST_COUNT_WINDOWS may be 0)."""
    if counts is None or len(counts) == 0:
        return "#define LUMAMBA_N_TEST_COUNT_WINDOWS 0\n\n"
    counts = np.asarray(counts)
    if counts.dtype != np.int16 or counts[0].size != length:
        raise ValueError(f"count windows must be int16 of {length} values each, got {counts.dtype}{list(counts.shape)}")
    flat = counts.reshape(len(counts), -1).tolist()
    rows = [",\n".join(", ".join(map(str, row[i:i + 16])) for i in range(0, len(row), 16)) for row in flat]
    return (f"#define LUMAMBA_N_TEST_COUNT_WINDOWS {len(flat)}\n"
            "/* int16 ADC counts for lumamba_infer_counts(), reported after the float windows. */\n"
            "static const int16_t lumamba_test_windows_counts[LUMAMBA_N_TEST_COUNT_WINDOWS][LUMAMBA_TEST_WINDOW_LENGTH] = {\n{\n"
            + "\n},\n{\n".join(rows) + "\n}\n};\n\n")


def _c_float(x: float) -> str:
    if np.isnan(x):
        return "NAN"
    if np.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return float(x).hex() + "f"  # exact: every float32 is a double


def _c_float_rows(row: np.ndarray, per_line: int = 6) -> list[str]:
    values = [_c_float(x) for x in row.tolist()]
    return [", ".join(values[i:i + per_line]) for i in range(0, len(values), per_line)]


