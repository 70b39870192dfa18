"""stream.png: the streamed EEG, the decision of every window, and the recording's labels."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def plot_stream(path: str | Path, uv: np.ndarray, channels: list[str], sfreq: float, records: list[dict],
                labels: np.ndarray | None, title: str, max_traces: int = 8) -> Path:
    """Draw ``uv`` (C, N) microvolts (the first ``max_traces`` channels), each decision as a bar
    over its window's last hop and its logits, and ``labels`` (N,) if given; written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    t = np.arange(uv.shape[1]) / sfreq
    rows = 3 if labels is not None else 2
    fig, axes = plt.subplots(rows, 1, figsize=(12, 2.2 + 1.6 * rows), sharex=True,
                             gridspec_kw={"height_ratios": [3] + [1] * (rows - 1)})
    ax = axes[0]
    n = min(max_traces, uv.shape[0])
    spread = float(np.percentile(np.abs(uv[:n]), 99)) * 2 or 1.0
    for i in range(n):
        ax.plot(t, uv[i] - i * spread, lw=0.5, color="k")
    ax.set_yticks([-i * spread for i in range(n)], channels[:n], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax = axes[1]
    for r in records:
        if r["class"] is None:
            continue
        ax.plot([r["end_s"] - r["hop_s"], r["end_s"]], [r["class"], r["class"]], lw=4,
                color="tab:green" if r["agrees"] else "tab:red")
        ax.axvline(r["end_s"], color="0.85", lw=0.5)
    classes = max([r["class"] for r in records if r["class"] is not None], default=1)
    ax.set_ylim(-0.5, max(1, classes) + 0.5)
    ax.set_ylabel("decision")
    ax.set_yticks(range(max(1, classes) + 1))
    if labels is not None:
        ax = axes[2]
        shown = np.where(labels < 0, np.nan, labels.astype(float))
        ax.plot(t[: len(shown)], shown, color="tab:blue", lw=1.5, drawstyle="steps-post")
        ax.set_ylabel("label")
        ax.set_ylim(-0.5, max(1.0, np.nanmax(shown) if np.isfinite(shown).any() else 1.0) + 0.5)
    axes[-1].set_xlabel("time (s); decision bars cover the hop ending at each decision "
                        "(green: logits agree with the reference, red: they do not)")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
