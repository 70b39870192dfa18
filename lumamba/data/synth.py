"""A synthetic corpus in the TUAB v3 layout, for tests, the demo and CI (real TUH data is licensed).

It exercises the real reader: EDF files under ``edf/{train,eval}/{normal,abnormal}/01_tcp_ar/``
named ``<subject>_s<NNN>_t<NNN>.edf``, TUH labels (``EEG FP1-REF``, some ``-LE``, some in mixed
case, some in shuffled order), non-scalp extras (EKG, PHOTIC, IBI at 1 Hz, ...), files without
A1/A2, sampling rates 250/256/512 Hz, durations that are not multiples of 5 s, and a TUH patient
field with ``Age:NN`` (sometimes 999).

Signals, in microvolts against a common reference: spatially smooth 1/f background, a waxing and
waning posterior alpha rhythm, central beta, a little frontal theta, vigilance that drifts
(drowsy stretches: weaker, slower alpha and more theta), slow drift, 60 Hz mains, eye blinks,
muscle bursts, ECG leaking into the ears, and the odd electrode pop. Abnormal subjects share a
slower, weaker posterior rhythm with more theta, plus one of three clinically motivated patterns
(taken in turn), each with a random, mostly mild severity: diffuse slowing (intermittent delta and
theta everywhere), focal slowing (polymorphic delta over one region, sometimes with sharp waves,
alpha reduced on that side) or a poorly organised background (weak alpha, more theta and beta).
Drowsy stretches, which occur in both classes, and mild abnormalities overlap, so a band-power
classifier is good but not perfect (window AUROC about 0.75-0.95 depending on the seed). Every
draw comes from ``numpy.random.default_rng`` seeded by (seed, subject, session), so a seed gives
byte-identical files.
"""

from __future__ import annotations

import datetime
import json
import os
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .channels import EAR_ELECTRODES, TUH_ELECTRODES
from .edf_reader import UNKNOWN_AGE

# Approximate scalp positions (x right, y towards the nose) on a unit circle.
POSITIONS: dict[str, tuple[float, float]] = {
    "FP1": (-0.31, 0.95), "FP2": (0.31, 0.95), "F7": (-0.81, 0.59), "F3": (-0.40, 0.50),
    "FZ": (0.0, 0.45), "F4": (0.40, 0.50), "F8": (0.81, 0.59), "T3": (-1.0, 0.0),
    "C3": (-0.50, 0.0), "CZ": (0.0, 0.0), "C4": (0.50, 0.0), "T4": (1.0, 0.0),
    "T5": (-0.81, -0.59), "P3": (-0.40, -0.50), "PZ": (0.0, -0.45), "P4": (0.40, -0.50),
    "T6": (0.81, -0.59), "O1": (-0.31, -0.95), "O2": (0.31, -0.95), "A1": (-1.15, -0.10),
    "A2": (1.15, -0.10),
}
ELECTRODES = TUH_ELECTRODES
_XY = np.array([POSITIONS[e] for e in ELECTRODES])
# Mixed-case spellings TUH uses in some files.
_MIXED_CASE = {"FP1": "Fp1", "FP2": "Fp2", "FZ": "Fz", "CZ": "Cz", "PZ": "Pz"}
# Non-scalp channels: label, unit, sampling rate (None = the file's rate).
_EXTRAS: tuple[tuple[str, str, float | None], ...] = (
    ("EKG1-REF", "uV", None), ("PHOTIC-REF", "uV", None), ("IBI", "", 1.0), ("BURSTS", "", 1.0),
    ("SUPPR", "", 1.0), ("EEG ROC-REF", "uV", None), ("EEG LOC-REF", "uV", None),
    ("EEG 26-REF", "uV", None),
)
ABNORMALITIES = ("diffuse slowing", "focal slowing", "poor background")
_FOCI = ("F7", "T3", "T5", "F8", "T4", "T6", "C3", "C4", "P3", "P4", "F3", "F4")


@dataclass(frozen=True)
class SynthConfig:
    """Size and make-up of the corpus. The default generates and preprocesses in seconds."""

    seed: int = 0
    train_subjects: int = 24
    eval_subjects: int = 8
    max_sessions: int = 2
    min_duration_s: int = 31
    max_duration_s: int = 76
    sampling_rates: tuple[float, ...] = (250.0, 256.0, 512.0)
    abnormal_fraction: float = 0.5
    no_ears_fraction: float = 0.15  # files without A1/A2
    linked_ear_fraction: float = 0.2  # files labelled -LE instead of -REF
    mixed_case_fraction: float = 0.15
    shuffled_order_fraction: float = 0.15
    unknown_age_fraction: float = 0.1
    drowsy_fraction: float = 0.3  # sessions that are mostly drowsy (slower, weaker alpha)
    severity: float = 1.0  # scales every abnormal effect


@dataclass
class Subject:
    """Per-subject ground truth (written to ``synth.json``)."""

    id: str
    official_set: str
    label: int
    sex: str
    age: int | None
    alpha_freq: float
    alpha_uv: float
    background_uv: float
    background_exponent: float
    abnormality: str | None = None
    severity: float = 0.0
    focus: str | None = None


# ---------------------------------------------------------------------------------------------
# Signal building blocks (each returns unit-RMS noise shaped in the frequency domain)

def _shaped_noise(rng: np.random.Generator, rows: int, n: int, fs: float,
                  amplitude: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    spectrum = amplitude(freqs) * (rng.standard_normal((rows, freqs.size))
                                   + 1j * rng.standard_normal((rows, freqs.size)))
    # Zero mean: without this a very slow shape on a short recording would be nearly constant,
    # and scaling it to unit RMS would blow up rounding noise.
    spectrum[:, 0] = 0
    x = np.fft.irfft(spectrum, n, axis=-1)
    return x / (x.std(axis=-1, keepdims=True) + 1e-12)


def _one_over_f(exponent: float, f_min: float = 0.3, f_knee: float = 40.0):
    """Power ~ 1/f^exponent above f_min, falling faster above f_knee (scalp EEG roll-off)."""
    def amplitude(f: np.ndarray) -> np.ndarray:
        f = np.maximum(f, f_min)
        return f ** (-exponent / 2) / (1 + (f / f_knee) ** 4)
    return amplitude


def _band(f0: float, width: float):
    """Gaussian spectral peak: an oscillation at f0 Hz with the given bandwidth."""
    return lambda f: np.exp(-0.5 * ((f - f0) / width) ** 2)


def _envelope(rng: np.random.Generator, rows: int, n: int, fs: float, depth: float) -> np.ndarray:
    """Slow (< 0.5 Hz) positive amplitude modulation with mean 1: waxing and waning."""
    slow = _shaped_noise(rng, rows, n, fs, _band(0.0, 0.25))
    env = np.exp(depth * slow)
    return env / env.mean(axis=-1, keepdims=True)


def _spatial(centre: tuple[float, float] | np.ndarray, sigma: float) -> np.ndarray:
    """Weight of a source at ``centre`` on each electrode (1 at the centre)."""
    d2 = ((_XY - np.asarray(centre)) ** 2).sum(axis=1)
    return np.exp(-d2 / (2 * sigma ** 2))


def _smoothing(sigma: float) -> np.ndarray:
    """Mixing matrix that makes independent per-electrode sources spatially smooth."""
    d2 = ((_XY[:, None, :] - _XY[None, :, :]) ** 2).sum(axis=-1)
    w = np.exp(-d2 / (2 * sigma ** 2))
    return w / np.sqrt((w ** 2).sum(axis=1, keepdims=True))


def _events(rng: np.random.Generator, duration: float, rate: float) -> np.ndarray:
    return np.sort(rng.uniform(0, duration, rng.poisson(rate * duration)))


def _add_transients(x: np.ndarray, fs: float, times: np.ndarray, shape: np.ndarray) -> None:
    for t in times:
        start = int(t * fs)
        stop = min(start + shape.size, x.size)
        x[start:stop] += shape[: stop - start]


# ---------------------------------------------------------------------------------------------
# Subjects and sessions

def _subject_ids(rng: np.random.Generator, count: int) -> list[str]:
    """TUH v3 style ids: 8 lowercase letters."""
    ids: list[str] = []
    letters = np.array(list(string.ascii_lowercase))
    while len(ids) < count:
        candidate = "".join(rng.choice(letters, 8))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def make_subject(rng: np.random.Generator, subject_id: str, official_set: str, label: int,
                  abnormality: str | None, config: SynthConfig) -> Subject:
    """A subject with random traits (age, alpha rhythm, background) and, for label 1, ``abnormality``."""
    age = int(rng.integers(25, 86) if label else rng.integers(18, 71))
    subject = Subject(
        id=subject_id, official_set=official_set, label=label, sex=str(rng.choice(["F", "M"])),
        age=None if rng.random() < config.unknown_age_fraction else age,
        alpha_freq=float(np.clip(rng.normal(10.0 - 0.01 * (age - 40), 0.5), 8.5, 11.5)),
        alpha_uv=float(rng.uniform(13, 20)), background_uv=float(rng.uniform(9, 13)),
        background_exponent=float(rng.uniform(1.0, 1.4)))
    if label:
        subject.abnormality = abnormality
        subject.severity = float(rng.uniform(0.1, 0.4) * config.severity)
        if subject.abnormality == "focal slowing":
            subject.focus = str(rng.choice(_FOCI))
    return subject


def simulate_session(subject: Subject, fs: float, n: int, rng: np.random.Generator,
                     drowsy: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """EEG of one session: (21, n) referential microvolts in ``ELECTRODES`` order, and the
    non-scalp signals (EKG, eye channels) by name."""
    x = _brain_activity(subject, fs, n, rng, drowsy)
    heart = _add_artifacts(x, fs, rng)
    extras = {"EKG1-REF": 800 * heart - 5 * _shaped_noise(rng, 1, n, fs, _one_over_f(1.0))[0],
              "EEG ROC-REF": x[ELECTRODES.index("FP2")] * 1.2 + 5 * rng.standard_normal(n),
              "EEG LOC-REF": x[ELECTRODES.index("FP1")] * 1.2 + 5 * rng.standard_normal(n),
              "EEG 26-REF": 10 * _shaped_noise(rng, 1, n, fs, _one_over_f(1.0))[0]}
    return x, extras


def _brain_activity(subject: Subject, fs: float, n: int, rng: np.random.Generator,
                    drowsy: bool) -> np.ndarray:
    """Background, rhythms and the subject's abnormality: (21, n) microvolts."""
    duration = n / fs
    s = subject.severity
    n_el = len(ELECTRODES)
    smooth = _smoothing(0.45)

    alpha_freq = subject.alpha_freq + rng.normal(0, 0.2)
    alpha_uv = subject.alpha_uv * rng.uniform(0.9, 1.1)
    theta_uv, beta_uv, delta_uv, slow_uv = 3.0, 3.0, 3.0, 0.0
    alpha_side = np.ones(n_el)
    if subject.abnormality is not None:
        # Common to every abnormal pattern: a slower, weaker posterior rhythm and more theta.
        alpha_freq -= 0.5 + 1.5 * s
        alpha_uv *= 1 - 0.3 * s
        theta_uv += 6 * s
        slow_uv += 6 * s
    if subject.abnormality == "diffuse slowing":
        slow_uv += 20 * s
        theta_uv += 8 * s
    elif subject.abnormality == "poor background":
        alpha_uv *= 1 - 0.6 * s
        theta_uv += 6 * s
        beta_uv += 3 * s
    elif subject.abnormality == "focal slowing":
        side = np.sign(POSITIONS[subject.focus][0])
        alpha_side = np.where(_XY[:, 0] * side > 0.1, 1 - 0.6 * s, 1.0)
    alpha_freq = max(alpha_freq, 6.5)

    # Vigilance drifts over tens of seconds in every recording, normal or not: drowsy stretches
    # weaken and slow alpha and bring theta. Much of the overlap between classes comes from it.
    drowsiness = 1 / (1 + np.exp(-((0.5 if drowsy else -1.5)
                                   + 2.0 * _shaped_noise(rng, 1, n, fs, _band(0.0, 0.03))[0])))

    x = subject.background_uv * (smooth @ _shaped_noise(
        rng, n_el, n, fs, _one_over_f(subject.background_exponent)))

    # Posterior alpha: left, right and midline generators with their own waxing and waning.
    alpha = np.zeros((n_el, n))
    for centre in ((-0.35, -0.9), (0.35, -0.9), (0.0, -0.55)):
        osc = _shaped_noise(rng, 1, n, fs, _band(alpha_freq - 0.8 * drowsiness.mean(), 0.4))[0]
        alpha += _spatial(centre, 0.4)[:, None] * osc * _envelope(rng, 1, n, fs, 0.7)
    x += alpha_uv * alpha_side[:, None] * alpha * (1 - 0.7 * drowsiness)

    beta = sum(_spatial(c, 0.45)[:, None] * _shaped_noise(rng, 1, n, fs, _band(20.0, 3.0))
               for c in ((-0.5, 0.1), (0.5, 0.1)))
    x += beta_uv * beta
    theta = _spatial((0.0, 0.3), 0.6)[:, None] * _shaped_noise(rng, 1, n, fs, _band(6.0, 1.0))
    x += theta_uv * theta * (1 + 2.0 * drowsiness)
    x += delta_uv * (smooth @ _shaped_noise(rng, n_el, n, fs, _band(2.0, 1.0))) / 2
    if slow_uv:  # abnormal slowing comes and goes
        slow = smooth @ _shaped_noise(rng, n_el, n, fs, _band(2.0, 1.2))
        x += slow_uv * slow * _envelope(rng, 1, n, fs, 0.8) / 2

    if subject.abnormality == "focal slowing":
        focal = _spatial(POSITIONS[subject.focus], 0.4)[:, None]
        delta = _shaped_noise(rng, 1, n, fs, _band(1.8, 0.8)) * _envelope(rng, 1, n, fs, 0.8)
        x += (15 + 40 * s) * focal * delta
        if rng.random() < 0.5:  # interictal sharp waves over the focus
            t = np.arange(int(0.3 * fs)) / fs
            sharp = (-60 * np.exp(-((t - 0.03) / 0.015) ** 2)
                     + 25 * np.exp(-((t - 0.15) / 0.06) ** 2))
            wave = np.zeros(n)
            _add_transients(wave, fs, _events(rng, duration, 0.05 + 0.15 * s), sharp)
            x += focal * wave
    return x


def _add_artifacts(x: np.ndarray, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Add blinks, muscle, an electrode pop, ECG, mains, drift and the reference's own activity
    to ``x`` in place; returns the heart signal (for the EKG channel)."""
    n_el, n = x.shape
    duration = n / fs
    blink = np.hanning(int(rng.uniform(0.25, 0.45) * fs)) * rng.uniform(60, 150)
    eye = np.zeros(n)
    _add_transients(eye, fs, _events(rng, duration, rng.uniform(0.1, 0.4)), blink)
    frontal = _spatial((0.0, 1.1), 0.35)
    x += frontal[:, None] * eye
    muscle = np.zeros(n)
    burst_noise = _shaped_noise(rng, 1, n, fs, lambda f: ((f > 20) & (f < 0.45 * fs)) * 1.0)[0]
    for t in _events(rng, duration, 0.03):
        start, stop = int(t * fs), min(int((t + rng.uniform(0.5, 3.0)) * fs), n)
        muscle[start:stop] = burst_noise[start:stop] * rng.uniform(5, 25)
    lateral = np.clip(np.abs(_XY[:, 0]) - 0.6, 0, None) * 2
    x += lateral[:, None] * muscle
    if rng.random() < 0.3:  # electrode pop: a step that decays over a few hundred ms
        pop_t = np.arange(int(2 * fs)) / fs
        pop = np.zeros(n)
        _add_transients(pop, fs, rng.uniform(0, duration, 1),
                        rng.uniform(50, 200) * np.exp(-pop_t / rng.uniform(0.2, 1.0)))
        x[rng.integers(n_el)] += pop
    heart = np.zeros(n)
    qrs_t = np.arange(int(0.1 * fs)) / fs
    qrs = np.exp(-((qrs_t - 0.05) / 0.01) ** 2)
    beats = np.cumsum(rng.normal(60 / rng.uniform(60, 90), 0.03, int(duration * 2) + 2))
    _add_transients(heart, fs, beats[beats < duration], qrs)
    ears = np.where(np.abs(_XY[:, 0]) > 1.05, 4.0, 0.5)
    x += ears[:, None] * heart
    t = np.arange(n) / fs
    mains_uv = rng.uniform(1, 5, (n_el, 1))
    x += mains_uv * np.sin(2 * np.pi * 60 * t + rng.uniform(0, 2 * np.pi, (n_el, 1)))
    x += 20 * _shaped_noise(rng, n_el, n, fs, _band(0.0, 0.05))  # sub-0.1 Hz drift
    # The common reference electrode's own activity is in every referential channel.
    x -= 5 * _shaped_noise(rng, 1, n, fs, _one_over_f(1.2))
    return heart


def _edf_signal(label: str, data: np.ndarray, fs: float, unit: str):
    import edfio

    # A symmetric physical range just above the peak keeps the 16-bit quantisation step
    # (range / 65535) near 0.01 uV; a minimum of 100 uV avoids a degenerate range.
    peak = float(np.ceil(max(np.abs(data).max() * 1.05, 100.0)))
    return edfio.EdfSignal(data, fs, label=label, physical_dimension=unit,
                           physical_range=(-peak, peak), transducer_type="Unknown")


def write_tuh_edf(path: str | os.PathLike,
                  signals: Sequence[tuple[str, np.ndarray, float, str]], *,
                  subject: str = "aaaaaaaa", sex: str = "X", age: int | None = None,
                  startdate: datetime.date = datetime.date(2004, 1, 1),
                  starttime: datetime.time = datetime.time(10, 0), session: int = 1) -> None:
    """Write ``(label, data, sampling rate, unit)`` signals as a TUH-style EDF file.

    Data records last 1 s, so every signal must hold a whole number of seconds. The patient
    field reads ``<subject> <sex> <birthdate> <subject> Age:<age>`` with 999 for an unknown age,
    as in TUH.
    """
    import edfio

    birthdate = None if age is None else datetime.date(startdate.year - age, 1, 1)
    edf = edfio.Edf(
        [_edf_signal(*signal) for signal in signals],
        patient=edfio.Patient(code=subject, sex=sex, birthdate=birthdate, name=subject,
                              additional=[f"Age:{age if age is not None else UNKNOWN_AGE}"]),
        recording=edfio.Recording(startdate=startdate,
                                  hospital_administration_code=f"{subject}_s{session:03d}"),
        starttime=starttime, data_record_duration=1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    edf.write(Path(path))


def write_session(path: Path, subject: Subject, session: int, take: int, fs: float,
                  duration_s: int, rng: np.random.Generator, config: SynthConfig) -> dict:
    """Simulate one session and write it as a TUH-style EDF file; returns what was written."""
    n = int(duration_s * fs)
    drowsy = rng.random() < config.drowsy_fraction
    eeg, extra_signals = simulate_session(subject, fs, n, rng, drowsy)
    ears = rng.random() >= config.no_ears_fraction
    suffix = "LE" if rng.random() < config.linked_ear_fraction else "REF"
    mixed_case = rng.random() < config.mixed_case_fraction

    signals = []
    for name, row in zip(ELECTRODES, eeg):
        if name in EAR_ELECTRODES and not ears:
            continue
        shown = _MIXED_CASE.get(name, name) if mixed_case else name
        signals.append((f"EEG {shown}-{suffix}", row, fs, "uV"))
    chosen = sorted(rng.choice(len(_EXTRAS), int(rng.integers(2, 7)), replace=False))
    for index in chosen:
        label, unit, rate = _EXTRAS[index]
        if label in extra_signals:
            signals.append((label, extra_signals[label], fs, unit))
        elif label == "PHOTIC-REF":  # flat but for a train of flashes: must never be picked
            photic = np.where(np.arange(n) % int(fs) < 5, 50.0, 0.0)
            signals.append((label, photic, fs, unit))
        else:  # IBI, BURSTS, SUPPR: slow, mostly-zero detector outputs
            signals.append((label, np.zeros(int(duration_s * rate)), rate, unit))
    shuffled = rng.random() < config.shuffled_order_fraction
    if shuffled:
        signals = [signals[i] for i in rng.permutation(len(signals))]

    startdate = datetime.date(2002, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 5000)))
    starttime = datetime.time(int(rng.integers(8, 18)), int(rng.integers(0, 60)), 0)
    write_tuh_edf(path, signals, subject=subject.id, sex=subject.sex, age=subject.age,
                  startdate=startdate, starttime=starttime, session=session)
    return {"file": str(path), "subject": subject.id, "session": session, "take": take,
            "sfreq": fs, "duration_s": duration_s, "ears": ears, "suffix": suffix,
            "mixed_case": mixed_case, "shuffled": shuffled, "drowsy": drowsy,
            "extras": [_EXTRAS[i][0] for i in chosen]}


def _duration(rng: np.random.Generator, config: SynthConfig) -> int:
    d = int(rng.integers(config.min_duration_s, config.max_duration_s + 1))
    return d + 1 if d % 5 == 0 else d  # never a whole number of windows


def make_corpus(out: str | os.PathLike, config: SynthConfig = SynthConfig()) -> list[Path]:
    """Write the corpus under ``out/edf/...`` and its ground truth to ``out/synth.json``."""
    out = Path(out)
    ids = _subject_ids(np.random.default_rng([config.seed, 0]),
                       config.train_subjects + config.eval_subjects)
    manifest = {"config": asdict(config), "subjects": [], "files": []}
    paths: list[Path] = []
    for set_index, (official_set, count, offset) in enumerate(
            (("train", config.train_subjects, 0),
             ("eval", config.eval_subjects, config.train_subjects))):
        n_abnormal = int(round(config.abnormal_fraction * count))
        labels = np.random.default_rng([config.seed, 1, set_index]).permutation(
            [1] * n_abnormal + [0] * (count - n_abnormal))
        # Abnormal patterns in turn, so that every set holds each of them.
        patterns = np.roll(ABNORMALITIES, config.seed + set_index)
        abnormal_rank = np.cumsum(labels) - 1
        for i in range(count):
            rng = np.random.default_rng([config.seed, 2, offset + i])
            pattern = str(patterns[abnormal_rank[i] % len(patterns)]) if labels[i] else None
            subject = make_subject(rng, ids[offset + i], official_set, int(labels[i]), pattern,
                                    config)
            manifest["subjects"].append(asdict(subject))
            n_sessions = int(rng.integers(1, config.max_sessions + 1))
            sessions = np.sort(rng.choice(np.arange(1, 2 * config.max_sessions + 1), n_sessions,
                                          replace=False))
            for session in sessions:
                session_rng = np.random.default_rng([config.seed, 3, offset + i, int(session)])
                takes = 2 if session_rng.random() < 0.1 else 1
                for take in range(takes):
                    fs = float(session_rng.choice(config.sampling_rates))
                    folder = "abnormal" if subject.label else "normal"
                    path = (out / "edf" / official_set / folder / "01_tcp_ar"
                            / f"{subject.id}_s{int(session):03d}_t{take:03d}.edf")
                    written = write_session(path, subject, int(session), take, fs,
                                            _duration(session_rng, config), session_rng, config)
                    manifest["files"].append({**written, "file": str(path.relative_to(out))})
                    paths.append(path)
    (out / "synth.json").write_text(json.dumps(manifest, indent=1))
    return paths
