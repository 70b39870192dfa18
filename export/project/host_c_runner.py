"""Run the generated C model on the host: built as a shared library with gcc, called via ctypes.

`load_host_c(out_dir)` returns a callable like the onnxruntime runner (`lumamba.export.load`):
`model(x)` -> logits (B, n_classes). It runs exactly the sources a firmware project builds
(model.c, the graphs' kernels, drivers and weights, the firmware runtime), compiled with the
same warnings-as-errors flags, so host C and onnxruntime can be compared without an emulator.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lumamba.firmware import ROOT as FIRMWARE_ROOT

from ..codegen.host_graph import HOST_CFLAGS
from ..onnx.manifest import MANIFEST_NAME, Manifest
from ..onnx.schedule import check_windows
from .build import FIRMWARE_DIR, BuildError
from .model_driver import model_h_defines

LIBRARY_DIR = Path("build") / "host-lib"   # inside the project
GENERATED_PROJECT = "host_c"               # project generated inside an ONNX export directory


# Extra flags of a library built for scoring many windows (`load_host_c(..., fast=True)`): the
# vectoriser on for this machine's instruction set. Bit-exactness does not depend on them: the
# float arithmetic stays as written (HOST_CFLAGS keep -ffp-contract=off, no -ffast-math), integer
# arithmetic is exact whatever the instructions.
SCORING_CFLAGS = ("-O3", "-march=native")

# as firmware/project.mk builds them, relative to the firmware folder; plus every kernels/*.c
RUNTIME_SOURCES = ("runtime/lumamba_runtime.c", "runtime/lumamba_fmath.c", "runtime/lumamba_normalise.c")


def _firmware_dir(project: Path) -> Path:
    """The project's copy of the firmware sources, or the package's when the copy is incomplete."""
    copy = project / FIRMWARE_DIR
    complete = all((copy / name).is_file() for name in RUNTIME_SOURCES) and any((copy / "kernels").glob("*.c"))
    return copy if complete else FIRMWARE_ROOT


def build_project_library(project_dir: str | Path, cc: str = "gcc", jobs: int = 2,
                          extra_flags: Sequence[str] = ()) -> Path:
    """Compile the project's model sources, the runtime and the int8 micro-kernels into a shared
    library (cached by the sources' content and the flags, so an unchanged project is not
    rebuilt); `extra_flags` follow HOST_CFLAGS (e.g. SCORING_CFLAGS). Returns the library's path."""
    project = Path(project_dir)
    if shutil.which(cc) is None:
        raise FileNotFoundError(f"C compiler {cc!r} not found (Debian package gcc)")
    firmware = _firmware_dir(project)
    sources = (sorted(project.glob("*.c")) + [firmware / name for name in RUNTIME_SOURCES]
               + sorted((firmware / "kernels").glob("*.c")))
    if not (project / "model.h").is_file() or not (project / "model.c").is_file():
        raise FileNotFoundError(f"{project} holds no generated model (model.c, model.h)")
    flags = (*HOST_CFLAGS, *extra_flags)
    digest = hashlib.sha256(" ".join((cc, *flags)).encode())
    for path in sorted([*sources, *project.glob("*.h")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    library = project / LIBRARY_DIR / f"liblumamba-{digest.hexdigest()[:16]}.so"
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    includes = ["-I", str(project), "-I", str(firmware / "runtime"), "-I", str(firmware / "kernels")]
    with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
        def compile_one(src: Path) -> Path:
            obj = Path(tmp) / (src.parent.name + "_" + src.stem + ".o")
            _run([cc, *flags, *includes, "-c", str(src), "-o", str(obj)])
            return obj

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            objects = list(pool.map(compile_one, sources))
        partial = Path(tmp) / library.name
        _run([cc, "-shared", "-o", str(partial), *map(str, objects), "-lm"])
        os.replace(partial, library)   # complete or absent, never half-written
    return library


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{result.stderr}")


class _Instance:
    """One loaded copy of the library: its own static arena, so one thread at a time."""

    def __init__(self, library: Path):
        self.lib = ctypes.CDLL(str(library))
        self.infer = self.lib.lumamba_infer
        self.infer.restype = ctypes.c_int
        self.infer.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.infer_counts = self.lib.lumamba_infer_counts
        self.infer_counts.restype = ctypes.c_int
        self.infer_counts.argtypes = [ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p]
        self.status_name = self.lib.lumamba_status_name
        self.status_name.restype = ctypes.c_char_p
        self.status_name.argtypes = [ctypes.c_int]
        status = self.lib.lumamba_init()
        if status != 0:
            raise RuntimeError(f"lumamba_init() returned {status} ({self.status_name(status).decode()})")


def _copies(library: Path, n: int) -> list[Path]:
    """`library` and n - 1 copies of it: the dynamic loader maps each file once, and the model's
    arena is static, so parallel callers need one mapped copy each."""
    paths = [library]
    for i in range(1, n):
        copy = library.with_name(f"{library.stem}.{i}{library.suffix}")
        if not copy.is_file():
            partial = copy.with_name(copy.name + f".{os.getpid()}.partial")
            shutil.copyfile(library, partial)
            os.replace(partial, copy)
        paths.append(copy)
    return paths


class HostCModel:
    """The generated C model in this process: `model(x)` -> logits (B, n_classes).

    `workers` copies of the library run a batch in parallel threads (ctypes releases the GIL
    during each call), e.g. to score an evaluation split with the bit-exact int8 C.
    """

    def __init__(self, library: str | Path, n_channels: int, n_samples: int, n_classes: int, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.library = Path(library)
        self.n_channels, self.n_samples, self.n_classes = n_channels, n_samples, n_classes
        self._instances = [_Instance(path) for path in _copies(self.library, workers)]
        self._lib = self._instances[0].lib

    @property
    def workers(self) -> int:
        return len(self._instances)

    def status_name(self, status: int) -> str:
        return self._instances[0].status_name(status).decode()

    def infer(self, window: np.ndarray, logits: np.ndarray | None = None, instance: int = 0) -> int:
        """Raw `lumamba_infer` on one float32 window (C, T) into `logits`; returns the status."""
        window = np.ascontiguousarray(window, dtype=np.float32)
        if window.size != self.n_channels * self.n_samples:
            raise ValueError(f"window must hold {self.n_channels} x {self.n_samples} samples, got shape {window.shape}")
        out = logits if logits is not None else np.empty(self.n_classes, np.float32)
        return self._instances[instance].infer(window.ctypes.data_as(ctypes.c_void_p),
                                               out.ctypes.data_as(ctypes.c_void_p))

    def infer_counts(self, counts: np.ndarray, uv_per_count: float, logits: np.ndarray | None = None,
                     instance: int = 0) -> int:
        """Raw `lumamba_infer_counts` on one int16 window (C, T) of ADC counts into `logits`."""
        counts = np.ascontiguousarray(counts, dtype=np.int16)
        if counts.shape != (self.n_channels, self.n_samples):
            raise ValueError(f"counts must have shape ({self.n_channels}, {self.n_samples}), got {counts.shape}")
        out = logits if logits is not None else np.empty(self.n_classes, np.float32)
        return self._instances[instance].infer_counts(counts.ctypes.data_as(ctypes.c_void_p), float(uv_per_count),
                                                      out.ctypes.data_as(ctypes.c_void_p))

    def __call__(self, x) -> np.ndarray:
        """Logits (B, n_classes) of float32 windows x (B, C, T)."""
        # non-finite samples go through: the driver's own check reports them (NONFINITE_INPUT)
        x = check_windows(x, self.n_channels, self.n_samples, finite=False)
        logits = np.empty((x.shape[0], self.n_classes), np.float32)
        statuses = np.zeros(x.shape[0], np.int32)

        def run(instance: int) -> None:
            for b in range(instance, x.shape[0], self.workers):
                statuses[b] = self.infer(x[b], logits[b], instance)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            list(pool.map(run, range(self.workers)))
        for b in np.flatnonzero(statuses):
            name = self.status_name(int(statuses[b]))
            error = ValueError if name in ("NONFINITE_INPUT", "NONFINITE_OUTPUT") else RuntimeError
            raise error(f"lumamba_infer() returned {statuses[b]} ({name}) for window {b}")
        return logits


def load_host_c(out_dir: str | Path, cc: str = "gcc", workers: int = 1, fast: bool = False) -> HostCModel:
    """The generated C of `out_dir`, built for the host and loaded (`workers` parallel copies);
    `fast`: built with SCORING_CFLAGS (vectorised for this machine: for scoring many windows,
    the same logits bit for bit).

    `out_dir` is a firmware project (holds model.h) or an ONNX export directory (holds
    manifest.json), whose C is then generated into `out_dir/host_c` first.
    """
    out = Path(out_dir)
    if not (out / "model.h").is_file():
        if not (out / MANIFEST_NAME).is_file():
            raise FileNotFoundError(f"{out} is neither a firmware project (model.h) nor an ONNX export "
                                    f"({MANIFEST_NAME})")
        out = _generate(out)
    defines = model_h_defines(out / "model.h")
    library = build_project_library(out, cc, extra_flags=SCORING_CFLAGS if fast else ())
    return HostCModel(library, defines["N_CHANNELS"], defines["N_SAMPLES"], defines["N_CLASSES"], workers)


def _generate(onnx_dir: Path) -> Path:
    from .firmware_project import compile_model, write_project
    from .test_vectors import fixed_windows

    manifest = Manifest.load(onnx_dir)
    project = onnx_dir / GENERATED_PROJECT
    compiled = compile_model(manifest, onnx_dir)
    write_project(compiled, project, fixed_windows(manifest.n_channels, manifest.n_samples), board="host")
    return project
