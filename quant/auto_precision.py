"""Automatic per-layer precision: keep the fewest layers float until the logits are close enough.

0. Held-out windows (`plan_precision`): every 4th calibration window is held out, the ranges of a
   probe calibration come from the others, and every SQNR below is measured on the held-out ones.
   Measured on the windows that set the ranges, nothing saturates and the damage stays hidden: the
   demo model's all-int8 logits reach 18.8 dB on its 32 calibration windows but 5.5 dB on the test
   windows (issue 14). The final model is then calibrated on all windows, so the plan's SQNR is a
   slightly pessimistic estimate.
1. Logit SQNR of the all-int8 model on the held-out windows, against the float graphs, on the
   proxy (`_Evaluator`: onnxruntime on the candidate's QDQ set vs onnxruntime on the float
   graphs, ~15x faster than the numpy golden model; the chosen plan is scored once more by the
   golden model at the end, `golden_sqnr_db`).
2. If it misses `target_db`: each int8 layer's sensitivity, the logit SQNR with only that layer
   quantised, on `n_sensitivity` windows spread over the range of the float logits' magnitude
   (the largest included: saturation shows there; small ones: label flips happen there).
3. Free in flash, so searched in full (not only up to the target), for the `clip_layers` most
   sensitive layers: per-feature input scales (`_scale_search`, input_scales.py) for those that
   are Linears with uneven input features (largest |value| >= UNEVEN_RATIO x the median
   feature's), then narrower input ranges (`_clip_search`) for the others: the calibrated range of
   the layer's input cut to CLIP_FACTORS of its largest magnitude. Each is kept where it raises the
   held-out SQNR by >= MIN_GAIN_DB. On the demo model the frequency MLP's input concatenates FFT
   magnitudes (up to 190) with phases (+-pi): one per-tensor scale leaves the phases ~8 levels;
   per-feature power-of-two scales give every feature at least half the range.
4. Greedy: move layers to float, least SQNR first, re-measuring the whole model after each (a
   layer that does not raise it stays int8), until the target is met; a layer whose flash cost
   would exceed the budget (`budget` x the all-int8 weight bytes) is skipped. Then layers that turn
   out unnecessary are moved back to int8.
5. With layers float, the kept range cuts try their other factors once more (step 3 judged them
   while a saturating layer was still int8).

The result is an ordinary QuantConfig (`float` list of layer names), so the integer graphs, the
golden model and the generated C handle every mix exactly as a hand-written config: bit-exactness
holds by construction; a range cut only changes calibrated (scale, zero point) pairs, which both
read from quant.json, and input scales add one float Mul by powers of two to the integer graph. `PrecisionPlan.to_dict()` is what quant.json records under "precision".
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .calibration import Calibration, calibrate
from .config import QuantConfig, as_config, literal_pattern
from .golden import INDEX
from .quantizer import QuantizedModel, quantize
from .quantizer import candidates as quantisable_nodes

DEFAULT_TARGET_DB = 20.0
DEFAULT_BUDGET = 0.05          # at most 5 % more weight bytes than all-int8
DEFAULT_SENSITIVITY_WINDOWS = 8
HOLDOUT_EVERY = 4              # every 4th calibration window measures the plan
CLIP_FACTORS = (0.5, 0.25)     # input-range cuts tried, as fractions of the largest |value|
DEFAULT_CLIP_LAYERS = 3        # most sensitive layers whose input range is searched
MIN_GAIN_DB = 0.1              # a change that gains less is measurement noise, not kept
SCALE_ALPHAS = (1.0, 0.5)      # per-feature input-scale migration strengths tried (input_scales.py)
UNEVEN_RATIO = 4.0             # input features this uneven (largest / median magnitude) get scales tried


def logit_sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (test - ref)^2) over all logits; +inf when identical."""
    ref = np.asarray(reference, np.float64)
    noise = float(((np.asarray(test, np.float64) - ref) ** 2).sum())
    signal = float((ref ** 2).sum())
    if noise == 0:
        return float("inf")
    return float("-inf") if signal == 0 else float(10 * np.log10(signal / noise))


@dataclass
class PrecisionPlan:
    """What the automatic mode measured and chose."""

    target_db: float
    budget_fraction: float
    budget_bytes: int                  # extra weight bytes allowed
    int8_weight_bytes: int             # all weights of the all-int8 model (int8 + int32 per channel + float)
    int8_sqnr_db: float                # all-int8 logit SQNR on the held-out windows
    sqnr_db: float                     # with the chosen layers float
    float_layers: list[str]            # layers moved to float by the automatic mode
    extra_bytes: int                   # their flash cost
    met: bool
    n_windows: int
    sensitivity: dict[str, float] = field(default_factory=dict)    # layer -> SQNR with only it int8
    layer_bytes: dict[str, int] = field(default_factory=dict)      # layer -> extra bytes if float
    skipped: list[str] = field(default_factory=list)               # tried, but over the budget
    clips: dict[str, float] = field(default_factory=dict)          # "graph:tensor" -> kept range cut
    clip_layers: dict[str, str] = field(default_factory=dict)      # "graph:tensor" -> layer it feeds
    input_scales: dict[str, float] = field(default_factory=dict)   # layer -> alpha of its folded input scales
    config: QuantConfig = field(default_factory=QuantConfig)
    golden_sqnr_db: float | None = None     # the chosen plan scored by the golden model (the others: proxy)
    trials: int = 0                         # proxy evaluations

    def to_dict(self) -> dict:
        num = lambda v: v if np.isfinite(v) else str(v)      # noqa: E731  JSON has no infinities
        return {"mode": "auto", "target_sqnr_db": self.target_db, "budget_fraction": self.budget_fraction,
                "budget_bytes": self.budget_bytes, "all_int8_weight_bytes": self.int8_weight_bytes,
                "all_int8_sqnr_db": num(self.int8_sqnr_db), "sqnr_db": num(self.sqnr_db),
                "float_layers": list(self.float_layers), "extra_flash_bytes": self.extra_bytes,
                "met": self.met, "n_windows": self.n_windows,
                "sensitivity_db": {k: num(v) for k, v in self.sensitivity.items()},
                "layer_extra_bytes": dict(self.layer_bytes), "over_budget": list(self.skipped),
                "input_range_cuts": {k: {"factor": f, "layer": self.clip_layers.get(k)} for k, f in self.clips.items()},
                "input_scales": dict(self.input_scales),
                "golden_sqnr_db": None if self.golden_sqnr_db is None else num(self.golden_sqnr_db),
                "evaluator": "qdq-proxy", "proxy_trials": self.trials}

    def summary(self) -> str:
        """One line for the export report."""
        kept = ", ".join(self.float_layers) if self.float_layers else "none"
        pct = 100 * self.extra_bytes / max(self.int8_weight_bytes, 1)
        cuts = ", ".join(f"{self.clip_layers.get(k, k)} input x{f:g}" for k, f in self.clips.items()) or "none"
        scales = ", ".join(f"{la} (alpha {a:g})" for la, a in self.input_scales.items()) or "none"
        golden = "" if self.golden_sqnr_db is None else f", golden model {self.golden_sqnr_db:.1f} dB"
        line = (f"auto, kept float: {kept} (+{self.extra_bytes:,} B flash, +{pct:.1f} % of all-int8 weights); "
                f"per-feature input scales: {scales}; input ranges cut: {cuts}; logit SQNR "
                f"on {self.n_windows} held-out calibration windows {self.int8_sqnr_db:.1f} -> {self.sqnr_db:.1f} dB "
                f"(proxy{golden}; target {self.target_db:g})")
        return line if self.met else line + " TARGET NOT MET within the flash budget"

    def warning(self) -> str | None:
        if self.met:
            return None
        return (f"int8 logit SQNR {self.sqnr_db:.1f} dB misses --target-sqnr {self.target_db:g} dB within the "
                f"flash budget ({self.budget_fraction:.0%} = {self.budget_bytes:,} B)"
                + (f"; over budget: {', '.join(self.skipped)}" if self.skipped else ""))


def int8_layers(q: QuantizedModel) -> list[str]:
    """Layer names of the int8 nodes of a quantised model, in graph order, each once."""
    seen: dict[str, None] = {}
    for graph in q.graphs.values():
        for node in graph.int8_nodes():
            seen.setdefault(node.layer)
    return list(seen)


def layer_extra_bytes(q: QuantizedModel) -> dict[str, int]:
    """Flash cost of moving each int8 layer to float: float32 weight and bias minus the int8
    weight and its int32 bias, multiplier and shift."""
    cost: dict[str, int] = {}
    for graph in q.graphs.values():
        for node in graph.int8_nodes():
            w = graph.constants[node.params["weight"]]
            n = len(graph.constants[node.params["bias"]])
            int8 = w.nbytes + sum(graph.constants[node.params[r]].nbytes for r in ("bias", "multiplier", "shift"))
            cost[node.layer] = cost.get(node.layer, 0) + 4 * w.size + 4 * n - int8
    return cost


def all_weight_bytes(summary: dict) -> int:
    """Weight bytes of a quantised model: int8 weights, int32 per-channel data, float32 rest."""
    return int(summary["int8_weight_bytes"] + summary["int32_per_channel_bytes"]
               + summary["float_model_bytes"] - summary["float_weight_bytes_replaced"])


class _Evaluator:
    """Quantises with a config into a scratch directory and scores logits against the float graphs.

    Candidates are scored on the proxy: onnxruntime running the QDQ set of the candidate against
    onnxruntime running the float graphs (both native code: ~15x faster than the numpy golden model
    and float interpreter; on the demo model's held-out windows the QDQ logits are within 36 dB
    of the golden ones, and the all-int8 SQNR reads 13.80 dB on the proxy and 13.86 dB on the
    golden model). `confirm` scores the final plan with the golden model, bit-exact with the C."""

    def __init__(self, export_dir: Path, calibration: Calibration, windows: np.ndarray, weights: str,
                 scratch: Path):
        from lumamba.export.onnx.ort_runner import Runner

        self.export_dir, self.calibration, self.windows, self.weights = export_dir, calibration, windows, weights
        self.scratch, self._n = scratch, 0
        self.clips: dict[str, float] = {}
        self.scales: dict[str, float] = {}            # layer -> input-scale migration strength alpha
        self.reference = Runner(export_dir, "off")(windows)
        self.trials = 0

    def spread(self, n: int) -> np.ndarray:
        """Indices of `n` windows at evenly spaced ranks of the float logits' largest magnitude."""
        ranks = np.argsort(np.abs(self.reference).max(axis=1), kind="stable")
        return np.sort(ranks[np.unique(np.linspace(0, len(ranks) - 1, min(n, len(ranks))).round().astype(int))])

    def quantize(self, config: QuantConfig, qdq: bool = True) -> QuantizedModel:
        self._n += 1
        return quantize(self.export_dir, cut_ranges(self.calibration, self.clips), config, self.scratch / f"q{self._n}",
                        qdq=qdq, weights=self.weights, input_scales=dict(self.scales))

    def sqnr(self, config: QuantConfig, index: np.ndarray | None = None) -> float:
        """Proxy logit SQNR of `config` on all windows, or on those of `index`."""
        self.trials += 1
        runner = self.quantize(config).qdq()
        index = np.arange(len(self.windows)) if index is None else index
        return logit_sqnr_db(self.reference[index], runner(self.windows[index]))

    def confirm(self, config: QuantConfig) -> float:
        """Logit SQNR of `config` on all windows with the golden model."""
        return logit_sqnr_db(self.reference, self.quantize(config, qdq=False).golden()(self.windows))


def cut_ranges(calibration: Calibration, clips: dict[str, float]) -> Calibration:
    """A copy of `calibration` whose tensors "graph:tensor" of `clips` have their range cut to
    factor x the largest |value| (the side within that bound is kept: a skewed range stays skewed)."""
    if not clips:
        return calibration
    out = copy.deepcopy(calibration)
    for key, factor in clips.items():
        graph, tensor = key.split(":", 1)
        lo, hi = out.ranges[graph][tensor]
        bound = factor * max(abs(lo), abs(hi))
        out.ranges[graph][tensor] = (max(lo, -bound), min(hi, bound))
    return out


def layer_inputs(q: QuantizedModel) -> dict[str, list[str]]:
    """Layer -> the "graph:tensor" keys of its int8 nodes' float inputs (their calibrated ranges)."""
    out: dict[str, list[str]] = {}
    for graph in q.graphs.values():
        for node in graph.int8_nodes():
            out.setdefault(node.layer, []).append(f"{graph.name}:{node.inputs[0].removesuffix('.q')}")
    return out


def _with_float(base: QuantConfig, layers: list[str]) -> QuantConfig:
    """`base` (its int8 opt-ins node by node, `QuantConfig.with_int8_nodes`) with `layers` float.
    A fixed-weight layer's name is its `graph:node`, so moving an opted-in one drops its entry."""
    moved = [literal_pattern(la) for la in layers]
    return QuantConfig(base.float + moved, [p for p in base.int8 if p not in moved], base.source)


def layer_sensitivity(evaluator: _Evaluator, base: QuantConfig, layers: list[str], n: int,
                      progress: bool = True) -> dict[str, float]:
    """Logit SQNR with only each layer of `layers` int8 (the others float), on `n` windows
    (`_Evaluator.spread`)."""
    from tqdm.auto import tqdm

    index = evaluator.spread(n)
    out = {}
    for layer in tqdm(layers, desc="precision: per-layer sensitivity", unit="layer", disable=not progress):
        out[layer] = evaluator.sqnr(_with_float(base, [o for o in layers if o != layer]), index)
    return out


def choose_precision(export_dir: str | os.PathLike, calibration: Calibration, windows: np.ndarray, *,
                     target_db: float = DEFAULT_TARGET_DB, budget: float = DEFAULT_BUDGET,
                     config: QuantConfig | dict | str | os.PathLike | None = None, weights: str = "absmax",
                     n_sensitivity: int = DEFAULT_SENSITIVITY_WINDOWS, clip_layers: int = DEFAULT_CLIP_LAYERS,
                     always_sensitivity: bool = False, choose: bool = True, confirm: bool = True,
                     progress: bool = True) -> PrecisionPlan:
    """The automatic precision plan for an export (see the module docstring). `config` is the
    user's config (its float layers stay float and cost nothing against the budget); the returned
    plan's `config` adds the chosen layers. `always_sensitivity` measures the per-layer table even
    when the all-int8 model already meets the target (for reports); `choose=False` only measures
    (the plan keeps every layer int8). Candidates are scored on the QDQ proxy (`_Evaluator`);
    `confirm` scores the chosen plan with the golden model (`golden_sqnr_db`)."""
    if not np.isfinite(target_db):
        raise ValueError(f"target SQNR must be a finite number of dB, got {target_db}")
    if not 0 <= budget <= 10:
        raise ValueError(f"flash budget must be a fraction in [0, 10], got {budget}")
    if n_sensitivity < 1:
        raise ValueError(f"sensitivity windows must be >= 1, got {n_sensitivity}")
    base = as_config(config).with_int8_nodes(quantisable_nodes(export_dir))
    x = np.asarray(windows, np.float32)
    with tempfile.TemporaryDirectory(prefix="lumamba-precision-") as tmp:
        ev = _Evaluator(Path(export_dir), calibration, x, weights, Path(tmp))
        q = ev.quantize(base, qdq=False)
        layers, costs = int8_layers(q), layer_extra_bytes(q)
        total = all_weight_bytes(q.summary)
        allowed = int(budget * total)
        current = ev.sqnr(base)
        plan = PrecisionPlan(target_db, budget, allowed, total, current, current, [], 0, current >= target_db,
                             len(x), layer_bytes=costs, config=base)
        if not plan.met or always_sensitivity:
            plan.sensitivity = layer_sensitivity(ev, base, layers, min(n_sensitivity, len(x)), progress)
        if not plan.met and choose:
            worst = sorted(plan.sensitivity, key=lambda la: plan.sensitivity[la])[:clip_layers]
            # free in flash, so searched in full (not only up to the target): per-feature input
            # scales for the worst Linear layers with uneven input features, then range cuts for
            # the worst layers still without them
            current = _scale_search(ev, base, plan, [la for la in worst if la in _uneven_inputs(q, calibration)],
                                    current)
            inputs = layer_inputs(q)
            current = _clip_search(ev, base, plan, {k: la for la in worst if la not in plan.input_scales
                                                    for k in inputs.get(la, [])}, current, stop_at_target=False)
            chosen, spent = _greedy(ev, base, plan, current)
            plan.float_layers, plan.extra_bytes = chosen, spent
            for layer in chosen:            # a float layer's input scales were not applied: do not report them
                plan.input_scales.pop(layer, None)
                ev.scales.pop(layer, None)
            plan.config = _with_float(base, chosen)
            if chosen and plan.clips:
                # a cut judged while a saturating layer was still int8 may be too timid: retry its
                # other factors with the float layers chosen (free in flash; one trial per factor)
                _clip_search(ev, plan.config, plan, dict(plan.clip_layers), plan.sqnr_db, stop_at_target=False)
        plan.trials = ev.trials
        if confirm:
            plan.golden_sqnr_db = ev.confirm(plan.config)
        return plan


def holdout_split(windows: np.ndarray, every: int = HOLDOUT_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held): every `every`-th window held out; with fewer than 2 windows both are all of them."""
    x = np.asarray(windows, np.float32)
    if len(x) < 2:
        return x, x
    held = np.zeros(len(x), bool)
    held[every - 1::every] = True
    held[-1] |= not held.any()                # 2..every-1 windows: the last one
    return x[~held], x[held]


def plan_precision(export_dir: str | os.PathLike, windows: np.ndarray, *, method: str = "minmax",
                   percentile: float = 99.99, progress: bool = True, **options) -> PrecisionPlan:
    """`choose_precision` measured on held-out windows: a probe calibration (`method`) on the
    others sets the ranges (module docstring, step 0). `options` go to `choose_precision`."""
    fit, held = holdout_split(windows)
    probe = calibrate(export_dir, fit, method=method, percentile=percentile, progress=progress)
    return choose_precision(export_dir, probe, held, progress=progress, **options)


def _uneven_inputs(q: QuantizedModel, calibration: Calibration) -> set[str]:
    """Int8 Linear layers whose input features' largest magnitudes differ by >= UNEVEN_RATIO
    (calibration_features.py): candidates for per-feature input scales."""
    from .calibration_features import feature_range

    out = set()
    for graph in q.graphs.values():
        for node in graph.int8_nodes():
            tensor = node.inputs[0].removesuffix(".q")
            if node.op != "qlinear" or tensor not in calibration.features.get(graph.name, {}):
                continue
            lo, hi = feature_range(calibration.features, graph.name, tensor)
            m = np.maximum(np.abs(lo), np.abs(hi))
            if m.size > 1 and m.max() > 0 and m.max() >= UNEVEN_RATIO * max(np.median(m), 1e-30):
                out.add(node.layer)
    return out


def _best_option(ev: _Evaluator, trial: dict, key: str, options: tuple[float, ...], config: QuantConfig,
                 current: float, kept: float | None = None) -> tuple[float | None, float]:
    """Set trial[key] (ev.scales or ev.clips) to each of `options` but `kept` and score `config`;
    returns the option that gained >= MIN_GAIN_DB over `current` (else `kept`) and its SQNR, with
    trial[key] left at it (removed when there is none)."""
    for option in options:
        if option == kept:
            continue
        trial[key] = option
        value = ev.sqnr(config)
        if value > current + MIN_GAIN_DB:
            kept, current = option, value
    if kept is None:
        trial.pop(key, None)
    else:
        trial[key] = kept
    return kept, current


def _scale_search(ev: _Evaluator, config: QuantConfig, plan: PrecisionPlan, layers: list[str],
                  current: float) -> float:
    """Try per-feature input scales (SCALE_ALPHAS) on each of `layers` under `config`; the best
    alpha that gains >= MIN_GAIN_DB is kept (`ev.scales`, `plan.input_scales`)."""
    for layer in layers:
        alpha, current = _best_option(ev, ev.scales, layer, SCALE_ALPHAS, config, current)
        if alpha is not None:
            plan.input_scales[layer] = alpha
    plan.sqnr_db, plan.met = current, current >= plan.target_db
    return current


def _clip_search(ev: _Evaluator, config: QuantConfig, plan: PrecisionPlan, candidates: dict[str, str],
                 current: float, stop_at_target: bool = True) -> float:
    """Try CLIP_FACTORS on each "graph:tensor" of `candidates` (-> the layer it feeds) under
    `config`; a cut that gains >= MIN_GAIN_DB is kept (`ev.clips`, `plan.clips`)."""
    for key, layer in candidates.items():
        if stop_at_target and current >= plan.target_db:
            break
        factor, current = _best_option(ev, ev.clips, key, CLIP_FACTORS, config, current, ev.clips.get(key))
        if factor is not None:
            plan.clips[key], plan.clip_layers[key] = factor, layer
    plan.sqnr_db, plan.met = current, current >= plan.target_db
    return current


def _greedy(ev: _Evaluator, base: QuantConfig, plan: PrecisionPlan, current: float) -> tuple[list[str], int]:
    """Move layers to float, least sensitive-SQNR first, within the budget; then drop the ones not needed."""
    chosen: list[str] = []
    spent = 0
    for layer in sorted(plan.sensitivity, key=lambda la: plan.sensitivity[la]):
        if current >= plan.target_db:
            break
        if spent + plan.layer_bytes[layer] > plan.budget_bytes:
            plan.skipped.append(layer)
            continue
        value = ev.sqnr(_with_float(base, chosen + [layer]))
        if value <= current + MIN_GAIN_DB:     # errors can cancel: a layer that does not help stays int8
            continue
        chosen.append(layer)
        spent += plan.layer_bytes[layer]
        current = value
    # an early choice may be unnecessary once later ones are float: try without each, cheapest gain first
    if current >= plan.target_db and len(chosen) > 1:
        for layer in sorted(chosen, key=lambda la: -plan.layer_bytes[la]):
            rest = [la for la in chosen if la != layer]
            value = ev.sqnr(_with_float(base, rest))
            if value >= plan.target_db:
                chosen, current = rest, value
        spent = sum(plan.layer_bytes[la] for la in chosen)
    plan.sqnr_db, plan.met = current, current >= plan.target_db
    return chosen, spent


def record_plan(quant_dir: str | os.PathLike, plan: PrecisionPlan | None) -> None:
    """Write the plan (or {"mode": "int8"} for the fixed all-int8 mode) into quant.json under
    "precision" (temp file + os.replace: a half-written index never replaces the good one)."""
    path = Path(quant_dir) / INDEX
    index = json.loads(path.read_text(encoding="utf-8"))
    index["precision"] = plan.to_dict() if plan is not None else {"mode": "int8"}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
