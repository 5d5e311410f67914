"""Convolutions: conv (1d/2d/3d, groups, dilation, `same` padding), conv_transpose, patch_embed."""

from __future__ import annotations

import math
from typing import Literal

from torch import nn

from nnspec.compiler import modules
from nnspec.compiler.layers.common import (
    NonNegativeIntOrList,
    PositiveInt,
    PositiveIntOrList,
    ntuple,
    pooled_length,
    spatial_dims,
)
from nnspec.compiler.layers.registry import (
    WEIGHT_AND_BIAS,
    LayerConfig,
    LayerKind,
    ShapeError,
    register_layer,
)

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _check_groups(in_ch: int, out: int, groups: int) -> None:
    if in_ch % groups or out % groups:
        raise ShapeError(
            f"groups={groups} must divide both input channels ({in_ch}) and out ({out})",
            hint="depthwise convolution: set groups to the input channel count and out to a multiple",
        )


@register_layer
class Conv(LayerKind):
    name = "conv"
    category = "conv"
    param_roles = WEIGHT_AND_BIAS
    summary = "convolution over 1-3 spatial dims (groups, dilation, padding incl. same)"

    class Config(LayerConfig):
        type: Literal["conv"] = "conv"
        out: PositiveInt
        kernel: PositiveIntOrList
        stride: PositiveIntOrList = 1
        padding: NonNegativeIntOrList | Literal["same", "valid"] = 0
        dilation: PositiveIntOrList = 1
        groups: PositiveInt = 1
        bias: bool = True
        padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"

    def _geometry(self, cfg, shape):
        n = spatial_dims(shape, "conv")
        k = ntuple(cfg.kernel, n, "kernel")
        s = ntuple(cfg.stride, n, "stride")
        d = ntuple(cfg.dilation, n, "dilation")
        if min(k + s + d) < 1:
            raise ShapeError("kernel, stride and dilation must be positive")
        if cfg.padding == "same":
            if max(s) != 1:
                raise ShapeError("padding 'same' needs stride 1", hint="give explicit padding")
            p = None
        elif cfg.padding == "valid":
            p = (0,) * n
        else:
            p = ntuple(cfg.padding, n, "padding")
        return n, k, s, d, p

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        n, k, s, d, p = self._geometry(cfg, shape)
        _check_groups(shape[0], cfg.out, cfg.groups)
        if p is None:
            return (cfg.out, *shape[1:])
        spatial = tuple(pooled_length(shape[1 + i], k[i], s[i], p[i], d[i], False) for i in range(n))
        return (cfg.out, *spatial)

    def build(self, cfg, in_shapes):
        shape = in_shapes[0]
        n, k, s, d, p = self._geometry(cfg, shape)
        return _CONV[n](
            shape[0], cfg.out, k, stride=s, padding="same" if p is None else p, dilation=d,
            groups=cfg.groups, bias=cfg.bias, padding_mode=cfg.padding_mode,
        )

    def macs(self, cfg, in_shapes, out_shape):
        n = len(out_shape) - 1
        k = ntuple(cfg.kernel, n, "kernel")
        return math.prod(out_shape) * (in_shapes[0][0] // cfg.groups) * math.prod(k)


@register_layer
class ConvTranspose(LayerKind):
    name = "conv_transpose"
    category = "conv"
    param_roles = WEIGHT_AND_BIAS
    summary = "transposed convolution (learned upsampling)"

    class Config(LayerConfig):
        type: Literal["conv_transpose"] = "conv_transpose"
        out: PositiveInt
        kernel: PositiveIntOrList
        stride: PositiveIntOrList = 1
        padding: NonNegativeIntOrList = 0
        output_padding: NonNegativeIntOrList = 0
        dilation: PositiveIntOrList = 1
        groups: PositiveInt = 1
        bias: bool = True

    def _geometry(self, cfg, shape):
        n = spatial_dims(shape, "conv_transpose")
        return n, *(ntuple(getattr(cfg, f), n, f) for f in
                    ("kernel", "stride", "padding", "output_padding", "dilation"))

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        n, k, s, p, op, d = self._geometry(cfg, shape)
        _check_groups(shape[0], cfg.out, cfg.groups)
        spatial = tuple(
            (shape[1 + i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in range(n)
        )
        if min(spatial) < 1:
            raise ShapeError(f"output size {spatial} is not positive")
        return (cfg.out, *spatial)

    def build(self, cfg, in_shapes):
        shape = in_shapes[0]
        n, k, s, p, op, d = self._geometry(cfg, shape)
        return _CONV_T[n](shape[0], cfg.out, k, stride=s, padding=p, output_padding=op,
                          groups=cfg.groups, bias=cfg.bias, dilation=d)

    def macs(self, cfg, in_shapes, out_shape):
        shape = in_shapes[0]
        k = ntuple(cfg.kernel, len(shape) - 1, "kernel")
        return math.prod(shape) * (cfg.out // cfg.groups) * math.prod(k)


@register_layer
class PatchEmbed(LayerKind):
    name = "patch_embed"
    category = "conv"
    param_roles = {"proj.weight": "weight", "proj.bias": "bias"}
    summary = "ViT patch embedding: (C, H, W) -> (patches, dim) by a strided conv"

    class Config(LayerConfig):
        type: Literal["patch_embed"] = "patch_embed"
        size: PositiveInt
        dim: PositiveInt

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        spatial_dims(shape, "patch_embed", allowed=(2,))
        c, h, w = shape
        if h % cfg.size or w % cfg.size:
            raise ShapeError(f"image {h}x{w} is not divisible into {cfg.size}x{cfg.size} patches")
        return ((h // cfg.size) * (w // cfg.size), cfg.dim)

    def build(self, cfg, in_shapes):
        return modules.PatchEmbed(in_shapes[0][0], cfg.dim, cfg.size)

    def macs(self, cfg, in_shapes, out_shape):
        return out_shape[0] * cfg.dim * in_shapes[0][0] * cfg.size * cfg.size

