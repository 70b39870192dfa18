"""Lowering of LuMamba for deployment: recurrent-mode ONNX graphs, TVM-generated C, firmware projects.

Public names are imported on first use, so `import lumamba.export` does not pull in torch's
exporter, onnxruntime or TVM.
"""
from __future__ import annotations

import importlib

# public name -> submodule that defines it
_LAZY = {
    "export_onnx": "onnx_export",
    "load": "ort_runner",
    "Runner": "ort_runner",
    "Manifest": "manifest",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
