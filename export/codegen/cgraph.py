"""`CGraph`: one graph compiled to C, the code generator's product.

Both front ends (`onnx_frontend`, `qgraph_frontend`) return it; the project stage writes its
sources into a firmware project and calls `<name>_run()` from the model driver.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .plan import PortSpec
from .weight_prep import run_preparation


@dataclass
class CGraph:
    """One graph compiled to C.

    `driver_c` defines `int <name>_run(inputs..., outputs..., uint8_t *arena)`; `inputs` lists
    the pointer arguments in order (data inputs, then the prepared weights when weights are
    inputs).  `kernels_c` holds the kernels (symbols `<name>_k<i>_...`), `weights_c` the
    constants that stayed constants (`const` arrays, so they go to flash), `header_c` the
    prototypes and the `<NAME>_ARENA_BYTES`, `<NAME>_IN<i>_SIZE/_SHAPE`, ... macros.
    """

    name: str
    kernels_c: str
    driver_c: str
    header_c: str
    weights_c: str
    arena_bytes: int
    inputs: list[PortSpec]
    outputs: list[PortSpec]
    weights: list[PortSpec] = field(default_factory=list)  # prepared weights, last in inputs
    kernel_symbols: list[str] = field(default_factory=list)
    # Host-side graph mapping the raw weights (`weights_as_inputs`) to the prepared `weights`
    # the C takes (e.g. transposed matrices); None when no weight is an input.
    weight_prep: onnx.ModelProto | None = None
    arena_lower_bound: int = 0    # the most arena bytes alive at one kernel call (arena.lower_bound)

    def prepare_weights(self, raw: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The weight arguments of `<name>_run()` (in order) from the raw initializer values."""
        if self.weight_prep is None:
            return []
        return run_preparation(self.weight_prep, raw)

    def sources(self) -> dict[str, str]:
        """File name -> content of the four files that make up the graph."""
        return {
            f"{self.name}.h": self.header_c,
            f"{self.name}_kernels.c": self.kernels_c,
            f"{self.name}_weights.c": self.weights_c,
            f"{self.name}_driver.c": self.driver_c,
        }

    def write(self, directory: str | Path) -> list[Path]:
        """Write `sources()` into `directory`; returns the paths written."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for fname, text in self.sources().items():
            path = out / fname
            path.write_text(text)
            paths.append(path)
        return paths
