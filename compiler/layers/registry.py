"""The layer registry: a layer kind is one class, registered once, found by name.

A kind bundles what nnspec needs to know about a layer: its pydantic config (fields and
defaults), its output-shape rule, its module builder and its MAC count. Adding a kind touches
only the class that defines it (plus plugins, through `register_layer`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from torch import nn

from nnspec.compiler.suggest import did_you_mean

Shape = tuple[int, ...]


class ShapeError(Exception):
    """A layer cannot accept the shapes it is given; caught and located by shape inference."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class LayerConfig(BaseModel):
    """Base of every layer's config: strict types, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LayerKind:
    """One kind of layer. Subclasses set `name`, `Config`, and override the rules they need."""

    name: ClassVar[str]
    Config: ClassVar[type[LayerConfig]]
    #: which `init:` entry applies: conv, linear, norm, embedding, recurrent, attention, token
    category: ClassVar[str | None] = None
    #: number of inputs: 1 for ordinary layers, None for merges (2 or more), (low, high) for
    #: optional inputs (self_attention: tokens, and an additive mask or not)
    arity: ClassVar[int | tuple[int, int] | None] = 1
    summary: ClassVar[str] = ""

    def infer_shape(self, cfg: Any, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]

    def build(self, cfg: Any, in_shapes: list[Shape]) -> nn.Module:
        raise NotImplementedError

    def macs(self, cfg: Any, in_shapes: list[Shape], out_shape: Shape) -> int:
        return 0


_KINDS: dict[str, LayerKind] = {}
_adapter_cache: dict[int, TypeAdapter] = {}


def register_layer(cls: type[LayerKind]) -> type[LayerKind]:
    """Class decorator adding a kind to the registry; a duplicate name is refused."""
    name = cls.name
    if name in _KINDS:
        raise ValueError(f"layer kind {name!r} is already registered")
    fields = cls.Config.model_fields
    if "type" not in fields:
        raise ValueError(f"{cls.__name__}.Config needs a field `type: Literal[{name!r}]`")
    _KINDS[name] = cls()
    _adapter_cache.clear()
    return cls


def get_kind(name: str) -> LayerKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown layer {name!r}{did_you_mean(name, _KINDS)}") from None


def kind_names() -> list[str]:
    return sorted(_KINDS)


def all_kinds() -> dict[str, LayerKind]:
    return dict(_KINDS)


def layer_adapter() -> TypeAdapter:
    """A TypeAdapter for the discriminated union of every registered config (cached)."""
    key = hash(tuple(_KINDS))
    if key not in _adapter_cache:
        configs = tuple(k.Config for k in _KINDS.values())
        union = Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007
        _adapter_cache.clear()
        _adapter_cache[key] = TypeAdapter(union)
    return _adapter_cache[key]
