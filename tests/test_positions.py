"""Channel names and electrode positions against the published values and independent MNE calls."""

import json
import re
from pathlib import Path

import mne
import numpy as np
import pytest
import torch
from mne.channels import compute_native_head_t
from mne.transforms import apply_trans

from lumamba.channels import (
    CHANNEL_VOCABULARY,
    ChannelError,
    normalise_channel_name,
    parse_channel,
    vocabulary_index,
)
from lumamba.positions import electrode_positions, nerf_encode, normalise_positions

OFFICIAL_JSON = Path(__file__).parents[2] / "shared/design/official_state_dict.json"

# The JSON stores positions rounded to 1e-9 m; 1e-6 m (1 micrometre) is the required match and
# is still four orders of magnitude below the millimetre scale on which electrodes differ.
POSITION_TOL_M = 1e-6


@pytest.fixture(scope="module")
def official():
    if not OFFICIAL_JSON.is_file():
        pytest.skip(f"published reference {OFFICIAL_JSON} is not in this checkout")
    return json.loads(OFFICIAL_JSON.read_text())


def _montage():
    kind = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    return mne.channels.make_standard_montage(kind)


def _mne_head_positions(electrodes):
    """All electrodes set on one Info together, the way the published code does it."""
    info = mne.create_info(list(electrodes), 256.0, "eeg", verbose=False)
    info.set_montage(_montage(), match_case=False, match_alias={"cb1": "POO7", "cb2": "POO8"}, verbose=False)
    return info.get_montage().get_positions()["ch_pos"]


def test_vocabulary_is_the_published_list(official):
    assert list(CHANNEL_VOCABULARY) == official["channel_vocabulary"]["names"]
    assert len(CHANNEL_VOCABULARY) == 90
    assert list(CHANNEL_VOCABULARY) == sorted(CHANNEL_VOCABULARY)


def test_positions_match_published(official):
    published = official["electrode_positions_m_head_frame"]
    expected = np.array([published[name] for name in CHANNEL_VOCABULARY])
    got = electrode_positions(CHANNEL_VOCABULARY)
    assert got.shape == (90, 3) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=POSITION_TOL_M)


def test_head_frame_matches_fiducial_transform_for_any_1005_electrode():
    # Independent route to the head frame: native montage coordinates moved by the transform
    # MNE derives from the fiducials. Exercises electrodes outside the vocabulary.
    montage = _montage()
    native = montage.get_positions()["ch_pos"]
    to_head = compute_native_head_t(montage)
    names = ["TP10", "AFF1h", "I1", "M1", "Fp1"]
    expected = np.array([apply_trans(to_head, native[n]) for n in names])
    np.testing.assert_allclose(electrode_positions(names), expected, rtol=0, atol=1e-12)
    # And the head frame really differs from the native one (by centimetres, not rounding).
    native_fp1 = np.asarray(native["Fp1"])
    assert np.abs(electrode_positions(["FP1"])[0] - native_fp1).max() > 0.01


def test_bipolar_is_midpoint_of_its_electrodes():
    bipolar = [name for name in CHANNEL_VOCABULARY if "-" in name]
    electrodes = sorted({e for name in bipolar for e in name.split("-")})
    ch_pos = _mne_head_positions(electrodes)
    expected = np.array([(ch_pos[a] + ch_pos[b]) / 2 for a, b in (name.split("-") for name in bipolar)])
    np.testing.assert_allclose(electrode_positions(bipolar), expected, rtol=0, atol=1e-12)


def test_names_are_case_insensitive():
    assert normalise_channel_name("Fp1") == "FP1"
    assert normalise_channel_name(" fp1 - f7 ") == "FP1-F7"
    assert parse_channel("fp1-f7") == ("FP1", "F7")
    assert parse_channel("Cz") == ("CZ", None)
    np.testing.assert_array_equal(electrode_positions(["fp1-f7", "cz"]), electrode_positions(["FP1-F7", "CZ"]))


@pytest.mark.parametrize("old, new", [("T3", "T7"), ("T4", "T8"), ("T5", "P7"), ("T6", "P8"), ("CB1", "POO7"), ("CB2", "POO8")])
def test_old_and_alias_names_coincide(old, new):
    np.testing.assert_allclose(electrode_positions([old]), electrode_positions([new]), rtol=0, atol=1e-12)


def test_positions_follow_names_not_order():
    names = ["FP1-F7", "CZ", "T4-A2"]
    forward = electrode_positions(names)
    np.testing.assert_array_equal(electrode_positions(names[::-1]), forward[::-1])


@pytest.mark.parametrize("bad", ["XX1", "FP1-QQ", "", "FP1-F7-O1", "FP1-", "CZ-CZ"])
def test_unknown_channels_are_rejected_naming_the_channel(bad):
    with pytest.raises(ChannelError, match=re.escape(repr(bad))):
        parse_channel(bad)
    with pytest.raises(ChannelError, match=re.escape(repr(bad))):
        electrode_positions(["CZ", bad])


def test_unknown_electrode_is_named():
    with pytest.raises(ChannelError, match="'QQ'"):
        parse_channel("FP1-QQ")


def test_empty_channel_list_is_rejected():
    with pytest.raises(ChannelError):
        electrode_positions([])


def test_vocabulary_index():
    assert vocabulary_index("fp1-f7") == CHANNEL_VOCABULARY.index("FP1-F7")
    assert vocabulary_index("A1-T3") == 0
    assert vocabulary_index("TP10") is None  # a valid electrode, but not in the vocabulary
    assert vocabulary_index("F7-FP1") is None  # reversed pair is a different channel


def test_normalise_positions_per_sample_and_axis():
    generator = torch.Generator().manual_seed(0)
    pos = torch.randn(2, 7, 3, generator=generator, dtype=torch.float64)
    pos[1] = pos[1] * 5 + 3  # a second sample on a very different scale
    out = normalise_positions(pos)
    p = pos.numpy()
    low, high = p.min(axis=1, keepdims=True), p.max(axis=1, keepdims=True)
    np.testing.assert_allclose(out.numpy(), (p - low) / (high - low + 1e-8), rtol=0, atol=1e-15)
    # Each axis of each sample spans [0, 1] (up to the 1e-8 epsilon relative to the range).
    np.testing.assert_allclose(out.amin(dim=1).numpy(), 0.0, atol=1e-15)
    np.testing.assert_allclose(out.amax(dim=1).numpy(), 1.0, atol=1e-7)
    # Samples do not mix: changing sample 1 leaves sample 0 untouched.
    changed = pos.clone()
    changed[1] = changed[1] * 100 - 7
    torch.testing.assert_close(normalise_positions(changed)[0], out[0], rtol=0, atol=0)


def test_normalise_positions_degenerate_axis_stays_finite():
    pos = torch.tensor([[[0.1, 0.2, 0.5], [0.3, 0.2, 0.5]]])  # y and z constant
    out = normalise_positions(pos)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]), rtol=0, atol=1e-6)


def test_nerf_encode_layout():
    generator = torch.Generator().manual_seed(1)
    pos = torch.rand(2, 4, 3, generator=generator, dtype=torch.float64)
    n_freqs, dim = 10, 64
    out = nerf_encode(pos, n_freqs=n_freqs, dim=dim)
    assert out.shape == (2, 4, dim)
    expected = np.zeros((2, 4, dim))
    p = pos.numpy()
    for b in range(2):
        for c in range(4):
            for k in range(n_freqs):
                for axis in range(3):
                    expected[b, c, k * 6 + axis * 2 + 0] = np.sin(2.0**k * p[b, c, axis])
                    expected[b, c, k * 6 + axis * 2 + 1] = np.cos(2.0**k * p[b, c, axis])
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-12)
    assert (out[..., 6 * n_freqs :] == 0).all()


def test_nerf_encode_shapes_and_limits():
    pos = torch.rand(5, 3)
    assert nerf_encode(pos, n_freqs=4, dim=30).shape == (5, 30)
    assert nerf_encode(pos, n_freqs=4, dim=24).shape == (5, 24)  # no padding needed
    with pytest.raises(ValueError, match="dim=20"):
        nerf_encode(pos, n_freqs=4, dim=20)
    with pytest.raises(ValueError, match="shape"):
        nerf_encode(torch.rand(5, 2))
