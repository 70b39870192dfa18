"""Built-in montages against the published orders, and montage files."""

import json
import re
from pathlib import Path

import pytest

from lumamba.channels import CHANNEL_VOCABULARY, ChannelError, parse_channel
from lumamba.montages import MONTAGES, load_montage
from lumamba.positions import electrode_positions

DESIGN = Path(__file__).parents[2] / "shared/design"


@pytest.fixture(scope="module")
def official():
    path = DESIGN / "official_state_dict.json"
    if not path.is_file():
        pytest.skip(f"published reference {path} is not in this checkout")
    return json.loads(path.read_text())


def test_tcp22_is_the_published_code_order(official):
    assert list(MONTAGES["tcp22"]) == official["channel_order_tcp_published_code"]


def test_apava16_is_the_published_order(official):
    assert list(MONTAGES["apava16"]) == [n.upper() for n in official["channel_order_apava"]]


def test_tcp22_official_is_the_order_in_the_reference():
    reference = DESIGN / "REFERENCE.md"
    if not reference.is_file():
        pytest.skip(f"{reference} is not in this checkout")
    text = " ".join(reference.read_text().split())
    listed = re.search(r"Official TCP order: (.*?)\. \(", text).group(1).split()
    assert list(MONTAGES["tcp22_official"]) == listed
    assert MONTAGES["tcp22_official"][8] == "A1-T3"


def test_tcp_montages_hold_the_same_channels():
    assert sorted(MONTAGES["tcp22"]) == sorted(MONTAGES["tcp22_official"])
    tcp20 = MONTAGES["tcp20"]
    assert len(tcp20) == 20 and len(set(tcp20)) == 20
    assert list(tcp20) == [ch for ch in MONTAGES["tcp22"] if ch not in ("A1-T3", "T4-A2")]
    assert not {"A1", "A2"} & {e for ch in tcp20 for e in parse_channel(ch)}


@pytest.mark.parametrize("name", sorted(MONTAGES))
def test_builtin_montages_are_valid(name):
    channels = load_montage(name)
    assert channels == list(MONTAGES[name]) and len(set(channels)) == len(channels)
    assert all(ch in CHANNEL_VOCABULARY for ch in channels)
    assert electrode_positions(channels).shape == (len(channels), 3)
    channels.append("CZ")  # the caller gets a copy
    assert "CZ" not in MONTAGES[name]


def test_load_montage_from_file(tmp_path):
    path = tmp_path / "cap.txt"
    path.write_text("# my cap\nfp1-f7\n\nF7-T3, t3-t5  # temporal chain\n Cz ,\nCB1\n")
    assert load_montage(str(path)) == ["FP1-F7", "F7-T3", "T3-T5", "CZ", "CB1"]
    assert load_montage(path) == load_montage(str(path))  # a Path works too


def test_missing_file_is_rejected(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ChannelError, match=re.escape(str(missing))) as err:
        load_montage(str(missing))
    assert "tcp22" in str(err.value)  # says what is accepted


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# only a comment\n\n , \n")
    with pytest.raises(ChannelError, match=re.escape(f"{path}: montage file lists no channels")):
        load_montage(str(path))


def test_duplicate_is_rejected_with_file_and_line(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("FP1-F7\nCZ\nfp1-f7\n")
    with pytest.raises(ChannelError, match=re.escape(f"{path}:3: duplicate channel 'FP1-F7' (first listed on line 1)")):
        load_montage(str(path))


def test_unknown_channel_is_rejected_with_file_line_and_name(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("FP1-F7\n# comment\nCZ, FP1-QQ\n")
    with pytest.raises(ChannelError, match=re.escape(f"{path}:3: channel 'FP1-QQ'")) as err:
        load_montage(str(path))
    assert "'QQ'" in str(err.value)
