"""The int8 step of `lumamba-export --int8`: calibrate, choose the precision, quantise, record.

One function, so the export CLI only forwards its options (--target-sqnr, --precision,
--flash-budget) and prints the returned line.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from .auto_precision import DEFAULT_BUDGET, DEFAULT_TARGET_DB, choose_precision, cut_ranges, holdout_split, record_plan
from .calibration import calibrate, merge_minmax
from .quantizer import QuantizedModel, quantize

PRECISION_MODES = ("auto", "int8")


def quantize_for_export(onnx_dir: str | os.PathLike, windows: np.ndarray, out_dir: str | os.PathLike, *,
                        config=None, precision: str = "auto", target_db: float = DEFAULT_TARGET_DB,
                        budget: float = DEFAULT_BUDGET, progress: bool = True,
                        warn: Callable[[str], None] = print) -> tuple[QuantizedModel, str]:
    """Calibrate on `windows`, plan the precision ("auto": keep the most sensitive layers float
    until the logit SQNR on held-out windows reaches `target_db` within `budget`; "int8": `config`
    only), quantise into
    `out_dir` and record the plan in its quant.json. Returns (model, one report line); a missed
    target is passed to `warn`, not raised."""
    if precision not in PRECISION_MODES:
        raise ValueError(f"precision must be one of {list(PRECISION_MODES)}, got {precision!r}")
    plan, scales = None, None
    if precision == "auto":
        # the plan's probe calibration (the windows not held out) plus the held-out windows' give
        # the final MinMax ranges exactly: the float schedule runs once per window
        fit, held = holdout_split(windows)
        probe = calibrate(onnx_dir, fit, progress=progress)
        calibration = merge_minmax(probe, calibrate(onnx_dir, held, progress=progress)) if len(windows) > 1 else probe
        plan = choose_precision(onnx_dir, probe, held, target_db=target_db, budget=budget, config=config,
                                progress=progress)
        if plan.warning():
            warn(plan.warning())
        config = plan.config
        calibration = cut_ranges(calibration, plan.clips)      # the plan's cuts, on the final ranges
        scales = plan.input_scales                              # folded from the final per-feature ranges
    else:
        calibration = calibrate(onnx_dir, windows, progress=progress)
    q = quantize(onnx_dir, calibration, config=config, out_dir=Path(out_dir), input_scales=scales)
    record_plan(q.out_dir, plan)
    line = plan.summary() if plan is not None else "int8 (--precision int8: automatic mode off)"
    return q, line
