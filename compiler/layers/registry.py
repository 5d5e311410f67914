"""The layer registry: a layer kind is one class, registered once, found by name.

A kind bundles what nnspec needs to know about a layer: its pydantic config (fields and
defaults), its output-shape rule, its module builder and its MAC count. Adding a kind touches
only the class that defines it (plus plugins, through `register_layer`).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from torch import nn

from nnspec.compiler.suggest import did_you_mean

Shape = tuple[int, ...]

#: what a parameter is to the optimizer (`optimizer.no_decay` names every role but `weight`)
ROLES = ("weight", "bias", "norm", "embedding", "scale")
#: the roles of most layers' parameters: torch's `weight` and `bias`
WEIGHT_AND_BIAS: dict[str, str | tuple[str, ...]] = {"weight": "weight", "bias": "bias"}


def torch_named_bias(pname: str) -> bool:
    """A name torch gives biases: `bias`, `*_bias` (`in_proj_bias`), `bias_*` (LSTM's
    `bias_ih_l0`); not attention's `relative_position_bias_table`, a learned table."""
    leaf = pname.rsplit(".", 1)[-1]
    return leaf.startswith("bias") or leaf.endswith("_bias")


def torch_roles(pname: str) -> frozenset[str]:
    """Roles read from torch's own naming, for parameters no kind declares (plugins that
    declare nothing, hand-built modules): a bias (`torch_named_bias`) or a weight."""
    return frozenset({"bias" if torch_named_bias(pname) else "weight"})


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
    #: what each parameter of the built module is to the optimizer (`optimizer.no_decay`):
    #: glob on the parameter's name inside the module -> a role or roles out of ROLES; a
    #: parameter takes the roles of every pattern it matches (a norm's `bias` is norm and bias)
    param_roles: ClassVar[dict[str, str | tuple[str, ...]]] = {}

    def roles_of(self, pname: str) -> frozenset[str]:
        """The roles of parameter `pname` (its name inside this kind's module): those its
        `param_roles` patterns give, else torch's naming (`torch_roles`)."""
        return declared_roles(self.param_roles, pname) or torch_roles(pname)

    def infer_shape(self, cfg: Any, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]

    def build(self, cfg: Any, in_shapes: list[Shape]) -> nn.Module:
        raise NotImplementedError

    def macs(self, cfg: Any, in_shapes: list[Shape], out_shape: Shape) -> int:
        return 0


def declared_roles(table: dict[str, str | tuple[str, ...]], pname: str) -> frozenset[str]:
    """The union of the roles of every pattern of `table` that matches `pname` (may be empty)."""
    roles: set[str] = set()
    for pattern, given in table.items():
        if fnmatchcase(pname, pattern):
            roles.update((given,) if isinstance(given, str) else given)
    return frozenset(roles)


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
    for pattern, given in cls.param_roles.items():
        unknown = set((given,) if isinstance(given, str) else given) - set(ROLES)
        if unknown:
            raise ValueError(f"{cls.__name__}.param_roles[{pattern!r}]: unknown role(s) "
                             f"{sorted(unknown)}; roles: {', '.join(ROLES)}")
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
