"""`report.json`: what one `lumamba-export` run produced, machine-readable, for users' CI.

Keys: `board`, `target` (the real chip checked), `precision`, `macs_per_window` (deployed MACs:
`lumamba.profile.deployed_macs`), `instructions_per_window` and `instructions_per_mac` (mean of the
verification windows on the emulated board: QEMU instruction counts, not cycles; null on the host),
`flash_bytes` (deployable image in the internal flash), `regions` (bytes used and available per
memory region: `internal_flash`, `external_flash` where the board has one, `ram`), `ram_bytes` (static RAM + stack bound), `ram_lower_bound_bytes`
(the least arena any placement of this schedule needs), `arena_bytes`, `parity` (the verification:
reference, bit-exact or max abs error, summary), for int8 `drift` (drift.json's headline) and
`int8_precision` (the automatic precision plan's headline from int8/quant.json: layers kept float,
per-feature input scales (layer -> alpha), input ranges cut, their flash cost, held-out logit
SQNR before and after on the proxy, and the chosen plan's on the golden model) and, with
`lumamba-export --profile`, `profile`: the file (profile.json), instructions per window per graph
and the GEMM kernels' instructions per MAC.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

REPORT_JSON = "report.json"


def run_report(*, board: str, precision: str, macs_per_window: int, memory: dict, verification=None,
               drift: dict | None = None, precision_plan: dict | None = None, profile: dict | None = None) -> dict:
    """The report of one export (see the module docstring); `verification` is a
    `lumamba.export.verify.Verification` or None when --no-verify."""
    insns = int(np.mean(verification.insns)) if verification is not None and verification.insns else None
    report = {
        "board": board,
        "target": memory.get("target"),
        "precision": precision,
        "macs_per_window": int(macs_per_window),
        "instructions_per_window": insns,
        "instructions_per_mac": round(insns / macs_per_window, 3) if insns else None,
        "flash_bytes": memory["flash"]["deployable"],
        "ram_bytes": memory["ram"]["total"],
        "regions": _regions(memory),
        "input_window_bytes": memory["ram"].get("input_window"),
        "ram_lower_bound_bytes": memory["ram"].get("arena_lower_bound"),
        "arena_bytes": memory["ram"].get("arena"),
        "parity": None if verification is None else {
            "reference": verification.reference_name, "bit_exact": bool(verification.bit_exact),
            "max_abs_error": float(verification.max_abs_error), "windows": int(len(verification.logits)),
            "summary": verification.summary()},
    }
    if drift is not None:
        report["drift"] = {k: drift[k] for k in ("auroc_drift", "label_agreement", "passed", "n_windows")
                           if k in drift}
        report["drift"].update(auroc_float=drift["float"]["auroc"], auroc_int8=drift["int8"]["auroc"],
                               logit_sqnr_db=drift["logits"]["sqnr_db"])
    if precision_plan is not None:
        keys = ("mode", "float_layers", "input_scales", "input_range_cuts", "extra_flash_bytes",
                "all_int8_weight_bytes", "all_int8_sqnr_db", "sqnr_db", "golden_sqnr_db", "target_sqnr_db", "met")
        report["int8_precision"] = {k: precision_plan[k] for k in keys if k in precision_plan}
    if profile is not None:   # kernel_profile.KernelProfile.to_json()
        report["profile"] = {"file": "profile.json",
                             "graphs": {g: v["instructions"] for g, v in profile["graphs"].items()},
                             "gemm_instructions_per_mac": profile["gemm"]["instructions_per_mac"]}
    return report


def _regions(memory: dict) -> dict:
    regions = {"internal_flash": {"used": memory["flash"]["deployable"], "limit": memory["flash"].get("limit")},
               "ram": {"used": memory["ram"]["total"], "limit": memory["ram"].get("limit")}}
    ext = memory.get("external_flash")
    if ext is not None:
        regions["external_flash"] = {"used": ext["weights"], "limit": ext["limit"], "part": ext["part"],
                                     "weight_arrays": len(ext["arrays"])}
    return regions


def write_report(report: dict, directory: str | os.PathLike) -> Path:
    path = Path(directory) / REPORT_JSON
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return path
