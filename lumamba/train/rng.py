"""Stateless random streams: a generator is a function of (seed, purpose, step, ...), so a resumed
run draws exactly what the uninterrupted one did and ranks can share or split streams at will."""
from __future__ import annotations

import numpy as np
import torch

# Purposes, so two streams with the same numbers never coincide.
EPOCH_ORDER, TRAIN_DRAW, SHARED_DRAW, VAL_DRAW = 1, 2, 3, 4


def generator(*key: int) -> torch.Generator:
    """A CPU torch.Generator seeded from a tuple of non-negative ints (mixed by NumPy's SeedSequence)."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)
