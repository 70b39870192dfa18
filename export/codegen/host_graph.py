"""Build a compiled graph's C as a host shared library and call it from Python (for tests
and host-side verification against onnxruntime)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cgraph import CGraph

HOST_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-fPIC")
GUARD_BYTES = 64  # canary after the arena and after each output, checked after every call
_CANARY = 0xA5


def _guarded(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """A 16-byte aligned uint8 view of `nbytes`, followed by GUARD_BYTES of canary."""
    raw = np.full(nbytes + GUARD_BYTES + 16, _CANARY, dtype=np.uint8)
    start = (-raw.ctypes.data) % 16
    return raw[start:start + nbytes], raw[start + nbytes:start + nbytes + GUARD_BYTES]


class HostGraph:
    """`<name>_run()` loaded from a shared library; call it with numpy arrays.

    Every call checks that the C wrote nothing past the end of the arena or of an output
    (so `<NAME>_ARENA_BYTES` and the output sizes are proven sufficient, not assumed).
    """

    def __init__(self, graph: CGraph, library: Path):
        self.graph = graph
        self._lib = ctypes.CDLL(str(library))
        self.c_run = getattr(self._lib, f"{graph.name}_run")  # the raw ctypes function
        self.c_run.restype = ctypes.c_int
        self.arena, self._arena_guard = _guarded(graph.arena_bytes)

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        specs = self.graph.inputs
        if len(inputs) != len(specs):
            raise ValueError(f"{self.graph.name}: expected {len(specs)} inputs, got {len(inputs)}")
        args = []
        for spec, value in zip(specs, inputs):
            value = np.asarray(value)
            if value.shape != spec.shape or value.dtype != np.dtype(spec.dtype):
                raise ValueError(f"{self.graph.name}: input {spec.name} must be {spec.dtype}"
                                 f"{list(spec.shape)}, got {value.dtype}{list(value.shape)}")
            args.append(np.ascontiguousarray(value))
        outputs = [_guarded(s.nbytes) for s in self.graph.outputs]
        pointers = [a.ctypes.data_as(ctypes.c_void_p) for a in args]
        pointers += [buf.ctypes.data_as(ctypes.c_void_p) for buf, _ in outputs]
        pointers.append(self.arena.ctypes.data_as(ctypes.c_void_p))
        status = self.c_run(*pointers)
        if status != 0:
            raise RuntimeError(f"{self.graph.name}_run returned {status}")
        if np.any(self._arena_guard != _CANARY):
            raise RuntimeError(f"{self.graph.name}_run wrote past the end of its arena")
        results = []
        for spec, (buf, guard) in zip(self.graph.outputs, outputs):
            if np.any(guard != _CANARY):
                raise RuntimeError(f"{self.graph.name}_run wrote past output {spec.name}")
            results.append(buf.view(spec.dtype).reshape(spec.shape).copy())
        return results


def build_graph_library(graph: CGraph, workdir: str | Path, cc: str = "gcc",
                       extra_flags: Sequence[str] = ()) -> HostGraph:
    """Write the sources to `workdir`, compile them with `cc` into a shared library, load it."""
    if shutil.which(cc) is None:
        raise FileNotFoundError(f"C compiler {cc!r} not found")
    workdir = Path(workdir)
    paths = graph.write(workdir)
    sources = [str(p) for p in paths if p.suffix == ".c"]
    library = workdir / f"lib{graph.name}.so"
    cmd = [cc, *HOST_CFLAGS, *extra_flags, "-shared", "-o", str(library), *sources, "-lm"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return HostGraph(graph, library)
