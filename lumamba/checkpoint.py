"""Checkpoints in the published safetensors layout: `model.`-prefixed state-dict keys, float32.

Our own checkpoints add one metadata entry, `lumamba_config` (JSON), so smaller configs load
without guessing; files without it (the published ones) are read as `tiny`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import CONFIGS, LuMambaConfig
from .model import LuMamba

PREFIX = "model."
PREPROCESS_KEY = "lumamba_preprocess"   # metadata: how the model's input windows were normalised
PRETRAIN_ONLY = ("decoder_head", "channel_emb")   # dropped when a classifier is built from a pre-training file


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, bad config metadata, non-finite weights, or keys
    that do not match the model; the message names the file and the field, tensor or keys."""


def _file_config(path: Path, meta: dict) -> LuMambaConfig:
    """The config stored in the metadata, validated (types, divisibility, size cap) before use."""
    if "lumamba_config" not in meta:
        return CONFIGS["tiny"]
    try:
        return LuMambaConfig.from_dict(json.loads(meta["lumamba_config"]))
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: bad lumamba_config metadata: {e}") from None


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """NaN or inf weights would give NaN logits for every input: refuse them, naming the tensors."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: non-finite (NaN or inf) values in {len(bad)} tensor(s): "
                              f"{', '.join(sorted(bad)[:5])}{' ...' if len(bad) > 5 else ''}")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], LuMambaConfig]:
    """Tensors with the `model.` prefix removed, and the config stored in the file (or `tiny`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            config = _file_config(path, meta)     # before the tensors: refuse absurd sizes early
            tensors = {k[len(PREFIX):] if k.startswith(PREFIX) else k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    _check_finite(path, tensors)
    return tensors, config


def read_preprocess(path: str | os.PathLike) -> dict:
    """The input normalisation a checkpoint was trained with (metadata `lumamba_preprocess`; files
    without it, the published ones included, were trained on z-scored windows)."""
    from .normalise import check_normalisation, spec
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if PREPROCESS_KEY not in meta:
        return spec("zscore")
    try:
        pre = json.loads(meta[PREPROCESS_KEY])
        if not isinstance(pre, dict):
            raise ValueError("not a JSON object")
        check_normalisation(pre.get("normalisation"))
    except ValueError as e:
        raise CheckpointError(f"{path}: bad {PREPROCESS_KEY} metadata: {e}") from None
    return pre


def load_pretrained(path: str | os.PathLike, n_classes: int | None = None,
                    config: LuMambaConfig | None = None) -> LuMamba:
    """Load a checkpoint in the published layout, strictly.

    Without `n_classes`: the pre-training model (encoder + decoder); every key must match.
    With `n_classes`: the classification model; decoder keys are dropped as the published
    fine-tuning does, the classifier is taken from the file when present, else freshly initialised.
    Missing, unexpected or mis-shaped keys raise CheckpointError listing them.
    """
    tensors, file_config = read_checkpoint(path)
    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 0):
        raise ValueError(f"n_classes must be an int >= 0, got {n_classes!r}")
    model = LuMamba(config or file_config, n_classes=n_classes or 0)
    if n_classes:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(PRETRAIN_ONLY)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if n_classes and not any(k.startswith("classifier.") for k in tensors):
        missing = [k for k in missing if not k.startswith("classifier.")]
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
                   for k in set(tensors) & set(expected) if tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{title} ({len(keys)}): {', '.join(keys)}"
                 for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", wrong)) if keys]
        raise CheckpointError(f"{path} does not match LuMamba(n_classes={n_classes or 0}):\n  " + "\n  ".join(parts))
    model.load_state_dict(tensors, strict=False)
    model.preprocess = read_preprocess(path)
    return model


def save_checkpoint(model: LuMamba, path: str | os.PathLike) -> Path:
    """Write the model in the published layout (plus the config as metadata), atomically:
    the file appears complete under its name or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {PREFIX + k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        meta = {"lumamba_config": json.dumps(model.config.to_dict(), sort_keys=True)}
        if getattr(model, "preprocess", None):
            meta[PREPROCESS_KEY] = json.dumps(model.preprocess, sort_keys=True)
        save_file(sd, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
