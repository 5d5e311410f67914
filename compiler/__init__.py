"""nnspec.compiler: spec files become validated, shape-checked torch.nn.Modules.

    from nnspec.compiler import load_spec, build_model
    model = build_model("specs/digits_cnn.yaml", overrides=["network[0].conv.out=16"])
"""

from __future__ import annotations

from typing import Any

from nnspec.compiler import layers as _layers  # noqa: F401  (registers the built-in kinds)
from nnspec.compiler.build import CompiledModel, build_graph_model
from nnspec.compiler.errors import (
    DataError,
    ExportError,
    NnspecError,
    Problem,
    ServeError,
    SpecError,
    TrainingError,
    UsageError,
)
from nnspec.compiler.expand import expand
from nnspec.compiler.graph import Graph, Node
from nnspec.compiler.layers import LayerConfig, LayerKind, ShapeError, register_layer
from nnspec.compiler.plugins import load_plugins
from nnspec.compiler.schema import Spec
from nnspec.compiler.spec import load_spec, zoo_names


def compile_graph(source: Any, overrides: list[str] | tuple[str, ...] = (),
                  variables: dict[str, Any] | None = None) -> Graph:
    """Load (unless given a Spec without overrides), expand and shape-check a spec."""
    from nnspec.compiler.plugins import load_entry_point_plugins

    load_entry_point_plugins()
    spec = source if isinstance(source, Spec) and not overrides else \
        load_spec(source, overrides, variables)
    return expand(spec)


def build_model(source: Any, overrides: list[str] | tuple[str, ...] = (),
                variables: dict[str, Any] | None = None, seed: int | None = None) -> CompiledModel:
    """Compile a spec (path, zoo name, dict or Spec) into an initialised `CompiledModel`."""
    return build_graph_model(compile_graph(source, overrides, variables), seed=seed)


__all__ = [
    "CompiledModel", "DataError", "ExportError", "Graph", "LayerConfig", "LayerKind", "NnspecError",
    "Node", "Problem", "ServeError", "ShapeError", "Spec", "SpecError", "TrainingError",
    "UsageError", "build_model", "compile_graph", "load_plugins", "load_spec", "register_layer",
    "zoo_names",
]
