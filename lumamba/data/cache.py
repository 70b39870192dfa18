"""Preprocess recordings once into an on-disk window cache, in parallel, resumably.

Layout of a cache directory::

    cache.json              settings the windows were made with (checked on every run)
    windows/<key>.npy       float32 (n_windows, channels, samples), memory-mappable
    windows/<key>.json      that file's metadata; written last, so it marks the entry complete
    rejected/<key>.json     why a recording was skipped (not re-read while the source is unchanged)
    index.json              every complete entry and every rejection; written when a run ends

Each file is written under a temporary name and moved into place with :func:`os.replace`, the
array before its metadata: an interrupted run leaves at most an orphan array or a temporary file,
which the next run ignores or cleans up, never an entry that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from .edf_reader import Signals
from .errors import UnusableRecording
from .preprocess import Montage, PreprocessConfig, preprocess

log = logging.getLogger("lumamba.data")

CACHE_FORMAT = 1
_TMP = ".tmp"


class CacheJob(Protocol):
    """A recording to preprocess: TUAB files and generic recordings both provide this."""

    key: str  # unique within a cache, safe as a file name

    @property
    def source(self) -> str: ...  # the path or name shown in log lines

    def load(self) -> Signals: ...

    def metadata(self) -> dict: ...  # JSON-serialisable; must include label and subject


@dataclass
class PrepareSummary:
    """What one :func:`prepare_cache` run did."""

    processed: int = 0
    already_done: int = 0
    windows: int = 0  # windows in the whole cache after this run
    skipped: Counter = field(default_factory=Counter)  # reason -> number of files

    def __str__(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
        return (f"{self.processed} files preprocessed, {self.already_done} already in the cache, "
                f"{skipped} skipped{f' ({reasons})' if reasons else ''}; "
                f"{self.windows} windows in the cache")


def fingerprint(path: str | os.PathLike) -> list:
    """Size and SHA-256 of the content: a changed source file is preprocessed again, even when an
    edit kept its size and modification time (hashing reads the file: about 1 GB/s)."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return [os.stat(path).st_size, "sha256:" + digest[:32]]


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + f"{_TMP}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:                      # an error (e.g. a full disk) leaves no orphan temporary file
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, obj: dict) -> None:
    _write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# Errors of the moment (permissions, a vanished mount, an I/O error), not of the file's content: they
# are reported but never remembered as a rejection, so the next run reads the file again.
TRANSIENT_ERRORS = ("PermissionError", "FileNotFoundError", "TimeoutError", "InterruptedError",
                    "BlockingIOError", "OSError", "ConnectionError")


def _job_fingerprint(job: CacheJob) -> list | str | None:
    """The job's own fingerprint (arrays: a hash of the data), else its source file's; None when the
    file cannot be read now (the worker then reports why)."""
    meta_fp = job.metadata().get("fingerprint")
    if meta_fp is not None:
        return meta_fp
    try:
        return fingerprint(job.source) if os.path.exists(job.source) else None
    except OSError:
        return None


def _process(job: CacheJob, out: str, montage: Montage, config: PreprocessConfig,
             fp: list | str | None = None) -> dict:
    """Worker: read, preprocess and write one recording; returns its index record."""
    out_dir = Path(out)
    record = {"key": job.key, **job.metadata(), "source": job.source}
    record["fingerprint"] = fp if fp is not None else _job_fingerprint(job)
    try:
        signals = job.load()
        windows = preprocess(signals.data, signals.channels, signals.sfreq, montage, config,
                             labels=signals.labels)
    except UnusableRecording as exc:
        record.update(reason=exc.reason, detail=exc.detail)
    except OSError as exc:  # permission, I/O: the file may be fine on the next run
        record.update(reason="read error", detail=f"{type(exc).__name__}: {exc.strerror or exc}",
                      transient=True)
    except Exception as exc:  # a reader error on a damaged file must not stop the run
        record.update(reason="unreadable", detail=f"{type(exc).__name__}: {exc}")
    if record.get("transient"):
        return record            # not cached: an earlier good entry stays, the next run retries
    if "reason" in record:
        _remove_entry(out_dir, job.key)
        _write_json(out_dir / "rejected" / f"{job.key}.json", record)
        return record

    record.update(file=f"windows/{job.key}.npy", n_windows=int(windows.data.shape[0]),
                  channels=windows.channels, sfreq_in=signals.sfreq,
                  n_samples_in=int(signals.data.shape[1]),
                  duration_s=signals.data.shape[1] / signals.sfreq, age=signals.age)
    (out_dir / "rejected" / f"{job.key}.json").unlink(missing_ok=True)
    (out_dir / "windows" / f"{job.key}.json").unlink(missing_ok=True)  # an outdated entry
    _write_atomic(out_dir / record["file"], lambda f: np.save(f, windows.data))
    _write_json(out_dir / "windows" / f"{job.key}.json", record)
    return record


def _pool_context():
    """fork where the platform has it: spawn would re-import the caller's main module, so a
    script without an ``if __name__ == "__main__"`` guard would break. The workers only run
    numpy/scipy/MNE code, none of which relies on threads inherited from the parent."""
    return get_context("fork" if "fork" in get_all_start_methods() else None)


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops the pool and prints one line (a terminal's
    SIGINT reaches the whole process group: each worker would print its own traceback)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _remove_entry(out_dir: Path, key: str) -> None:
    # Metadata first: without it the array is an orphan, never a complete-looking entry.
    (out_dir / "windows" / f"{key}.json").unlink(missing_ok=True)
    (out_dir / "windows" / f"{key}.npy").unlink(missing_ok=True)


def _check_settings(out_dir: Path, montage: Montage, config: PreprocessConfig) -> None:
    if montage is not None and not isinstance(montage, str):
        montage = list(montage)
    settings = {"format": CACHE_FORMAT, "config": config.to_dict(), "montage": montage}
    existing = _read_json(out_dir / "cache.json")
    if existing is not None and isinstance(existing.get("config"), dict):
        # Caches made before these settings existed were z-scored, uncropped.
        existing["config"] = {"normalisation": "zscore", "fit_patch": None, **existing["config"]}
    if existing is None:
        _write_json(out_dir / "cache.json", settings)
    elif existing != settings:
        raise ValueError(f"cache {out_dir} was built with {existing}, not {settings}; "
                         f"use another --out directory")


def _cached_rejection_is_transient(record: dict) -> bool:
    """Rejections written by older versions for errors of the moment (e.g. PermissionError)."""
    return record.get("reason") == "unreadable" and str(record.get("detail", "")).startswith(TRANSIENT_ERRORS)


def _log_skip(record: dict, cached: bool = False) -> None:
    note = " (unchanged since an earlier run)" if cached else ""
    if record.get("transient"):
        note = " (not remembered: fix the access or the disk and run prepare again; it will be retried)"
    log.warning("skipped %s: %s: %s%s", record["source"], record["reason"], record["detail"], note)


def prepare_cache(jobs: Iterable[CacheJob], out: str | os.PathLike, *, montage: Montage = "tcp",
                  config: PreprocessConfig = PreprocessConfig(), workers: int = 2,
                  progress: bool = True, retry_rejected: bool = False,
                  rejects: Sequence[tuple[str, UnusableRecording]] = ()) -> PrepareSummary:
    """Preprocess every job not yet in the cache at ``out`` and rebuild ``index.json``.

    Entries whose source is unchanged are kept; rejected recordings are logged once per run
    (one line naming the file and the reason) and re-read only with ``retry_rejected``.
    ``rejects`` are sources already found unusable before reading (e.g. bad file names); they
    are logged and counted too. ``workers`` > 1 uses that many processes.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    jobs = list(jobs)
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        duplicates = sorted(k for k, n in Counter(keys).items() if n > 1)
        raise ValueError(f"duplicate recording keys: {', '.join(duplicates[:5])}")
    out_dir = Path(out)
    for sub in ("windows", "rejected"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out_dir / sub).glob(f"*{_TMP}*"):
            stale.unlink()  # left by an interrupted run
    _check_settings(out_dir, montage, config)
    # The index describes a finished run; until this one finishes there is none.
    (out_dir / "index.json").unlink(missing_ok=True)

    summary = PrepareSummary()
    for source, exc in rejects:
        _log_skip({"source": source, "reason": exc.reason, "detail": exc.detail})
        summary.skipped[exc.reason] += 1

    records: dict[str, dict] = {}
    pending: list[CacheJob] = []
    fingerprints: dict[str, list | str | None] = {}
    for job in jobs:
        fp = fingerprints[job.key] = _job_fingerprint(job)
        done = _read_json(out_dir / "windows" / f"{job.key}.json")
        rejected = _read_json(out_dir / "rejected" / f"{job.key}.json")
        if done is not None and done.get("fingerprint") == fp and (out_dir / done["file"]).exists():
            records[job.key] = done
            summary.already_done += 1
        elif (rejected is not None and rejected.get("fingerprint") == fp and fp is not None and not retry_rejected
              and not _cached_rejection_is_transient(rejected)):
            records[job.key] = rejected
            _log_skip(rejected, cached=True)
            summary.skipped[rejected["reason"]] += 1
        else:
            pending.append(job)

    def finish(record: dict) -> None:
        records[record["key"]] = record
        if "reason" in record:
            _log_skip(record)
            summary.skipped[record["reason"]] += 1
        else:
            summary.processed += 1

    redirect = logging_redirect_tqdm() if progress else contextlib.nullcontext()
    with redirect, tqdm(total=len(pending), unit="file", desc="preprocess",
                        disable=not progress) as bar:
        if workers <= 1 or len(pending) <= 1:
            for job in pending:
                finish(_process(job, str(out_dir), montage, config, fingerprints[job.key]))
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_ignore_sigint) as pool:
                futures = [pool.submit(_process, job, str(out_dir), montage, config, fingerprints[job.key])
                           for job in pending]
                try:
                    for future in as_completed(futures):
                        finish(future.result())
                        bar.update()
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise

    ordered = [records[k] for k in keys]
    files = [r for r in ordered if "reason" not in r]
    if summary.skipped.get("read error"):
        log.warning("%d file(s) could not be read (see above): they are not remembered as rejected; "
                    "run prepare again once they are readable", summary.skipped["read error"])
    summary.windows = sum(r["n_windows"] for r in files)
    _write_json(out_dir / "index.json", {
        "format": CACHE_FORMAT, "config": config.to_dict(),
        "files": files, "rejected": [r for r in ordered if "reason" in r] + [
            {"source": s, "reason": e.reason, "detail": e.detail} for s, e in rejects]})
    log.info("%s", summary)
    return summary


def load_index(cache: str | os.PathLike) -> dict:
    """The index of a prepared cache; raises a clear error if preparation never finished."""
    path = Path(cache) / "index.json"
    index = _read_json(path)
    if index is None:
        raise FileNotFoundError(f"{path} is missing or unreadable: run `lumamba-data prepare` "
                                f"(again) to finish the cache")
    return index
