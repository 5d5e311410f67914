"""User layer kinds: modules named on the command line or entry points in `nnspec.layers`.

A spec's text never names Python code; plugins are chosen by the person running nnspec.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from nnspec.compiler.errors import UsageError

_loaded_entry_points = False


def load_entry_point_plugins() -> None:
    """Import every module registered under the `nnspec.layers` entry point group (once)."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for ep in entry_points(group="nnspec.layers"):
        try:
            ep.load()
        except Exception as e:  # a broken third-party plugin must not hide the real error
            raise UsageError(f"layer plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import plugin modules (each registers kinds with `register_layer`)."""
    load_entry_point_plugins()
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UsageError(f"cannot import plugin module {name!r}: {e}") from e
        except ValueError as e:  # e.g. a duplicate kind name
            raise UsageError(f"plugin {name!r}: {e}") from e
