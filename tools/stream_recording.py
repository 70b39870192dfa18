"""Write a continuous synthetic recording for the streaming demo: a normal subject, then an abnormal
one (the synthetic corpus's simulator, lumamba.data.synth), as a `.npz` that `lumamba-stream`
reads (`data` (21, N) referential microvolts, `channels`, `sfreq`, per-sample `labels`).

    python tools/stream_recording.py --out out/stream/rec.npz [--seconds 30] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lumamba.data.synth import ELECTRODES, SynthConfig, make_subject, simulate_session

SFREQ = 256.0


def recording(seconds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(data (21, N) microvolts, labels (N,)): the first half normal, the second half abnormal."""
    rng = np.random.default_rng(seed)
    config = SynthConfig(seed=seed, severity=1.0)
    halves, labels = [], []
    for label, abnormality in ((0, None), (1, "diffuse slowing")):
        subject = make_subject(rng, f"stream{label}", "eval", label, abnormality, config)
        n = int(seconds / 2 * SFREQ)
        eeg, _ = simulate_session(subject, SFREQ, n, rng)
        halves.append(eeg)
        labels.append(np.full(n, label, np.int64))
    return np.concatenate(halves, axis=1), np.concatenate(labels)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the .npz to write")
    p.add_argument("--seconds", type=int, default=30, help="length of the recording (default 30)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.seconds < 10:
        p.error(f"--seconds {args.seconds}: at least 10 (two 5 s windows)")
    data, labels = recording(args.seconds, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, data=data, channels=np.array(ELECTRODES), sfreq=SFREQ, labels=labels)
    print(f"wrote {args.out}: {data.shape[0]} channels, {data.shape[1] / SFREQ:.0f} s at {SFREQ:.0f} Hz, "
          "normal then abnormal (diffuse slowing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
