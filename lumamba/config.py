"""Model sizes as a dataclass, with the paper's `tiny` and two microcontroller-sized configs."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class LuMambaConfig:
    """Hyper-parameters of LuMamba. Derived sizes are properties, so a config is fully
    described by these fields (they are what checkpoints store as metadata)."""

    patch_size: int = 40          # samples per patch; T must be a multiple of it
    embed_dim: int = 64           # E: token width before channel unification
    num_queries: int = 6          # Q: learned queries of the channel-unification cross-attention
    num_heads: int = 2
    mlp_ratio: float = 4.0
    n_query_layers: int = 3       # self-attention layers among the Q queries
    n_blocks: int = 2             # pre-norm bidirectional Mamba blocks
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    head: str = "mamba"           # classification head: "mamba" (the paper's) or "linear"
    head_hidden: int = 256        # width of the Mamba classification head
    head_expand: int = 2
    dropout: float = 0.1          # attention/FFN dropout of channel unification (published value)
    position_noise_std: float = 0.02  # electrode-position jitter, training only (never at inference)

    def __post_init__(self) -> None:
        if self.embed_dim % 16 != 0:
            raise ValueError(f"embed_dim must be a multiple of 16 (4 conv positions x GroupNorm(4)), got {self.embed_dim}")
        if self.patch_size % 4 != 0 or self.patch_size < 8:
            raise ValueError(f"patch_size must be a multiple of 4 and >= 8, got {self.patch_size}")
        if self.head not in ("mamba", "linear"):
            raise ValueError(f"head must be 'mamba' or 'linear', got {self.head!r}")

    @property
    def d_model(self) -> int:
        """Width of the temporal model: Q * E."""
        return self.num_queries * self.embed_dim

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.d_model / 16)

    @property
    def head_dt_rank(self) -> int:
        return math.ceil(self.head_hidden / 16)

    @property
    def n_freq_bins(self) -> int:
        return self.patch_size // 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LuMambaConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**d)


CONFIGS: dict[str, LuMambaConfig] = {
    # The paper's LuMamba-Tiny: 4,094,777 encoder parameters, 4,631,611 with the 2-class Mamba head.
    "tiny": LuMambaConfig(),
    # Microcontroller-sized: d_model 128; int8 weights fit in 1 MiB of flash.
    "small": LuMambaConfig(embed_dim=32, num_queries=4, n_query_layers=2, head_hidden=64, d_state=8),
    # Smallest useful config for fast emulation in CI: d_model 64, one block.
    "micro": LuMambaConfig(embed_dim=32, num_queries=2, n_query_layers=1, n_blocks=1, head_hidden=32, d_state=8),
}


def get_config(name: str) -> LuMambaConfig:
    """Look up a named config; an unknown name is an error listing the known ones."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; known configs: {', '.join(CONFIGS)}") from None
