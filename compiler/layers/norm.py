"""Normalisation and dropout: batchnorm, layernorm, groupnorm, local_response_norm, normalize,
dropout (element-wise or whole channels), stochastic_depth."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from nnspec.compiler import modules
from nnspec.compiler.layers.common import PositiveInt, Probability, sample_dim, torch_dim
from nnspec.compiler.layers.registry import LayerConfig, LayerKind, ShapeError, register_layer

_BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm2d, 4: nn.BatchNorm3d}
_DROPOUT_CHANNEL = {2: nn.Dropout1d, 3: nn.Dropout2d, 4: nn.Dropout3d}


@register_layer
class BatchNorm(LayerKind):
    name = "batchnorm"
    category = "norm"
    param_roles = {"weight": "norm", "bias": ("norm", "bias")}
    summary = "batch normalisation over channels (dim 0); running stats at inference"

    class Config(LayerConfig):
        type: Literal["batchnorm"] = "batchnorm"
        eps: float = Field(1e-5, gt=0)
        momentum: float | None = Field(0.1, ge=0, le=1)
        affine: bool = True
        track_running_stats: bool = True

    def infer_shape(self, cfg, in_shapes):
        if len(in_shapes[0]) not in _BATCHNORM:
            raise ShapeError(f"batchnorm expects rank 1 to 4 per sample, got {in_shapes[0]}")
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        shape = in_shapes[0]
        return _BATCHNORM[len(shape)](
            shape[0], eps=cfg.eps, momentum=cfg.momentum, affine=cfg.affine,
            track_running_stats=cfg.track_running_stats,
        )


@register_layer
class LayerNorm(LayerKind):
    name = "layernorm"
    category = "norm"
    param_roles = {"weight": "norm", "bias": ("norm", "bias")}
    summary = "layer normalisation over the last `dims` dims, or over one `dim` (0: channels)"

    class Config(LayerConfig):
        type: Literal["layernorm"] = "layernorm"
        dims: PositiveInt = 1
        dim: int | None = None
        eps: float = Field(1e-5, gt=0)
        affine: bool = True
        bias: bool = True

    def _dim(self, cfg, shape) -> int | None:
        """The per-sample dim normalised alone, or None for the trailing `dims` dims."""
        if cfg.dim is None:
            if cfg.dims > len(shape):
                raise ShapeError(f"dims={cfg.dims} exceeds the per-sample rank of {shape}")
            return None
        if cfg.dims != 1:
            raise ShapeError("give `dim` (one dim, anywhere) or `dims` (the trailing dims), "
                             "not both")
        torch_dim(cfg.dim, len(shape))
        return sample_dim(cfg.dim, len(shape))

    def infer_shape(self, cfg, in_shapes):
        self._dim(cfg, in_shapes[0])
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        shape = in_shapes[0]
        d = self._dim(cfg, shape)
        if d is None or d == len(shape) - 1:
            size = shape[-cfg.dims:] if d is None else shape[-1:]
            return nn.LayerNorm(size, eps=cfg.eps, elementwise_affine=cfg.affine, bias=cfg.bias)
        return modules.LayerNormAlongDim(shape[d], eps=cfg.eps, elementwise_affine=cfg.affine,
                                         bias=cfg.bias, dim=d + 1)


@register_layer
class GroupNorm(LayerKind):
    name = "groupnorm"
    category = "norm"
    param_roles = {"weight": "norm", "bias": ("norm", "bias")}
    summary = "group normalisation: channels (dim 0, or `dim: -1` channels-last) in `groups`"

    class Config(LayerConfig):
        type: Literal["groupnorm"] = "groupnorm"
        groups: PositiveInt
        dim: int = 0
        eps: float = Field(1e-5, gt=0)
        affine: bool = True

    def _dim(self, cfg, shape) -> int:
        torch_dim(cfg.dim, len(shape))
        return sample_dim(cfg.dim, len(shape))

    def infer_shape(self, cfg, in_shapes):
        channels = in_shapes[0][self._dim(cfg, in_shapes[0])]
        if channels % cfg.groups:
            raise ShapeError(f"groups={cfg.groups} does not divide {channels} channels")
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        d = self._dim(cfg, in_shapes[0])
        channels = in_shapes[0][d]
        if d == 0:
            return nn.GroupNorm(cfg.groups, channels, eps=cfg.eps, affine=cfg.affine)
        return modules.GroupNormAlongDim(cfg.groups, channels, eps=cfg.eps, affine=cfg.affine,
                                         dim=d + 1)


@register_layer
class LocalResponseNorm(LayerKind):
    name = "local_response_norm"
    summary = "AlexNet's local response normalisation across channels"

    class Config(LayerConfig):
        type: Literal["local_response_norm"] = "local_response_norm"
        size: PositiveInt = 5
        alpha: float = 1e-4
        beta: float = 0.75
        k: float = 1.0

    def build(self, cfg, in_shapes):
        return nn.LocalResponseNorm(cfg.size, cfg.alpha, cfg.beta, cfg.k)


@register_layer
class NormalizeKind(LayerKind):
    name = "normalize"
    summary = "fixed per-channel (x - mean) / std (not trained)"

    class Config(LayerConfig):
        type: Literal["normalize"] = "normalize"
        mean: list[float]
        std: list[float]

    def infer_shape(self, cfg, in_shapes):
        channels = in_shapes[0][0]
        if len(cfg.mean) != channels or len(cfg.std) != channels:
            raise ShapeError(
                f"mean/std have {len(cfg.mean)}/{len(cfg.std)} values for {channels} channels"
            )
        if min(cfg.std) <= 0:
            raise ShapeError("std values must be positive")
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        return modules.Normalize(cfg.mean, cfg.std, len(in_shapes[0]))


@register_layer
class Dropout(LayerKind):
    name = "dropout"
    summary = "dropout: element-wise, or whole channels with channel: true"

    class Config(LayerConfig):
        type: Literal["dropout"] = "dropout"
        p: Probability = 0.5
        channel: bool = False

    def infer_shape(self, cfg, in_shapes):
        if cfg.channel and len(in_shapes[0]) not in _DROPOUT_CHANNEL:
            raise ShapeError(f"channel dropout needs (C, *spatial) inputs, got {in_shapes[0]}")
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        if cfg.channel:
            return _DROPOUT_CHANNEL[len(in_shapes[0])](cfg.p)
        return nn.Dropout(cfg.p)


@register_layer
class StochasticDepthKind(LayerKind):
    name = "stochastic_depth"
    summary = "drop the residual branch per sample with probability p in training (drop path)"

    class Config(LayerConfig):
        type: Literal["stochastic_depth"] = "stochastic_depth"
        p: Probability
        mode: Literal["row", "batch"] = "row"

    def build(self, cfg, in_shapes):
        return modules.StochasticDepth(cfg.p, cfg.mode)
