"""Model sizes as a dataclass, with the paper's `tiny` and two microcontroller-sized configs."""
from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, fields

# A config that would need more parameters than this is refused before anything is allocated:
# the paper's tiny model has 4.6 M, and 1e9 float32 parameters are already 4 GB.
MAX_PARAMETERS = 1_000_000_000


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
        self._check_types()
        positive = ("patch_size", "embed_dim", "num_queries", "num_heads", "n_query_layers", "n_blocks",
                    "d_state", "d_conv", "expand", "head_hidden", "head_expand")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.mlp_ratio) and self.mlp_ratio > 0):
            raise ValueError(f"mlp_ratio must be a positive finite number, got {self.mlp_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.position_noise_std) and self.position_noise_std >= 0):
            raise ValueError(f"position_noise_std must be a finite number >= 0, got {self.position_noise_std}")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(f"num_heads ({self.num_heads}) must divide embed_dim ({self.embed_dim})")
        if self.embed_dim % 16 != 0:
            raise ValueError(f"embed_dim must be a multiple of 16 (4 conv positions x GroupNorm(4)), got {self.embed_dim}")
        if self.patch_size % 4 != 0 or self.patch_size < 8:
            raise ValueError(f"patch_size must be a multiple of 4 and >= 8, got {self.patch_size}")
        if self.head not in ("mamba", "linear"):
            raise ValueError(f"head must be 'mamba' or 'linear', got {self.head!r}")
        n = self.approx_parameters()
        if n > MAX_PARAMETERS:
            raise ValueError(f"sizes give about {n:.3g} parameters, more than the {MAX_PARAMETERS:.0e} allowed "
                             f"(embed_dim {self.embed_dim}, num_queries {self.num_queries}, n_blocks "
                             f"{self.n_blocks}, expand {self.expand}, head_hidden {self.head_hidden})")

    def _check_types(self) -> None:
        """Each field has its declared type (checkpoint metadata is untrusted JSON)."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            if hint is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                continue
            if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
                raise ValueError(f"{f.name} must be {hint.__name__}, got {value!r}")
            if hint is float and not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite, got {value!r}")

    def approx_parameters(self) -> int:
        """An estimate (within about ten per cent) of the classifier's parameter count, from the sizes
        alone: used to refuse absurd configs before allocating them."""
        E, ff = self.embed_dim, int(self.mlp_ratio * self.embed_dim)
        attention = 4 * E * E + 2 * E * ff
        unification = attention * (1 + self.n_query_layers)
        embed = (self.n_freq_bins + self.patch_size) * E + 16 * E * E

        def mamba(d: int, expand: int) -> int:
            di, rank = expand * d, math.ceil(d / 16)
            return 2 * (3 * d * di + di * (self.d_conv + rank + 3 * self.d_state + rank + 2))

        temporal = self.n_blocks * mamba(self.d_model, self.expand)
        head = mamba(self.head_hidden, self.head_expand) + self.d_model * self.head_hidden
        return int(embed + unification + temporal + head)
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
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
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
