"""Lazy public names for packages whose submodules import heavy libraries (onnx, onnxruntime, TVM)."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_attributes(package: str, table: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """`__getattr__` and `__dir__` for `package` that import `table[name]` (a submodule) on first
    use of `name` and cache the value in the package's `namespace` (its globals())."""

    def __getattr__(name: str):
        if name in table:
            value = getattr(importlib.import_module(f".{table[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *table})

    return __getattr__, __dir__
