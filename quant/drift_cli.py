"""`lumamba-eval drift`: float vs int8 drift, per-layer sensitivity and the automatic precision plan, for CI.

    lumamba-eval drift --checkpoint RUN/best.safetensors --data CACHE [--max-drift 0.01]
                       [--min-agreement 0.99] [--precision auto|int8] [--target-sqnr 20]
                       [--junit drift.xml]

Steps: export (reused when current), calibrate, per-layer sensitivity on held-out calibration windows
and the automatic plan (auto_precision.py), then `drift_report` with that plan's config. Prints
the sensitivity table, writes drift.json, drift.png and sensitivity.png (bars: SQNR with only that
layer int8; the layers the plan keeps float are marked), and with --junit a JUnit XML with one
test case per gated metric. Exit 0 passed, 1 a gate failed (the message names the metric), 2 bad
options or data.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .auto_precision import DEFAULT_BUDGET, DEFAULT_SENSITIVITY_WINDOWS, DEFAULT_TARGET_DB, PrecisionPlan
from .drift import DRIFT_JSON, DRIFT_PNG

SENSITIVITY_PNG = "sensitivity.png"


def _fraction(name: str, lo: float = 0.0, hi: float = 1.0):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r}: not a number") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{name} {text}: must be between {lo:g} and {hi:g}")
        return v
    return parse


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r}: not an integer") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} {text}: must be >= 1")
        return v
    return parse


def _db(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target-sqnr {text!r}: not a number of dB") from None
    if not -20 <= v <= 120:
        raise argparse.ArgumentTypeError(f"--target-sqnr {text}: must be between -20 and 120 dB")
    return v


def add_drift_parser(sub) -> None:
    """The `drift` subcommand of `lumamba-eval`."""
    p = sub.add_parser("drift", help="float vs int8 (golden model): AUROC drift, label agreement, logit SQNR, "
                                     "per-layer sensitivity and the automatic precision plan (JSON, PNGs, "
                                     "JUnit); exit 1 naming the failing metric")
    p.add_argument("--checkpoint", required=True, help="classifier checkpoint (safetensors)")
    p.add_argument("--data", required=True, help="window-cache directory or .npz")
    p.add_argument("--max-drift", type=float, default=0.01, help="largest allowed |AUROC_int8 - AUROC_float|")
    p.add_argument("--min-agreement", type=_fraction("--min-agreement"), default=0.0,
                   help="smallest allowed fraction of windows whose int8 label equals the float label "
                        "(e.g. 0.99; default 0: not gated)")
    p.add_argument("--precision", default="auto", choices=["auto", "int8"],
                   help="auto: keep the most sensitive layers float until --target-sqnr (default); "
                        "int8: every learned layer int8 (plus --config)")
    p.add_argument("--target-sqnr", type=_db, default=DEFAULT_TARGET_DB,
                   help=f"automatic precision: logit SQNR to reach on held-out calibration windows (default "
                        f"{DEFAULT_TARGET_DB:g} dB)")
    p.add_argument("--flash-budget", type=_fraction("--flash-budget", 0.0, 10.0), default=DEFAULT_BUDGET,
                   help=f"automatic precision: extra weight bytes allowed, as a fraction of the all-int8 model "
                        f"(default {DEFAULT_BUDGET:g})")
    p.add_argument("--sensitivity-windows", type=_positive_int("--sensitivity-windows"),
                   default=DEFAULT_SENSITIVITY_WINDOWS, help="held-out calibration windows used for the per-layer sensitivity")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write a JUnit XML report (CI)")
    p.add_argument("--out", default=None, help="output directory (default: <checkpoint dir>/drift)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="windows to evaluate")
    p.add_argument("--calib-split", default="train", choices=["train", "val", "test"])
    p.add_argument("--calib-windows", type=_positive_int("--calib-windows"), default=256,
                   help="calibration-set size")
    p.add_argument("--windows", type=_positive_int("--windows"), default=None,
                   help="evaluate a random subset of this many windows")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"],
                   help="calibration statistic")
    p.add_argument("--percentile", type=float, default=99.99)
    p.add_argument("--config", default=None, help="quantisation config (JSON/TOML) moving layers to float")
    p.add_argument("--n-classes", type=int, default=2)
    p.add_argument("--channels", default="", help="comma-separated channel names to select")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_drift_cli)


def precision_plan(args, out: Path) -> PrecisionPlan:
    """Export (reused when current), calibrate and plan, as drift_report will quantise."""
    from lumamba.checkpoint import load_pretrained
    from lumamba.export.onnx.exporter import export_onnx

    from .auto_precision import plan_precision
    from .calibration import load_windows
    from .drift import _export_is_current

    channels = args.channels.split(",") if args.channels else None
    options = dict(seed=args.seed, val_fraction=args.val_fraction)
    x, _, names = load_windows(args.data, args.split, args.windows, channels=channels, **options)
    x_cal, _, _ = load_windows(args.data, args.calib_split, args.calib_windows, channels=names, **options)
    if not _export_is_current(out / "onnx", args.checkpoint, names, x.shape[-1], args.n_classes):
        model = load_pretrained(args.checkpoint, n_classes=args.n_classes).eval()
        export_onnx(model, names, x.shape[-1], out / "onnx", checkpoint=args.checkpoint)
    return plan_precision(out / "onnx", x_cal, method=args.method, percentile=args.percentile,
                          target_db=args.target_sqnr, budget=args.flash_budget, config=args.config,
                          n_sensitivity=args.sensitivity_windows, always_sensitivity=True,
                          choose=args.precision == "auto", progress=not args.no_progress)


def gate_checks(report: dict, max_drift: float, min_agreement: float) -> list[dict]:
    """The gated metrics, each {"name", "passed", "message"}."""
    drift, agree = report["auroc_drift"], report["label_agreement"]
    checks = [{"name": "auroc_drift", "passed": drift is not None and drift <= max_drift,
               "message": ("AUROC is undefined (one class only)" if drift is None else
                           f"|AUROC_int8 - AUROC_float| = {drift:.4f} "
                           f"{'within' if drift <= max_drift else 'exceeds'} --max-drift {max_drift:g}")},
              {"name": "label_agreement", "passed": agree >= min_agreement,
               "message": f"label agreement {100 * agree:.2f} % "
                          f"{'meets' if agree >= min_agreement else 'is below'} --min-agreement "
                          f"{100 * min_agreement:.2f} %"}]
    return checks


def sensitivity_table(plan: PrecisionPlan) -> str:
    """Layers, least SQNR first: SQNR with only that layer int8, flash cost if float, choice."""
    cut = {layer: f for key, f in plan.clips.items() for layer in [plan.clip_layers.get(key)]}
    rows = [f"{'layer':52s} {'SQNR dB':>8s} {'float +B':>9s}  choice"]
    for layer, db in sorted(plan.sensitivity.items(), key=lambda kv: kv[1]):
        choice = "float (auto)" if layer in plan.float_layers else (
            "int8 (over budget)" if layer in plan.skipped else "int8")
        if layer in cut:
            choice += f", input range x{cut[layer]:g}"
        if layer in plan.input_scales:
            choice += f", per-feature input scales (alpha {plan.input_scales[layer]:g})"
        rows.append(f"{layer:52s} {db:8.1f} {plan.layer_bytes.get(layer, 0):9,d}  {choice}")
    return "\n".join(rows)


def plot_sensitivity(plan: PrecisionPlan, path: Path) -> Path:
    """Horizontal bars of the per-layer sensitivity; float choices in orange, the target as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = sorted(plan.sensitivity.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(8, max(3.0, 0.22 * len(items) + 1.2)), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(items)), [min(v, 99.0) for _, v in items],
            color=["tab:orange" if k in plan.float_layers else "tab:blue" for k, _ in items])
    ax.set_yticks(range(len(items)), [f"{k} (float)" if k in plan.float_layers else k for k, _ in items], fontsize=6)
    ax.invert_yaxis()
    if plan.float_layers or plan.met:
        ax.axvline(plan.target_db, color="tab:red", linestyle="--", linewidth=1, label=f"target {plan.target_db:g} dB")
        ax.legend(loc="lower right", fontsize=7)
    ax.set(xlabel="logit SQNR with only this layer int8 (dB)",
           title=f"per-layer sensitivity; all-int8 {plan.int8_sqnr_db:.1f} dB -> {plan.sqnr_db:.1f} dB")
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path


def run_drift_cli(args) -> int:
    from lumamba.metrics import write_json

    from .drift import drift_report
    from .junit import write_junit

    started = time.time()
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "drift"
    try:
        plan = precision_plan(args, out)
        report = drift_report(args.checkpoint, args.data, out, max_drift=args.max_drift, split=args.split,
                              calib_split=args.calib_split, n_calib=args.calib_windows, n_eval=args.windows,
                              method=args.method, percentile=args.percentile, config=plan.config.to_dict(),
                              clips=plan.clips, input_scales=plan.input_scales,
                              n_classes=args.n_classes, channels=args.channels.split(",") if args.channels else None,
                              seed=args.seed, val_fraction=args.val_fraction, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:      # bad paths, data, config: a message, not a traceback
        print(f"lumamba-eval drift: error: {e}", file=sys.stderr)
        return 2
    checks = gate_checks(report, args.max_drift, args.min_agreement)
    report["precision"] = plan.to_dict() if args.precision == "auto" else {
        "mode": "int8", "sensitivity_db": plan.to_dict()["sensitivity_db"]}
    report["min_agreement"] = args.min_agreement
    report["passed"] = all(c["passed"] for c in checks)
    report["failed"] = [c["name"] for c in checks if not c["passed"]]
    write_json(report, out / DRIFT_JSON)
    plot_sensitivity(plan, out / SENSITIVITY_PNG)
    if args.junit:
        write_junit(args.junit, "lumamba-eval drift", checks, time.time() - started)

    print(sensitivity_table(plan))
    if args.precision == "auto":
        print("precision: " + plan.summary())
    summary = {k: report[k] for k in ("auroc_drift", "max_drift", "label_agreement", "min_agreement", "passed")}
    summary.update(auroc_float=report["float"]["auroc"], auroc_int8=report["int8"]["auroc"],
                   logit_sqnr_db=report["logits"]["sqnr_db"], float_layers=plan.float_layers,
                   json=str(out / DRIFT_JSON), png=str(out / DRIFT_PNG), sensitivity_png=str(out / SENSITIVITY_PNG),
                   **({"junit": str(args.junit)} if args.junit else {}))
    print(json.dumps(summary, indent=1))
    if not report["passed"]:
        for c in checks:
            if not c["passed"]:
                print(f"drift check failed: {c['name']}: {c['message']}", file=sys.stderr)
        return 1
    return 0
