"""The quantisation config: which Linear/Conv/MatMul nodes run in int8 and which stay float.

A JSON (or TOML) file with up to two lists of patterns; every other key is an error:

    {"float": ["classifier.fc3", "cross_attn.query_self_attn.*", "block0_fwd:node_linear_3"],
     "int8":  ["frontend:node_matmul*"]}

A pattern without ':' is a glob on a node's layer name, the state-dict prefix of its weight
(`mamba_blocks.0.mamba_fwd.in_proj`, `patch_embed.proj_in.0`, ...); `graph:node` is a glob on the
manifest graph name and the ONNX node name. Defaults: every node whose weight is a model parameter
is int8; nodes with fixed, non-learned weights (the DFT basis of the frequency path) are float.
`int8` opts such nodes in; `float` moves nodes out. A pattern that matches no quantisable node, or
a node named by both lists, is an error naming it. `lumamba.quant.candidates(export_dir)` lists
the names.
"""
from __future__ import annotations

import fnmatch
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

KEYS = ("float", "int8")


@dataclass(frozen=True)
class Candidate:
    """A node that can run in int8: a Gemm/MatMul/Conv with a constant weight."""

    graph: str
    node: str
    layer: str            # state-dict prefix of the weight, or "<graph>:<node>" for fixed weights
    learned: bool         # weight is a model parameter (default int8) or a fixed transform (default float)


@dataclass
class QuantConfig:
    """Patterns forcing nodes to float or to int8 (see the module docstring)."""

    float: list[str] = field(default_factory=list)
    int8: list[str] = field(default_factory=list)
    source: str = "<defaults>"

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "QuantConfig":
        if not isinstance(d, dict):
            raise ValueError(f"{source}: a quantisation config is a mapping with keys {KEYS}, got {type(d).__name__}")
        unknown = sorted(set(d) - set(KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; a quantisation config has {list(KEYS)}")
        lists = {}
        for key in KEYS:
            value = d.get(key, [])
            if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
                raise ValueError(f"{source}: {key!r} must be a list of non-empty pattern strings, got {value!r}")
            lists[key] = list(value)
        return cls(lists["float"], lists["int8"], source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QuantConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"quantisation config not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({e})") from e
        return cls.from_dict(d, str(path))

    def with_int8_nodes(self, candidates: Iterable[Candidate]) -> "QuantConfig":
        """The same decisions, the `int8` opt-ins listed node by node (`graph:node`, glob
        characters escaped): the precision search can then move one of them to float by removing
        its entry instead of naming it in both lists. Raises as `decide` on a bad config."""
        candidates = list(candidates)
        decided = self.decide(candidates)
        int8 = [literal_pattern(f"{c.graph}:{c.node}") for c in candidates
                if not c.learned and decided[(c.graph, c.node)]]
        return QuantConfig(list(self.float), int8, self.source)

    def to_dict(self) -> dict:
        return {"float": list(self.float), "int8": list(self.int8)}

    def decide(self, candidates: Iterable[Candidate]) -> dict[tuple[str, str], bool]:
        """(graph, node) -> True for int8. Raises naming unmatched patterns and conflicts."""
        candidates = list(candidates)
        hits = {key: {p: [c for c in candidates if _matches(p, c)] for p in getattr(self, key)} for key in KEYS}
        unmatched = [f"{key}: {p!r}" for key in KEYS for p, found in hits[key].items() if not found]
        if unmatched:
            layers = sorted({c.layer for c in candidates})
            raise ValueError(f"{self.source}: pattern(s) match no quantisable node: {', '.join(unmatched)}. "
                             f"Layers: {', '.join(layers)} (or use graph:node)")
        forced = {key: {(c.graph, c.node) for found in hits[key].values() for c in found} for key in KEYS}
        both = sorted(forced["float"] & forced["int8"])
        if both:
            raise ValueError(f"{self.source}: node(s) named by both 'float' and 'int8': "
                             f"{', '.join(f'{g}:{n}' for g, n in both)}")
        return {(c.graph, c.node): (c.learned or (c.graph, c.node) in forced["int8"])
                and (c.graph, c.node) not in forced["float"] for c in candidates}


def literal_pattern(name: str) -> str:
    """A glob matching exactly `name` (a layer name or `graph:node`)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _matches(pattern: str, c: Candidate) -> bool:
    if ":" in pattern:
        graph, node = pattern.split(":", 1)
        return fnmatch.fnmatchcase(c.graph, graph) and fnmatch.fnmatchcase(c.node, node)
    return fnmatch.fnmatchcase(c.layer, pattern)


def as_config(config: "QuantConfig | dict | str | os.PathLike | None") -> QuantConfig:
    """A QuantConfig from None (defaults), a dict, a file path or a QuantConfig."""
    if config is None:
        return QuantConfig()
    if isinstance(config, QuantConfig):
        return config
    if isinstance(config, dict):
        return QuantConfig.from_dict(config)
    return QuantConfig.load(config)
