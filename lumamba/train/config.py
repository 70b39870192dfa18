"""Training configuration: a dataclass read from a JSON or TOML file plus `--set key=value` overrides.

File keys are the field names of `TrainConfig`; the objective's live in a nested table
(`[objective]` in TOML, `"objective": {...}` in JSON) or as dotted keys (`objective.mask_ratio`).
Defaults are the paper's for the task (`pretrain` or `finetune`), see `default_config`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..objectives.mixed import ObjectiveConfig

TASKS = ("pretrain", "finetune")
PRECISIONS = ("auto", "bf16", "fp32")


class ConfigError(ValueError):
    """A bad configuration file or override; the message names the key and where it came from."""


@dataclass
class TrainConfig:
    """Everything a run needs besides the data and the output directory."""

    task: str = "pretrain"
    model: str = "tiny"               # LuMamba config name (ignored when `init` names a checkpoint)
    init: str = ""                    # checkpoint to start from (fine-tuning: ours or a published one)
    n_classes: int = 2                # fine-tuning only
    data: str = ""                    # window cache directory or .npz (see lumamba.train.data)
    channels: list[str] = field(default_factory=list)  # select/order channels by name; empty = as stored
    val_fraction: float = 0.2         # train/val split by subject (cache directories)
    epochs: int = 10
    batch_size: int = 512             # global batch (split evenly over ranks)
    max_steps_per_epoch: int = 0      # 0 = the whole training split each epoch
    lr: float = 1.25e-4
    min_lr: float = 2.5e-7
    warmup_epochs: float = 5.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 1.0          # layer-wise lr decay over the Mamba blocks (fine-tuning 0.75)
    grad_clip: float = 1.0            # max global grad norm; 0 = off
    patience: int = 0                 # early stopping: epochs without val improvement; 0 = off
    min_delta: float = 0.0
    precision: str = "auto"           # auto: bf16 autocast on a GPU that supports it, else fp32
    device: str = "auto"              # auto, cpu, cuda, cuda:N
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 0         # also checkpoint every N optimiser steps; 0 = end of epoch only
    progress: bool = True
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        if isinstance(self.objective, dict):
            self.objective = _build(ObjectiveConfig, self.objective, "objective.")
        self.betas = tuple(self.betas)
        checks = [
            (self.task in TASKS, f"task must be one of {TASKS}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr >= 0 and self.min_lr >= 0, "lr and min_lr must be >= 0"),
            (0 < self.layer_decay <= 1, "layer_decay must be in (0, 1]"),
            (self.warmup_epochs >= 0 and self.weight_decay >= 0 and self.grad_clip >= 0,
             "warmup_epochs, weight_decay and grad_clip must be >= 0"),
            (self.patience >= 0 and self.checkpoint_every >= 0 and self.max_steps_per_epoch >= 0,
             "patience, checkpoint_every and max_steps_per_epoch must be >= 0"),
            (self.n_classes >= 2 or self.task == "pretrain", "n_classes must be >= 2 for fine-tuning"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict:
        return asdict(self)


def default_config(task: str) -> TrainConfig:
    """The paper's settings for pre-training or fine-tuning (batch sizes scaled to one machine:
    the paper pre-trained with a global batch of 32,640 on 16 GPUs)."""
    if task == "pretrain":
        return TrainConfig(task="pretrain")
    if task == "finetune":
        return TrainConfig(task="finetune", epochs=50, lr=5e-4, weight_decay=0.05, layer_decay=0.75,
                           patience=10)
    raise ConfigError(f"unknown task {task!r}; choose from {TASKS}")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse(text: str, target: type, key: str, source: str) -> Any:
    """A `--set` string as the field's type (lists: JSON or comma-separated)."""
    text = text.strip()
    if target is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{source}: {key} must be true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if target in (list, tuple):
        if not text.startswith("["):
            return [s.strip() for s in text.split(",") if s.strip()]
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}: {key} is not a list: {text!r} ({e})") from None
    try:
        if target is int and not text.lstrip("+-").isdigit() and float(text).is_integer():
            return int(float(text))          # 1e3 is a fine way to write 1000
        return target(text)
    except ValueError:
        raise ConfigError(f"{source}: {key} must be {target.__name__}, got {text!r}") from None


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check a file value, or parse a `--set` string, against the field's type."""
    target = typing.get_origin(hint) or hint
    if isinstance(value, str) and target is not str:
        value = _parse(value, target, key, source)
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if target is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
    if target in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        item = (typing.get_args(hint) or (Any,))[0]
        return target(_coerce(v, item, key, source) for v in value)
    if hint is not Any and (not isinstance(value, target) or (target is int and isinstance(value, bool))):
        raise ConfigError(f"{source}: {key} must be {target.__name__}, got {value!r}")
    return value


def _build(cls, values: dict, prefix: str = "", source: str = "config"):
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"known: {', '.join(prefix + k for k in sorted(known))}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = value if isinstance(value, hint) else _build(hint, value, f"{prefix}{key}.", source)
        else:
            kwargs[key] = _coerce(value, hint, prefix + key, source)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from None


def read_config_file(path: str | Path) -> dict:
    """A JSON (.json) or TOML (.toml) file as a (nested) dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text())
        if path.suffix == ".json":
            return json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse ({e})") from None
    raise ConfigError(f"{path}: config files must end in .json or .toml")


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _nest(dotted: dict) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        head, _, rest = key.partition(".")
        out = _merge(out, {head: _nest({rest: value}) if rest else value})
    return out


def load_config(task: str, path: str | Path | None = None, overrides: Iterable[str] = (),
                **values: Any) -> TrainConfig:
    """Task defaults, then the file at `path`, then keyword `values` (e.g. from CLI flags),
    then `--set key=value` overrides (dotted keys reach the objective: objective.mode=lejepa)."""
    config = _merge(default_config(task).to_dict(), {"task": task})
    if path:
        from_file = _nest(read_config_file(path))
        if from_file.get("task", task) != task:
            raise ConfigError(f"{path}: task is {from_file['task']!r} but the command is {task!r}")
        config = _merge(config, from_file)
        _build(TrainConfig, config, source=str(path))    # report file errors against the file
    config = _merge(config, _nest({k: v for k, v in values.items() if v is not None}))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        config = _merge(config, _nest({key.strip(): value}))
        _build(TrainConfig, config, source=f"--set {item}")
    return _build(TrainConfig, config, source="config")
