"""Pooling and resampling: max/avg pool, adaptive pools, global pools, upsample."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from nnspec.compiler import modules
from nnspec.compiler.layers.common import (
    IntOrList,
    NonNegativeIntOrList,
    PositiveIntOrList,
    ntuple,
    pooled_length,
    spatial_dims,
)
from nnspec.compiler.layers.registry import LayerConfig, LayerKind, ShapeError, register_layer

_MAX = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE = {
    "avg": {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d},
    "max": {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d},
}


class _Pool(LayerKind):
    def _geometry(self, cfg, shape):
        n = spatial_dims(shape, self.name)
        k = ntuple(cfg.kernel, n, "kernel")
        s = ntuple(cfg.kernel if cfg.stride is None else cfg.stride, n, "stride")
        p = ntuple(cfg.padding, n, "padding")
        if any(2 * pi > ki for pi, ki in zip(p, k, strict=True)):
            raise ShapeError(f"padding {p} must be at most half the kernel {k}")
        return n, k, s, p

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        n, k, s, p = self._geometry(cfg, shape)
        dilation = getattr(cfg, "dilation", 1)
        return (shape[0], *(pooled_length(shape[1 + i], k[i], s[i], p[i], dilation, cfg.ceil_mode)
                            for i in range(n)))


@register_layer
class MaxPool(_Pool):
    name = "maxpool"
    summary = "max pooling (stride defaults to the kernel)"

    class Config(LayerConfig):
        type: Literal["maxpool"] = "maxpool"
        kernel: PositiveIntOrList
        stride: PositiveIntOrList | None = None
        padding: NonNegativeIntOrList = 0
        dilation: int = Field(1, gt=0)
        ceil_mode: bool = False

    def build(self, cfg, in_shapes):
        n, k, s, p = self._geometry(cfg, in_shapes[0])
        return _MAX[n](k, s, p, dilation=cfg.dilation, ceil_mode=cfg.ceil_mode)


@register_layer
class AvgPool(_Pool):
    name = "avgpool"
    summary = "average pooling (stride defaults to the kernel)"

    class Config(LayerConfig):
        type: Literal["avgpool"] = "avgpool"
        kernel: PositiveIntOrList
        stride: PositiveIntOrList | None = None
        padding: NonNegativeIntOrList = 0
        ceil_mode: bool = False
        count_include_pad: bool = True

    def build(self, cfg, in_shapes):
        n, k, s, p = self._geometry(cfg, in_shapes[0])
        return _AVG[n](k, s, p, ceil_mode=cfg.ceil_mode, count_include_pad=cfg.count_include_pad)


class _AdaptivePool(LayerKind):
    mode: str

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        n = spatial_dims(shape, self.name)
        return (shape[0], *ntuple(cfg.size, n, "size"))

    def build(self, cfg, in_shapes):
        n = len(in_shapes[0]) - 1
        return _ADAPTIVE[self.mode][n](ntuple(cfg.size, n, "size"))


class _AdaptiveConfig(LayerConfig):
    size: PositiveIntOrList


@register_layer
class AdaptiveAvgPool(_AdaptivePool):
    name = "adaptive_avg_pool"
    mode = "avg"
    summary = "average pooling to a fixed output size"

    class Config(_AdaptiveConfig):
        type: Literal["adaptive_avg_pool"] = "adaptive_avg_pool"


@register_layer
class AdaptiveMaxPool(_AdaptivePool):
    name = "adaptive_max_pool"
    mode = "max"
    summary = "max pooling to a fixed output size"

    class Config(_AdaptiveConfig):
        type: Literal["adaptive_max_pool"] = "adaptive_max_pool"


class _GlobalPool(LayerKind):
    mode: str

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        n = spatial_dims(shape, self.name)
        return (shape[0], *(1,) * n) if cfg.keep_dims else (shape[0],)

    def build(self, cfg, in_shapes):
        return modules.GlobalPool(self.mode, cfg.keep_dims)


class _GlobalConfig(LayerConfig):
    keep_dims: bool = False


@register_layer
class GlobalAvgPool(_GlobalPool):
    name = "global_avg_pool"
    mode = "avg"
    summary = "mean of each channel: (C, *spatial) -> (C,) (keep_dims: (C, 1, 1))"

    class Config(_GlobalConfig):
        type: Literal["global_avg_pool"] = "global_avg_pool"


@register_layer
class GlobalMaxPool(_GlobalPool):
    name = "global_max_pool"
    mode = "max"
    summary = "max of each channel: (C, *spatial) -> (C,) (keep_dims: (C, 1, 1))"

    class Config(_GlobalConfig):
        type: Literal["global_max_pool"] = "global_max_pool"


@register_layer
class Upsample(LayerKind):
    name = "upsample"
    summary = "resize by `scale` or to `size` (nearest, bilinear, ...)"

    class Config(LayerConfig):
        type: Literal["upsample"] = "upsample"
        scale: int | float | None = None
        size: IntOrList | None = None
        mode: Literal["nearest", "linear", "bilinear", "bicubic", "trilinear"] = "nearest"
        align_corners: bool | None = None

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        n = spatial_dims(shape, "upsample")
        if (cfg.scale is None) == (cfg.size is None):
            raise ShapeError("upsample needs exactly one of `scale` or `size`")
        if cfg.size is not None:
            return (shape[0], *ntuple(cfg.size, n, "size"))
        return (shape[0], *(math.floor(d * cfg.scale) for d in shape[1:]))

    def build(self, cfg, in_shapes):
        return nn.Upsample(size=cfg.size, scale_factor=cfg.scale, mode=cfg.mode,
                           align_corners=cfg.align_corners)
