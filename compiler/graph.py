"""The graph IR: plain dataclasses between expansion and module building.

Nodes are in topological order, each with a unique dotted id (its module name), its validated
layer config, its inputs (node ids or graph input names), its inferred per-sample output shape and
the source mark of the YAML it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nnspec.compiler.errors import Mark

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Scope:
    """A structural scope a node sits in: a block call, residual, branches, sequence, head..."""

    kind: str  # "block" | "residual" | "shortcut" | "branches" | "branch" | "sequence" | "head"
    id: str  # dotted id of the scope (module path prefix)
    block: str | None = None  # block name, for block calls
    args: tuple[tuple[str, Any], ...] = ()  # block call arguments, for block calls
    path: str = ""


@dataclass
class Node:
    id: str
    kind: str
    config: Any  # the kind's validated LayerConfig
    inputs: list[str]
    shape: Shape
    in_shapes: list[Shape]
    path: str
    mark: Mark | None = None
    head: str | None = None
    scopes: list[Scope] = field(default_factory=list)
    init: Any = None  # NodeInit override or None


@dataclass(frozen=True)
class InputNode:
    name: str
    shape: Shape
    dtype: str


@dataclass(frozen=True)
class Residual:
    """Which nodes form one residual connection (for init's zero_init_residual and for lint)."""

    id: str
    body: tuple[str, ...]
    shortcut: tuple[str, ...]
    add: str | None  # None when `none_if_mismatch` dropped the addition


@dataclass(frozen=True)
class Head:
    id: str
    output: str
    loss_weight: float


@dataclass
class Graph:
    name: str
    inputs: dict[str, InputNode]
    nodes: list[Node]
    output: str
    heads: dict[str, Head]
    residuals: list[Residual]
    spec: Any = None

    def __post_init__(self) -> None:
        self._by_id = {n.id: n for n in self.nodes}

    def node(self, node_id: str) -> Node:
        return self._by_id[node_id]

    def consumers(self, node_id: str) -> list[Node]:
        return [n for n in self.nodes if node_id in n.inputs]

    def shape_of(self, ref: str) -> Shape:
        if ref in self.inputs:
            return self.inputs[ref].shape
        return self._by_id[ref].shape

    @property
    def output_shape(self) -> Shape:
        return self.shape_of(self.output)

    def eval_nodes(self) -> list[Node]:
        """Nodes that run in eval mode: everything the output needs, training-only heads excluded."""
        needed = {self.output}
        for n in reversed(self.nodes):
            if n.id in needed:
                needed.update(n.inputs)
        return [n for n in self.nodes if n.id in needed]
