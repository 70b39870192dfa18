"""int8 post-training quantisation of the recurrent-mode LuMamba graphs (see quant/README.md).

    cal = calibrate(export_dir, windows, method="minmax")          # activation ranges
    q = quantize(export_dir, cal, config=None, out_dir=...)         # integer graphs + QDQ ONNX set
    golden = load_golden(q.out_dir); logits = golden(windows)       # bit-exact reference of the C
    qdq = load_qdq(q.out_dir)                                       # onnxruntime on the QDQ set
    drift_report(...)                                               # float vs int8 accuracy

Public names are imported on first use, so `import lumamba.quant` stays light.
"""
from __future__ import annotations

from lumamba.lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
