"""Shape manipulation and simple arithmetic: flatten, reshape, permute, select, slice, mean,
scale."""

from __future__ import annotations

import math
from typing import Literal

from torch import nn

from nnspec.compiler import modules
from nnspec.compiler.layers.common import sample_dim, torch_dim
from nnspec.compiler.layers.registry import LayerConfig, LayerKind, ShapeError, register_layer


@register_layer
class Flatten(LayerKind):
    name = "flatten"
    summary = "merge per-sample dims start..end (default: all) into one"

    class Config(LayerConfig):
        type: Literal["flatten"] = "flatten"
        start: int = 0
        end: int = -1

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        torch_dim(cfg.start, len(shape), "start")
        torch_dim(cfg.end, len(shape), "end")
        a, b = sample_dim(cfg.start, len(shape)), sample_dim(cfg.end, len(shape))
        if a > b:
            raise ShapeError(f"start={cfg.start} comes after end={cfg.end}")
        return (*shape[:a], math.prod(shape[a:b + 1]), *shape[b + 1:])

    def build(self, cfg, in_shapes):
        rank = len(in_shapes[0])
        return nn.Flatten(torch_dim(cfg.start, rank), torch_dim(cfg.end, rank))


@register_layer
class ReshapeKind(LayerKind):
    name = "reshape"
    summary = "reshape each sample (one dim may be -1)"

    class Config(LayerConfig):
        type: Literal["reshape"] = "reshape"
        shape: list[int]

    def infer_shape(self, cfg, in_shapes):
        total = math.prod(in_shapes[0])
        shape = list(cfg.shape)
        if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
            raise ShapeError(f"reshape {shape}: dims must be positive, with at most one -1")
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            if total % known:
                raise ShapeError(f"cannot reshape {in_shapes[0]} ({total} values) into {shape}")
            shape[shape.index(-1)] = total // known
        if math.prod(shape) != total:
            raise ShapeError(f"cannot reshape {in_shapes[0]} ({total} values) into {cfg.shape}")
        return tuple(shape)

    def build(self, cfg, in_shapes):
        return modules.Reshape(tuple(cfg.shape))


@register_layer
class PermuteKind(LayerKind):
    name = "permute"
    summary = "reorder per-sample dims, e.g. [1, 0] swaps (C, L) to (L, C)"

    class Config(LayerConfig):
        type: Literal["permute"] = "permute"
        dims: list[int]

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        if sorted(sample_dim(d, len(shape)) for d in cfg.dims) != list(range(len(shape))):
            raise ShapeError(f"dims {cfg.dims} is not a permutation of 0..{len(shape) - 1}")
        return tuple(shape[d] for d in cfg.dims)

    def build(self, cfg, in_shapes):
        rank = len(in_shapes[0])
        return modules.Permute(tuple(sample_dim(d, rank) + 1 for d in cfg.dims))


@register_layer
class SelectKind(LayerKind):
    name = "select"
    summary = "pick one index along a dim, dropping it (e.g. the class token: dim 0, index 0)"

    class Config(LayerConfig):
        type: Literal["select"] = "select"
        dim: int = 0
        index: int = 0

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        torch_dim(cfg.dim, len(shape))
        size = shape[cfg.dim]
        if not -size <= cfg.index < size:
            raise ShapeError(f"index {cfg.index} is out of range for dim {cfg.dim} of size {size}")
        return tuple(s for i, s in enumerate(shape) if i != sample_dim(cfg.dim, len(shape)))

    def build(self, cfg, in_shapes):
        return modules.Select(torch_dim(cfg.dim, len(in_shapes[0])), cfg.index)


@register_layer
class MeanKind(LayerKind):
    name = "mean"
    summary = "mean over per-sample dims (e.g. token mean pooling: dims [0])"

    class Config(LayerConfig):
        type: Literal["mean"] = "mean"
        dims: list[int]
        keep_dims: bool = False

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        for d in cfg.dims:
            torch_dim(d, len(shape))
        drop = {sample_dim(d, len(shape)) for d in cfg.dims}
        if cfg.keep_dims:
            return tuple(1 if i in drop else s for i, s in enumerate(shape))
        return tuple(s for i, s in enumerate(shape) if i not in drop)

    def build(self, cfg, in_shapes):
        rank = len(in_shapes[0])
        return modules.Mean(tuple(torch_dim(d, rank) for d in cfg.dims), cfg.keep_dims)


@register_layer
class ScaleKind(LayerKind):
    name = "scale"
    param_roles = {"weight": "scale"}  # a learnable factor: layer scale (CaiT, ConvNeXt)
    summary = "multiply by a constant, or by a learnable per-channel factor (layer scale)"

    class Config(LayerConfig):
        type: Literal["scale"] = "scale"
        value: float = 1.0
        learnable: bool = False
        dim: int = 0

    def infer_shape(self, cfg, in_shapes):
        torch_dim(cfg.dim, len(in_shapes[0]))
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        shape = in_shapes[0]
        if not cfg.learnable:
            return modules.Scale(cfg.value)
        d = sample_dim(cfg.dim, len(shape))
        return modules.Scale(cfg.value, (shape[d],) + (1,) * (len(shape) - 1 - d))


@register_layer
class SliceKind(LayerKind):
    name = "slice"
    summary = "a contiguous part along a dim: start..end (ShuffleNet's channel split)"

    class Config(LayerConfig):
        type: Literal["slice"] = "slice"
        dim: int = 0
        start: int = 0
        end: int | None = None

    def _bounds(self, cfg, shape):
        size = shape[sample_dim(cfg.dim, len(shape))]
        start = cfg.start + size if cfg.start < 0 else cfg.start
        end = size if cfg.end is None else (cfg.end + size if cfg.end < 0 else cfg.end)
        if not 0 <= start < end <= size:
            raise ShapeError(f"slice {cfg.start}..{cfg.end} is empty or out of range for dim "
                             f"{cfg.dim} of size {size}")
        return start, end

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        torch_dim(cfg.dim, len(shape))
        start, end = self._bounds(cfg, shape)
        out = list(shape)
        out[sample_dim(cfg.dim, len(shape))] = end - start
        return tuple(out)

    def build(self, cfg, in_shapes):
        shape = in_shapes[0]
        start, end = self._bounds(cfg, shape)
        return modules.Slice(torch_dim(cfg.dim, len(shape)), start, end - start)
