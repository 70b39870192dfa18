"""Accuracy drift of int8 against float: `lumamba-eval drift`.

The float model is the PyTorch checkpoint; the int8 model is the host golden model of the same
checkpoint, exported for the data's montage and window length, calibrated on windows of the
calibration split and quantised. Both score the same evaluation windows. Per-layer SQNR compares
each Linear/Conv/MatMul output of the golden model with the same tensor of the float graphs
(the golden interpreter with every node float), summed over all windows and tokens:
SQNR = 10 log10(sum ref^2 / sum (ref - int8)^2).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
DRIFT_JSON, DRIFT_PNG = "drift.json", "drift.png"


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10 log10(signal / noise); +inf for no noise (JSON writes it as a string)."""
    if noise_power == 0:
        return float("inf")
    if signal_power == 0:
        return float("-inf")
    return float(10 * np.log10(signal_power / noise_power))


class LayerErrors:
    """Running sums of signal and noise power per tapped layer."""

    def __init__(self):
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def add(self, reference: dict[str, np.ndarray], quantised: dict[str, np.ndarray]) -> None:
        for key, ref in reference.items():
            ref = ref.astype(np.float64)
            err = quantised[key].astype(np.float64) - ref
            self.signal[key] = self.signal.get(key, 0.0) + float((ref * ref).sum())
            self.noise[key] = self.noise.get(key, 0.0) + float((err * err).sum())

    def sqnr(self) -> dict[str, float]:
        return {k: sqnr_db(self.signal[k], self.noise[k]) for k in self.signal}


def _json_number(v: float) -> float | str:
    """JSON has no infinities: write them as "inf" / "-inf"."""
    return v if np.isfinite(v) else str(v)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _export_is_current(export_dir: Path, checkpoint, names: list[str], n_samples: int, n_classes: int) -> bool:
    """True when `export_dir` already holds the export of this checkpoint (same SHA-256), montage
    and window length, so a re-run (another threshold, config or calibration) skips the export."""
    import hashlib

    from lumamba.export.onnx.manifest import Manifest

    try:
        manifest = Manifest.load(export_dir)
    except (FileNotFoundError, ValueError):
        return False
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    return (manifest.checkpoint or {}).get("sha256") == digest and list(manifest.channel_names) == list(names) \
        and manifest.n_samples == n_samples and manifest.n_classes == n_classes \
        and all((export_dir / g.file).is_file() for g in manifest.graphs)


def evaluate_int8(golden, reference, x: np.ndarray, progress: bool = True) -> tuple[np.ndarray, dict[str, float]]:
    """Golden-model logits (N, K) and per-layer SQNR against the float graphs."""
    from tqdm.auto import tqdm

    errors = LayerErrors()
    logits = []
    for window in tqdm(x, desc="int8 golden model", unit="window", disable=not progress):
        buffers, taps = golden.run(window, taps=True)
        _, ref_taps = reference.run(window, taps=True)
        errors.add(ref_taps, taps)
        logits.append(buffers[golden.manifest.logits_buffer][0])
    return np.stack(logits), errors.sqnr()


def drift_report(checkpoint: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike, *,
                 max_drift: float = 0.01, split: str = "test", calib_split: str = "train",
                 n_calib: int = 32, n_eval: int | None = None, method: str = "minmax", percentile: float = 99.99,
                 config=None, n_classes: int = 2, channels: Sequence[str] | None = None, seed: int = 0,
                 val_fraction: float = 0.2, clips: dict[str, float] | None = None,
                 input_scales: dict[str, float] | None = None, progress: bool = True) -> dict:
    """Float (PyTorch) vs int8 (golden model) on the `split` windows of `data`; writes
    `out_dir/drift.json` and `out_dir/drift.png` (ROC curves, per-layer SQNR) and returns the report.
    `report["passed"]` is False when |AUROC_int8 - AUROC_float| > max_drift (or AUROC is undefined).
    The export and the quantised model are kept in `out_dir/onnx` and `out_dir/int8`. `clips` are
    input-range cuts of an automatic precision plan (auto_precision.cut_ranges), `input_scales` its
    per-feature input scales (layer -> alpha, input_scales.py)."""
    from lumamba.checkpoint import load_pretrained
    from lumamba.metrics import write_json
    from lumamba.export.onnx.exporter import export_onnx

    from .auto_precision import cut_ranges
    from .calibration import calibrate, load_windows
    from .quantizer import quantize

    started = time.time()
    out_dir = Path(out_dir)
    options = dict(seed=seed, val_fraction=val_fraction)
    x, labels, names = load_windows(data, split, n_eval, channels=channels, **options)
    # the export is for one montage: calibrate on the evaluation windows' channels
    x_cal, _, _ = load_windows(data, calib_split, n_calib, channels=names, **options)

    model = load_pretrained(checkpoint, n_classes=n_classes).eval()
    if not _export_is_current(out_dir / "onnx", checkpoint, names, x.shape[-1], n_classes):
        export_onnx(model, names, x.shape[-1], out_dir / "onnx", checkpoint=checkpoint)
    calibration = calibrate(out_dir / "onnx", x_cal, method=method, percentile=percentile, progress=progress)
    calibration = cut_ranges(calibration, clips or {})
    quantized = quantize(out_dir / "onnx", calibration, config, out_dir / "int8", input_scales=input_scales)

    report = {"checkpoint": str(checkpoint), "data": str(data), "split": split,
              "calibration": {"split": calib_split, "n_windows": int(len(x_cal)), "method": method,
                              "percentile": percentile if method == "percentile" else None}}
    report.update(compare_float_int8(model, names, out_dir / "onnx", quantized.out_dir, x, labels,
                                     max_drift=max_drift, out_dir=out_dir, progress=progress))
    report["quantized"] = {"dir": str(quantized.out_dir), **quantized.summary}
    report["seconds"] = round(time.time() - started, 1)
    write_json(report, out_dir / DRIFT_JSON)
    return report


def compare_float_int8(model, names: Sequence[str], onnx_dir: str | os.PathLike, quant_dir: str | os.PathLike,
                       x: np.ndarray, labels: np.ndarray, *, max_drift: float, out_dir: str | os.PathLike,
                       layers: bool = True, progress: bool = True) -> dict:
    """Score windows `x` (N, C, T) with the float `model` (PyTorch) and the golden model of
    `quant_dir` (the quantised copy of the export `onnx_dir`); the drift part of the report.
    `layers` adds the per-layer SQNR (one more float pass per window, with taps). Draws
    `out_dir/drift.png` (ROC curves, and the per-layer SQNR when computed)."""
    import torch

    from lumamba.metrics import classification_metrics

    from .golden import float_reference, load_golden

    golden = load_golden(quant_dir)
    with torch.no_grad():
        batches = np.array_split(x, max(1, len(x) // 16))
        float_logits = np.concatenate([model(torch.from_numpy(b), list(names)).numpy() for b in batches])
    if layers:
        int8_logits, layer_sqnr = evaluate_int8(golden, float_reference(onnx_dir), x, progress)
    else:
        int8_logits = np.concatenate([golden(b) for b in
                                      _progress(np.array_split(x, max(1, len(x) // 8)), "int8 golden model", progress)])
        layer_sqnr = {}

    p_float, p_int8 = _softmax(float_logits), _softmax(int8_logits)
    m_float, m_int8 = classification_metrics(labels, p_float), classification_metrics(labels, p_int8)
    drift = None if m_float["auroc"] is None or m_int8["auroc"] is None else abs(m_int8["auroc"] - m_float["auroc"])
    err = (int8_logits - float_logits).astype(np.float64)
    int8_layers = {f"{name}/{node.layer}" for name, ex in golden.executors.items() for node in ex.graph.int8_nodes()}
    report = {
        "n_windows": int(len(x)),
        "float": m_float, "int8": m_int8,
        "auroc_drift": drift, "max_drift": max_drift,
        "passed": drift is not None and drift <= max_drift,
        "label_agreement": float((p_float.argmax(1) == p_int8.argmax(1)).mean()),
        "logits": {"sqnr_db": _json_number(sqnr_db(float((float_logits.astype(np.float64) ** 2).sum()),
                                                    float((err ** 2).sum()))),
                   "max_abs_error": float(np.abs(err).max()), "rms_error": float(np.sqrt((err ** 2).mean()))},
        "layer_sqnr_db": {k: _json_number(v) for k, v in layer_sqnr.items()},
        "float_layers": sorted(set(layer_sqnr) - int8_layers),
    }
    plot_drift(labels, p_float, p_int8, layer_sqnr, int8_layers, report, Path(out_dir) / DRIFT_PNG)
    return report


def _progress(items: list, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch", disable=not enabled)


def plot_drift(labels: np.ndarray, p_float: np.ndarray, p_int8: np.ndarray, layers: dict[str, float],
               int8_layers: set[str], report: dict, path: Path) -> Path:
    """ROC curves of both models (binary tasks) and, when `layers` holds it, the per-layer SQNR
    (layers kept float in grey)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    keys = list(layers)
    fig = Figure(figsize=(12 if keys else 5.5, max(4.5, 0.17 * len(keys) + 1.5)), layout="constrained")
    roc, bars = fig.subplots(1, 2, width_ratios=(1, 1.4)) if keys else (fig.subplots(), None)
    if p_float.shape[1] == 2 and len(np.unique(labels)) == 2:
        for name, p, style in (("float", p_float, "-"), ("int8", p_int8, "--")):
            fpr, tpr, _ = roc_curve(labels, p[:, 1])
            roc.plot(fpr, tpr, style, label=f"{name}: AUROC {report[name]['auroc']:.4f}")
        roc.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
        roc.legend(loc="lower right")
    else:
        roc.text(0.5, 0.5, "ROC needs a binary task\nwith both classes present", ha="center", va="center")
    drift = report["auroc_drift"]
    roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
            title=f"ROC, |AUROC drift| = {drift:.4f}" if drift is not None else "ROC")
    if keys:   # per-layer SQNR (`lumamba-eval drift`; the export's drift step skips it)
        values = [min(v, 99.0) for v in layers.values()]      # +inf (no error) drawn at the axis end
        bars.barh(range(len(keys)), values, color=["tab:blue" if k in int8_layers else "tab:grey" for k in keys])
        bars.set_yticks(range(len(keys)), [k if k in int8_layers else f"{k} (float)" for k in keys], fontsize=6)
        bars.invert_yaxis()
        bars.set(xlabel="SQNR (dB)", title=f"per-layer SQNR; logits {float(report['logits']['sqnr_db']):.1f} dB")
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path
