"""Band-power features of the baseline."""

from __future__ import annotations

import numpy as np
import pytest

from lumamba.data.baseline import BANDS, band_power_features


@pytest.mark.parametrize("freq, band", [(2.0, 0), (6.0, 1), (10.0, 2), (20.0, 3), (40.0, 4)])
def test_a_tone_puts_its_power_in_its_band(freq, band):
    t = np.arange(1280) / 256.0
    amplitude = 3.0
    windows = (amplitude * np.sin(2 * np.pi * freq * t))[None, None, :]
    features = band_power_features(windows, 256.0).reshape(len(BANDS))
    # Welch density over 1 Hz bins sums to the variance, A^2 / 2, when the Hann-smeared peak
    # (+-2 bins) lies inside the band; the tones sit >= 2 Hz from every band edge.
    assert features[band] == pytest.approx(np.log10(amplitude ** 2 / 2), abs=1e-6)
    others = np.delete(features, band)
    assert np.all(others < features[band] - 6)  # leakage elsewhere is > 60 dB down


def test_features_are_channel_major():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((3, 1, 1280))
    windows = np.concatenate([noise, 10 * noise], axis=1)  # channel 1 = channel 0, 100x power
    features = band_power_features(windows, 256.0)
    assert features.shape == (3, 2 * len(BANDS))
    np.testing.assert_allclose(features[:, len(BANDS):] - features[:, :len(BANDS)], 2.0,
                               atol=1e-9)
