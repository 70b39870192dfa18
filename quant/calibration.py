"""Calibration: activation ranges of every graph, from the float schedule run over calibration windows.

The float ONNX graphs run the manifest's schedule (onnxruntime, graph optimisations off) over the
windows; each graph's inputs are recorded on the way (a per-token graph sees S inputs per window),
then onnxruntime.quantization's calibrator for that graph (MinMax or Percentile, on the inputs and
outputs of its Gemm/MatMul/Conv nodes; Entropy is the KL-divergence threshold of TensorRT) is fed exactly those inputs through a CalibrationDataReader.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator
from tqdm.auto import tqdm

from lumamba.export.onnx.manifest import Manifest

from lumamba.export.onnx.schedule import check_manifest_windows, run_schedule

from .calibration_features import FeatureRanges, linear_inputs, with_outputs

METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
           "entropy": CalibrationMethod.Entropy}
CALIBRATED_OPS = ["Gemm", "MatMul", "Conv"]
FORMAT = "lumamba-calibration"
VERSION = 1
_CHUNK = 256     # feeds per calibrator pass: bounds the memory of the Percentile histograms' inputs


@dataclass
class Calibration:
    """Per graph, per tensor: the (min, max) range to quantise it over."""

    method: str
    percentile: float | None
    n_windows: int
    ranges: dict[str, dict[str, tuple[float, float]]]
    structures: dict[str, str] = field(default_factory=dict)   # graph -> structure fingerprint of the export
    # graph -> Linear input tensor -> [per-feature minima, maxima] (calibration_features.py)
    features: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)

    def check_export(self, manifest: Manifest) -> None:
        """Raise unless this calibration was made on graphs of the same structure."""
        mine = {g.name: g.structure for g in manifest.graphs}
        if set(mine) != set(self.structures) or any(mine[n] != self.structures[n] for n in mine):
            differ = sorted(n for n in set(mine) | set(self.structures) if mine.get(n) != self.structures.get(n))
            raise ValueError(f"calibration does not belong to this export: graphs {differ} differ")

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)}, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        path = Path(path)
        d = json.loads(path.read_text())
        if d.pop("format", None) != FORMAT or d.pop("version", None) != VERSION:
            raise ValueError(f"{path}: not a {FORMAT} file of version {VERSION}")
        d["ranges"] = {g: {t: tuple(r) for t, r in rs.items()} for g, rs in d["ranges"].items()}
        return cls(**d)


class FeedReader(CalibrationDataReader):
    """Hands a list of recorded input dicts to an onnxruntime calibrator."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._next = 0

    def get_next(self) -> dict | None:
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def __len__(self) -> int:
        return len(self.feeds)


def _float_sessions(export_dir: Path, manifest: Manifest,
                    extra: dict[str, list[str]] | None = None) -> dict[str, ort.InferenceSession]:
    """One session per graph; `extra` names tensors a graph also outputs (calibration_features.py)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    sessions = {}
    for g in manifest.graphs:
        model = str(export_dir / g.file)
        if extra and extra.get(g.name):
            model = with_outputs(onnx.load(model), extra[g.name]).SerializeToString()
        sessions[g.name] = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return sessions


def record_feeds(export_dir: str | os.PathLike, windows, progress: bool = True,
                 features: FeatureRanges | None = None) -> dict[str, list[dict]]:
    """Run the float schedule over `windows` (B, C, T); every graph's inputs, call by call. With
    `features`, the per-feature ranges of every graph's Linear inputs are accumulated into it."""
    export_dir = Path(export_dir)
    manifest = Manifest.load(export_dir)
    x = check_manifest_windows(manifest, windows, single=True)
    extra = None
    if features is not None:
        extra = {g.name: linear_inputs(onnx.load(str(export_dir / g.file))) for g in manifest.graphs}
    sessions = _float_sessions(export_dir, manifest, extra)
    feeds: dict[str, list[dict]] = {g.name: [] for g in manifest.graphs}
    declared = {g.name: {t.name for t in g.outputs} for g in manifest.graphs}

    def call(name, inputs):
        feeds[name].append(inputs)
        outputs = [o.name for o in sessions[name].get_outputs()]
        values = dict(zip(outputs, sessions[name].run(outputs, inputs)))
        if extra:
            for tensor in extra[name]:
                features.update(name, tensor, inputs[tensor] if tensor in inputs else values[tensor])
        return {k: v for k, v in values.items() if k in declared[name]} if extra else values

    for window in tqdm(x, desc="calibration: float schedule", unit="window", disable=not progress):
        run_schedule(manifest, window, call)
    return feeds


def graph_ranges(model_path: str | os.PathLike, feeds: list[dict], method: str = "minmax",
                 percentile: float = 99.99) -> dict[str, tuple[float, float]]:
    """onnxruntime's calibrator on one graph fed `feeds`: tensor -> (min, max)."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {sorted(METHODS)}, got {method!r}")
    if not feeds:
        raise ValueError(f"{model_path}: no calibration inputs for this graph")
    if not any(n.op_type in CALIBRATED_OPS for n in onnx.load(str(model_path)).graph.node):
        return {}   # nothing to quantise (the streamed front end's statistics combination); the histogram
        #             calibrators would fail on a graph without a tensor to collect
    extra = {"percentile": float(percentile)} if method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="lumamba-calib-") as tmp:
        calibrator = create_calibrator(Path(model_path), CALIBRATED_OPS,
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=METHODS[method], extra_options=extra)
        # the histogram collector prints progress lines of its own
        with contextlib.redirect_stdout(io.StringIO()):
            for start in range(0, len(feeds), _CHUNK):
                calibrator.collect_data(FeedReader(feeds[start:start + _CHUNK]))
            data = calibrator.compute_data()
    return {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1]))) for name, td in data.items()}


def calibrate(export_dir: str | os.PathLike, windows, method: str = "minmax", percentile: float = 99.99,
              n_windows: int | None = None, progress: bool = True) -> Calibration:
    """Activation ranges for every graph of an export, from calibration windows (B, C, T) (numpy
    or torch; the first `n_windows` are used when given). `method` is "minmax", "percentile" or "entropy"
    (onnxruntime's histogram percentile of |x|, `percentile` in (0, 100])."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {sorted(METHODS)}, got {method!r}")
    if method == "percentile" and not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    export_dir = Path(export_dir)
    manifest = Manifest.load(export_dir)
    x = check_manifest_windows(manifest, windows, single=True)
    if n_windows is not None:
        if n_windows < 1:
            raise ValueError(f"n_windows must be >= 1, got {n_windows}")
        x = x[:n_windows]
    features = FeatureRanges()
    feeds = record_feeds(export_dir, x, progress, features)
    ranges = {}
    for g in tqdm(manifest.graphs, desc=f"calibration: {method} statistics", unit="graph", disable=not progress):
        ranges[g.name] = graph_ranges(export_dir / g.file, feeds.pop(g.name), method, percentile)
    return Calibration(method, float(percentile) if method == "percentile" else None, len(x), ranges,
                       {g.name: g.structure for g in manifest.graphs}, features.to_dict())


def merge_minmax(a: Calibration, b: Calibration) -> Calibration:
    """The MinMax calibration of the windows of `a` and `b` together, from the two: the hull of
    every range (per tensor and per feature), exactly what `calibrate` gives on all windows."""
    if a.method != "minmax" or b.method != "minmax":
        raise ValueError(f"only MinMax calibrations merge exactly, got {a.method} and {b.method}")
    if a.structures != b.structures:
        raise ValueError("calibrations of different exports cannot be merged")

    def hull(r, q):
        return {t: (min(r[t][0], q[t][0]), max(r[t][1], q[t][1])) for t in r}

    def feature_hull(r, q):
        return {t: [np.minimum(r[t][0], q[t][0]).tolist(), np.maximum(r[t][1], q[t][1]).tolist()] for t in r}

    return Calibration("minmax", None, a.n_windows + b.n_windows,
                       {g: hull(a.ranges[g], b.ranges[g]) for g in a.ranges}, dict(a.structures),
                       {g: feature_hull(a.features[g], b.features[g]) for g in a.features})


def load_windows(data: str | os.PathLike, split: str = "train", n: int | None = None, *,
                 channels: Sequence[str] | None = None, seed: int = 0,
                 val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Windows (N, C, T), labels (N,) and channel names of one split of a window cache (`lumamba-data
    prepare`) or `.npz` (the generic path); a seeded random subset of `n` windows (kept in dataset
    order) when the split holds more. All windows must share one montage (select with `channels`)."""
    from lumamba.train.data import open_split

    dataset = open_split(data, split, seed=seed, val_fraction=val_fraction, channels=channels)
    if dataset is None:
        raise ValueError(f"split {split!r} of {data} is empty")
    index = np.arange(len(dataset))
    if n is not None:
        if n < 1:
            raise ValueError(f"number of windows must be >= 1, got {n}")
        if n < len(index):
            index = np.sort(np.random.default_rng(seed).choice(index, n, replace=False))
    xs, ys, names = [], [], None
    for i in index:
        item = dataset[int(i)]
        window_names = list(item[2]["channels"]) if len(item) > 2 else list(dataset.channel_names)
        if names is None:
            names = window_names
        elif window_names != names:
            raise ValueError(f"{data} ({split}): window {i} has channels {window_names}, earlier ones {names}; "
                             "one montage is needed (select channels)")
        xs.append(np.asarray(item[0], np.float32))
        ys.append(int(item[1]))
    return np.stack(xs), np.array(ys, np.int64), names
