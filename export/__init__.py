"""Lowering of LuMamba for deployment: recurrent-mode ONNX graphs, TVM-generated C, firmware projects.

Public names are imported on first use, so `import lumamba.export` does not pull in torch's
exporter, onnxruntime or TVM.
"""
from __future__ import annotations

from lumamba.lazy import lazy_attributes

# public name -> submodule that defines it
_LAZY = {
    "export_onnx": "onnx.exporter",
    "Runner": "onnx.ort_runner",
    "Manifest": "onnx.manifest",
    "load_host_c": "project.host_c_runner",
}

__all__ = sorted([*_LAZY, "load"])
BACKENDS = ("onnxruntime", "c")


def load(out_dir, backend: str = "onnxruntime", **kwargs):
    """A callable (B, C, T) -> logits for an export directory: onnxruntime over the ONNX graphs
    (default), or `backend="c"`: the generated C built for this machine and called through ctypes."""
    if backend == "onnxruntime":
        from .onnx.ort_runner import load as load_ort
        return load_ort(out_dir, **kwargs)
    if backend == "c":
        from .project.host_c_runner import load_host_c
        return load_host_c(out_dir, **kwargs)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
