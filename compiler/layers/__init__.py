"""Layer kinds: importing this package registers the built-in kinds."""

from nnspec.compiler.layers import (  # noqa: F401
    activation,
    conv,
    dense,
    merge,
    norm,
    pool,
    tensor,
    window,
)
from nnspec.compiler.layers.registry import (
    LayerConfig,
    LayerKind,
    ShapeError,
    all_kinds,
    get_kind,
    kind_names,
    layer_adapter,
    register_layer,
)

__all__ = [
    "LayerConfig",
    "LayerKind",
    "ShapeError",
    "all_kinds",
    "get_kind",
    "kind_names",
    "layer_adapter",
    "register_layer",
]
