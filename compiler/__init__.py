"""nnspec.compiler: spec files become validated, shape-checked torch.nn.Modules.

    from nnspec.compiler import load_spec, build_model
    model = build_model("specs/digits_cnn.yaml", overrides=["network[0].conv.out=16"])

`estimate_footprint(graph)` and `footprint_problems(footprint, max_params, max_memory)` are the
memory estimate and budget `nnspec check` applies.

Names are imported lazily (PEP 562), so `nnspec.compiler.errors` and the CLI start without
importing torch; commands that never build a model (serve, predict) stay quick to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CompiledModel": "build", "build_graph_model": "build",
    "DataError": "errors", "ExportError": "errors", "NnspecError": "errors", "Problem": "errors",
    "ServeError": "errors", "SpecError": "errors", "TrainingError": "errors",
    "UsageError": "errors",
    "expand": "expand", "Graph": "graph", "Node": "graph",
    "estimate_footprint": "footprint", "footprint_problems": "footprint",
    "LayerConfig": "layers", "LayerKind": "layers", "ShapeError": "layers",
    "register_layer": "layers",
    "load_plugins": "plugins", "Spec": "schema", "load_spec": "spec", "zoo_names": "spec",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"nnspec.compiler.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'nnspec.compiler' has no attribute {name!r}")


def compile_graph(source: Any, overrides: list[str] | tuple[str, ...] = (),
                  variables: dict[str, Any] | None = None) -> Graph:
    """Load (unless given a Spec without overrides), expand and shape-check a spec."""
    from nnspec.compiler.expand import expand
    from nnspec.compiler.plugins import load_entry_point_plugins
    from nnspec.compiler.schema import Spec
    from nnspec.compiler.spec import load_spec

    load_entry_point_plugins()
    spec = source if isinstance(source, Spec) and not overrides else \
        load_spec(source, overrides, variables)
    return expand(spec)


def build_model(source: Any, overrides: list[str] | tuple[str, ...] = (),
                variables: dict[str, Any] | None = None, seed: int | None = None) -> CompiledModel:
    """Compile a spec (path, zoo name, dict or Spec) into an initialised `CompiledModel`."""
    from nnspec.compiler.build import build_graph_model

    return build_graph_model(compile_graph(source, overrides, variables), seed=seed)


if TYPE_CHECKING:
    from nnspec.compiler.build import CompiledModel
    from nnspec.compiler.graph import Graph

__all__ = [*_EXPORTS, "build_model", "compile_graph"]
