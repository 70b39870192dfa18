"""Preprocessing: filters, 256 Hz, TCP montage, 5 s windows, z-score, rejected signals."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from lumamba.data.channels import TCP20, TCP22, TUH_ELECTRODES
from lumamba.data.edf_reader import read_edf
from lumamba.data.errors import UnusableRecording
from lumamba.data.preprocess import (PreprocessConfig, cut_windows, derive_montage,
                                     filter_and_resample, preprocess, zscore)
from lumamba.data.synth import write_tuh_edf

# The TCP montage as published (pre-training order: A1-T3 and T4-A2 last), written out here
# independently of lumamba.data.channels.
PUBLISHED_TCP = ("FP1-F7 F7-T3 T3-T5 T5-O1 FP2-F8 F8-T4 T4-T6 T6-O2 T3-C3 C3-CZ CZ-C4 C4-T4 "
                 "FP1-F3 F3-C3 C3-P3 P3-O1 FP2-F4 F4-C4 C4-P4 P4-O2 A1-T3 T4-A2").split()


def referential(fs: float, seconds: float, electrodes=TUH_ELECTRODES, seed: int = 0) -> np.ndarray:
    """Rows that differ per electrode (own sinusoid + noise + a shared reference signal), in uV."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(fs * seconds))) / fs
    common = 15 * np.sin(2 * np.pi * 3.3 * t)
    return np.stack([(10 + i) * np.sin(2 * np.pi * (2 + 1.5 * i) * t) + common
                     + 5 * rng.standard_normal(t.size) for i, _ in enumerate(electrodes)])


def test_constants_follow_the_published_order():
    assert list(TCP22) == PUBLISHED_TCP
    assert list(TCP20) == PUBLISHED_TCP[:20]


def test_filters_match_the_mne_raw_pipeline():
    # The LUNA/LaBraM TUAB scripts call raw.filter(0.1, 75), raw.notch_filter(60),
    # raw.resample(256); the array functions must reproduce them. Both are float64; the
    # difference is summation-order noise, ~1e-13 uV on signals of ~20 uV, so 1e-9 uV is loose.
    rng = np.random.default_rng(0)
    for fs in (250.0, 512.0):
        x = 20 * rng.standard_normal((3, int(fs * 40)))
        raw = mne.io.RawArray(x * 1e-6, mne.create_info(3, fs, "eeg"), verbose="error")
        raw.filter(0.1, 75.0, verbose="error")
        raw.notch_filter(60.0, verbose="error")
        raw.resample(256.0, verbose="error")
        np.testing.assert_allclose(filter_and_resample(x, fs), raw.get_data() * 1e6,
                                   rtol=0, atol=1e-9)


def _amplitude(y: np.ndarray, fs: float, f: float) -> float:
    spectrum = np.abs(np.fft.rfft(y)) * 2 / y.size
    return spectrum[int(round(f * y.size / fs))]


@pytest.mark.parametrize("fs", [250.0, 512.0])
def test_filter_response(fs):
    t = np.arange(int(fs * 40)) / fs
    tones = {10.0: 20.0, 60.0: 20.0, 30.0: 20.0}
    x = sum(a * np.sin(2 * np.pi * f * t) for f, a in tones.items())[None]
    y = filter_and_resample(x, fs)[0]
    middle = y[256 * 10: 256 * 30]  # 20 s away from the edges: whole cycles of every tone
    assert _amplitude(middle, 256.0, 10.0) == pytest.approx(20.0, rel=0.01)  # pass band
    assert _amplitude(middle, 256.0, 30.0) == pytest.approx(20.0, rel=0.01)
    assert _amplitude(middle, 256.0, 60.0) < 20.0 * 10 ** (-30 / 20)  # notch: > 30 dB down


@pytest.mark.parametrize("fs", [250.0, 256.0, 512.0])
def test_each_rate_gives_256_hz_and_floor_duration_over_5_windows(tmp_path, fs):
    seconds = 47  # 9 whole windows and a 2 s tail
    x = referential(fs, seconds)
    write_tuh_edf(tmp_path / "x.edf", [(f"EEG {e}-REF", row, fs, "uV")
                                       for e, row in zip(TUH_ELECTRODES, x)])
    signals = read_edf(tmp_path / "x.edf")
    windows = preprocess(signals.data, signals.channels, signals.sfreq)
    assert windows.data.shape == (seconds // 5, 22, 1280)
    assert windows.data.dtype == np.float32
    assert windows.channels == PUBLISHED_TCP
    resampled = filter_and_resample(signals.data, signals.sfreq)
    assert resampled.shape[1] == seconds * 256
    # FP1 carries a 10 uV tone at 2 Hz (94 whole cycles): after resampling to 256 Hz it must
    # still be there with its amplitude (the white noise adds ~0.1 uV per bin, hence 2 %).
    assert _amplitude(resampled[0], 256.0, 2.0) == pytest.approx(10.0, rel=0.02)


def test_montage_with_and_without_ears():
    x = referential(256.0, 10)
    assert preprocess(x, TUH_ELECTRODES, 256.0).channels == PUBLISHED_TCP
    keep = [i for i, e in enumerate(TUH_ELECTRODES) if e not in ("A1", "A2")]
    without = preprocess(x[keep], [TUH_ELECTRODES[i] for i in keep], 256.0)
    assert without.channels == PUBLISHED_TCP[:20]
    assert without.data.shape == (2, 20, 1280)


@pytest.mark.parametrize("fs", [250.0, 512.0])
def test_bipolar_is_the_difference_of_the_preprocessed_electrodes(fs):
    x = referential(fs, 23)
    order = np.random.default_rng(3).permutation(len(TUH_ELECTRODES))  # rows in any order
    names = [TUH_ELECTRODES[i] for i in order]
    rows = x[order]
    filtered = filter_and_resample(rows, fs)
    derived, channels = derive_montage(filtered, names, "tcp")
    # Independent computation: subtract the raw electrodes first, then filter and resample the
    # difference (the chain is linear, so the order must not matter).
    index = {e: i for i, e in enumerate(names)}
    expected = np.stack([filter_and_resample((rows[index[a]] - rows[index[b]])[None], fs)[0]
                         for a, b in (p.split("-") for p in PUBLISHED_TCP)])
    assert channels == PUBLISHED_TCP
    # float64 through FFT filters: differences are rounding noise (~1e-13 uV on ~30 uV).
    np.testing.assert_allclose(derived, expected, rtol=0, atol=1e-9)
    windows = preprocess(rows, names, fs)
    reference = expected[:, : 4 * 1280].reshape(22, 4, 1280).transpose(1, 0, 2)
    reference = (reference - reference.mean(-1, keepdims=True)) / (
        reference.std(-1, ddof=1, keepdims=True) + 1e-8)
    # The cache stores float32: z-scores of size ~1-4 round at ~2e-7 relative.
    np.testing.assert_allclose(windows.data, reference, rtol=0, atol=1e-5)


def test_cut_windows_drops_the_tail():
    x = np.arange(2 * (3 * 1280 + 100), dtype=float).reshape(2, -1)
    w = cut_windows(x, 1280)
    assert w.shape == (3, 2, 1280)
    for k in range(3):
        np.testing.assert_array_equal(w[k], x[:, k * 1280:(k + 1) * 1280])


def test_zscore_per_window_and_channel_with_unbiased_std():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 1280)) * np.array([1.0, 30.0, 0.01])[None, :, None] + 7.0
    z = zscore(w)
    np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-12)
    # std + 1e-8 in the denominator: the unbiased std of z is exactly std / (std + 1e-8).
    std = w.std(-1, ddof=1)
    np.testing.assert_allclose(z.std(-1, ddof=1), std / (std + 1e-8), rtol=1e-12)
    # ddof=0 would give sqrt(1279/1280) = 0.99961 instead.
    np.testing.assert_allclose(z.std(-1), np.sqrt(1279 / 1280) * std / (std + 1e-8), rtol=1e-12)
    flat = zscore(np.full((1, 1, 1280), 5.0))
    np.testing.assert_array_equal(flat, 0.0)


def _rejected(data, names=TUH_ELECTRODES, fs=256.0, **kw) -> UnusableRecording:
    with pytest.raises(UnusableRecording) as info:
        preprocess(data, names, fs, **kw)
    return info.value


def test_non_finite_channel_is_named():
    x = referential(256.0, 10)
    x[4, 100] = np.nan
    x[7, 5] = np.inf
    exc = _rejected(x, labels=[f"EEG {e}-REF" for e in TUH_ELECTRODES])
    assert exc.reason == "non-finite samples"
    assert exc.detail == "channel(s) EEG C3-REF, EEG P4-REF"


def test_flat_channel_is_named():
    x = referential(256.0, 10)
    x[TUH_ELECTRODES.index("O1")] = 12.5  # a constant offset is still flat
    exc = _rejected(x)
    assert exc.reason == "flat channel" and exc.detail.startswith("O1 (std 0")


def test_identical_electrodes_give_a_flat_derivation():
    x = referential(256.0, 10)
    x[TUH_ELECTRODES.index("CZ")] = x[TUH_ELECTRODES.index("C3")]
    exc = _rejected(x)
    assert exc.reason == "flat channel" and exc.detail.startswith("C3-CZ after filtering")


def test_too_short_for_one_window():
    exc = _rejected(referential(256.0, 4.9))
    assert exc.reason == "too short" and exc.detail == "4.90 s, one window needs 5 s"
    assert preprocess(referential(256.0, 5.0), TUH_ELECTRODES, 256.0).data.shape[0] == 1


def test_custom_config_changes_the_windows():
    config = PreprocessConfig(sfreq=200.0, window_s=4.0, notch=50.0)
    windows = preprocess(referential(250.0, 13), TUH_ELECTRODES, 250.0, config=config)
    assert windows.data.shape == (3, 22, 800)
