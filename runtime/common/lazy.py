"""Lazy package exports (PEP 562): a stage's front door names its API without importing it.

`nnspec serve` must start without importing torch, yet `nnspec.runtime.export` (whose exporter
needs torch) owns the ONNX metadata reader serve uses. Each stage's `__init__.py` therefore
maps its public names to the modules defining them, and a name's module is imported on first
access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that resolves `name` from `package.<table[name]>`."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(f"{package}.{table[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
