"""Stage 1 of the export: the model as recurrent-mode ONNX graphs and the schedule that runs them.

Contract: in, a `lumamba.LuMamba` model, its channel names and the window length; out, a
directory of static-shape ONNX graphs (each Mamba's projections over the whole window or chunk by
chunk and its scan one token per graph run, or one Mamba step per token; no Loop/Scan/If) and
`manifest.json`, the declarative schedule every executor runs: onnxruntime here, the int8
golden model (`lumamba.quant`), and the generated C (`lumamba.export.project`).

Modules: `step_modules`, `mamba_window` and `mamba_chunk` (the PyTorch modules each graph is
exported from; `mamba_chunk` also plans the chunked form's stages), `exporter`
(`export_onnx`), `manifest` (the schedule's data model, validated on load), `schedule` (the one
host interpreter of the schedule and the one check of input windows), `ort_runner` (onnxruntime).
This stage imports nothing from the other stages or from `lumamba.quant`.
"""
from __future__ import annotations

from lumamba.lazy import lazy_attributes

_LAZY = {
    "export_onnx": "exporter",
    "Manifest": "manifest",
    "Runner": "ort_runner",
    "run_schedule": "schedule",
    "check_windows": "schedule",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
