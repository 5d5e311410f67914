"""Thin torch modules for the layer kinds torch lacks as modules.

They take plain values and know nothing about specs. All `dim` arguments here are torch dims
(batch included); the layer kinds translate from per-sample dims.
"""

from __future__ import annotations

import torch
from torch import nn

from nnspec.compiler.attention import SelfAttention  # noqa: F401  (the self_attention module)


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return out


class Multiply(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0] * xs[1]
        for x in xs[2:]:
            out = out * x
        return out


class Concat(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class GlobalPool(nn.Module):
    """Reduce every dim after the channels to one value (mean or max)."""

    def __init__(self, mode: str, keep_dims: bool):
        super().__init__()
        self.mode = mode
        self.keep_dims = keep_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        if self.mode == "avg":
            return x.mean(dims, keepdim=self.keep_dims)
        return x.amax(dims, keepdim=self.keep_dims)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, keep_dims={self.keep_dims}"


class Mean(nn.Module):
    def __init__(self, dims: tuple[int, ...], keep_dims: bool):
        super().__init__()
        self.dims = dims
        self.keep_dims = keep_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(self.dims, keepdim=self.keep_dims)


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Permute(nn.Module):
    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        self.dims = (0, *dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)


class Select(nn.Module):
    def __init__(self, dim: int, index: int):
        super().__init__()
        self.dim = dim
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.select(self.dim, self.index)


class Scale(nn.Module):
    """Multiply by a constant, or by a learnable per-channel factor (layer scale) whose shape
    broadcasts from the channel dim on: (C, 1, 1) for images (torchvision's ConvNeXt), (D,)
    for tokens (timm's LayerScale)."""

    def __init__(self, value: float, shape: tuple[int, ...] | None = None):
        super().__init__()
        self.value = value
        self.weight = None if shape is None else nn.Parameter(torch.full(shape, float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return x * self.value
        return x * self.weight


class StochasticDepth(nn.Module):
    """Drop a whole residual branch with probability p in training (per sample, or for the
    whole batch), scaling survivors by 1/(1-p); the identity in eval (Huang et al. 2016)."""

    def __init__(self, p: float, mode: str = "row"):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.dim() - 1) if self.mode == "row" else (1,) * x.dim()
        keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


class Slice(nn.Module):
    """x.narrow(dim, start, length): a contiguous part along one dim (ShuffleNet's split)."""

    def __init__(self, dim: int, start: int, length: int):
        super().__init__()
        self.dim = dim
        self.start = start
        self.length = length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.narrow(self.dim, self.start, self.length)


class Normalize(nn.Module):
    """(x - mean) / std per channel, with fixed, non-persistent buffers."""

    def __init__(self, mean: list[float], std: list[float], rank: int):
        super().__init__()
        view = (1, len(mean)) + (1,) * (rank - 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(view), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(view), False)

    def set(self, mean: list[float], std: list[float]) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype).view_as(self.mean))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).view_as(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Destandardize(nn.Module):
    """y * std + mean elementwise over the per-sample shape, with non-persistent buffers."""

    def __init__(self, mean: list[float], std: list[float], shape: tuple[int, ...]):
        super().__init__()
        view = (1, *shape)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(view), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(view), False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


class PatchEmbed(nn.Module):
    """Non-overlapping patches projected by a strided conv, as a token sequence (N, D)."""

    def __init__(self, in_channels: int, dim: int, size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=size, stride=size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ClassToken(nn.Module):
    """Prepend one learnable token to a (N, D) sequence."""

    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)


class PositionEmbedding(nn.Module):
    """Add a learnable (N, D) position embedding."""

    def __init__(self, length: int, dim: int, std: float = 0.02):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(1, length, dim).normal_(std=std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.embedding


class LSTM(nn.LSTM):
    """LSTM over a (L, F) sequence returning the outputs, or the last step only."""

    def __init__(self, *args, last_only: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_only = last_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = super().forward(x)[0]
        return out[:, -1] if self.last_only else out


class GRU(nn.GRU):
    """GRU over a (L, F) sequence returning the outputs, or the last step only."""

    def __init__(self, *args, last_only: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_only = last_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = super().forward(x)[0]
        return out[:, -1] if self.last_only else out


class LinearAlongDim(nn.Linear):
    """nn.Linear over dim `dim` instead of the last one: over channels of (B, C, H, W) with
    dim=1 (a 1x1 convolution holding a Linear's weight), over tokens with dim=1 of (B, N, D)
    (MLP-Mixer's token mixing)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dim: int = 1):
        super().__init__(in_features, out_features, bias=bias)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(self.dim, -1)).movedim(-1, self.dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}"


class LayerNormAlongDim(nn.LayerNorm):
    """nn.LayerNorm over one dim `dim` instead of the trailing ones: channels-first LayerNorm
    (torchvision's LayerNorm2d in ConvNeXt, timm's LayerNorm2d) with dim=1."""

    def __init__(self, size: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dim: int = 1):
        super().__init__(size, eps=eps, elementwise_affine=elementwise_affine, bias=bias)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(self.dim, -1)).movedim(-1, self.dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}"


class GroupNormAlongDim(nn.GroupNorm):
    """nn.GroupNorm with the channels at dim `dim` instead of 1 (channels-last maps)."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-5, affine: bool = True,
                 dim: int = -1):
        super().__init__(groups, channels, eps=eps, affine=affine)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(self.dim, 1)).movedim(1, self.dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}"
