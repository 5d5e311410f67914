"""Small helpers the layer kinds share: per-sample dims, n-tuples, conv arithmetic."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field

from nnspec.compiler.layers.registry import Shape, ShapeError

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
IntOrList = int | list[int]
PositiveIntOrList = PositiveInt | list[PositiveInt]
NonNegativeIntOrList = NonNegativeInt | list[NonNegativeInt]


def spatial_dims(shape: Shape, what: str, allowed: tuple[int, ...] = (1, 2, 3)) -> int:
    """Number of spatial dims of a (C, *spatial) per-sample shape, checked against `allowed`."""
    n = len(shape) - 1
    if n not in allowed:
        forms = " or ".join(_FORMS[k] for k in allowed)
        raise ShapeError(
            f"{what} expects a per-sample shape {forms}, got {shape}",
            hint="per-sample shapes exclude the batch; add flatten/reshape before this layer",
        )
    return n


_FORMS = {1: "(C, L)", 2: "(C, H, W)", 3: "(C, D, H, W)"}


def ntuple(value: int | list[int], n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ShapeError(f"{name} has {len(value)} values but the input has {n} spatial dims")
    return tuple(value)


def torch_dim(dim: int, rank: int, name: str = "dim") -> int:
    """Per-sample dim (0 = first dim after the batch; negatives from the end) -> torch dim."""
    if not -rank <= dim < rank:
        raise ShapeError(f"{name}={dim} is out of range for a per-sample shape of rank {rank}")
    return dim + 1 if dim >= 0 else dim


def sample_dim(dim: int, rank: int) -> int:
    """Normalise a per-sample dim to 0..rank-1."""
    return dim % rank


def pooled_length(length: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int:
    span = length + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        raise ShapeError(
            f"kernel {kernel} (dilation {dilation}) does not fit an input of length {length} "
            f"with padding {padding}",
            hint="use a smaller kernel or stride earlier in the network, or more padding",
        )
    out = (math.ceil if ceil else math.floor)(span / stride) + 1
    if ceil and (out - 1) * stride >= length + padding:
        out -= 1
    return out


def numel(shape: Shape) -> int:
    return math.prod(shape)
