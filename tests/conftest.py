"""Shared fixtures: the design facts (official_state_dict.json) beside the checkout."""
import json
from pathlib import Path

import pytest
import torch

DESIGN = Path(__file__).resolve().parents[2] / "shared" / "design"
TCP22 = ["FP1-F7", "F7-T3", "T3-T5", "T5-O1", "FP2-F8", "F8-T4", "T4-T6", "T6-O2", "T3-C3", "C3-CZ",
         "CZ-C4", "C4-T4", "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4", "F4-C4", "C4-P4", "P4-O2",
         "A1-T3", "T4-A2"]


@pytest.fixture(scope="session")
def official() -> dict:
    path = DESIGN / "official_state_dict.json"
    if not path.exists():
        pytest.skip(f"design facts not found at {path}")
    return json.loads(path.read_text())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
