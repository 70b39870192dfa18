"""int8 post-training quantisation of the recurrent-mode LuMamba graphs (see quant/README.md).

    cal = calibrate(export_dir, windows, method="minmax")          # activation ranges
    q = quantize(export_dir, cal, config=None, out_dir=...)         # integer graphs + QDQ ONNX set
    golden = load_golden(q.out_dir); logits = golden(windows)       # bit-exact reference of the C
    qdq = load_qdq(q.out_dir)                                       # onnxruntime on the QDQ set
    drift_report(...)                                               # float vs int8 accuracy

Public names are imported on first use, so `import lumamba.quant` stays light.
"""
from __future__ import annotations

import importlib

# public name -> submodule that defines it
_LAZY = {
    "calibrate": "calibration",
    "load_windows": "calibration",
    "Calibration": "calibration",
    "quantize": "quantizer",
    "QuantizedModel": "quantizer",
    "candidates": "quantizer",
    "QuantConfig": "config",
    "load_golden": "golden",
    "GoldenRunner": "golden",
    "float_reference": "golden",
    "load_qdq": "qdq",
    "drift_report": "drift",
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
