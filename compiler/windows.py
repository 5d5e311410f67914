"""Thin modules for windowed attention on channels-last maps (*spatial, C): cyclic shift,
window and grid partition and their inverse, the shifted-window mask, patch merging.

Partitions put windows on a leading dim, so attention over (windows, tokens, C) runs on every
window at once (Swin: Liu et al. 2021; MaxViT: Tu et al. 2022). Shapes are fixed when the
module is built (spatial sizes are part of the spec), so every reshape is static and exports
to ONNX as such. Dims here are torch dims (batch included).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Roll(nn.Module):
    """torch.roll: shift cyclically along dims (Swin's shift toward the top-left is negative)."""

    def __init__(self, shifts: tuple[int, ...], dims: tuple[int, ...]):
        super().__init__()
        self.shifts = shifts
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(x, self.shifts, self.dims)

    def extra_repr(self) -> str:
        return f"shifts={self.shifts}, dims={self.dims}"


def _split(spatial: tuple[int, ...], size: tuple[int, ...],
           grid: bool) -> tuple[list[int], list[int], list[int]]:
    """Split each spatial dim L into (outer, inner). Windows: outer = L / size windows, inner =
    size tokens. Grid: outer = size tokens spread L / size apart, inner = L / size groups.
    Returns the split shape (outer, inner per dim) and which positions hold groups and tokens."""
    split: list[int] = []
    for length, s in zip(spatial, size, strict=True):
        split += [length // s, s] if not grid else [s, length // s]
    n = len(spatial)
    outer, inner = [1 + 2 * d for d in range(n)], [2 + 2 * d for d in range(n)]
    groups, tokens = (outer, inner) if not grid else (inner, outer)
    return split, groups, tokens


class WindowPartition(nn.Module):
    """(B, *spatial, C) -> (B, groups, tokens, C). `grid=False`: non-overlapping windows of
    `size` (Swin's window partition, MaxViT's block attention); `grid=True`: a `size` grid of
    tokens spaced evenly over the whole map (MaxViT's grid attention). Tokens are row-major."""

    def __init__(self, spatial: tuple[int, ...], size: tuple[int, ...], grid: bool = False):
        super().__init__()
        self.spatial, self.size, self.grid = spatial, size, grid
        split, groups, tokens = _split(spatial, size, grid)
        self._split = tuple(split)
        self._order = (0, *groups, *tokens, len(split) + 1)
        self._groups = math.prod(length // s for length, s in zip(spatial, size, strict=True))
        self._tokens = math.prod(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[-1]
        x = x.reshape(-1, *self._split, channels).permute(self._order)
        return x.reshape(-1, self._groups, self._tokens, channels)

    def extra_repr(self) -> str:
        return f"spatial={self.spatial}, size={self.size}, grid={self.grid}"


class WindowReverse(nn.Module):
    """The inverse of WindowPartition: (B, groups, tokens, C) -> (B, *spatial, C)."""

    def __init__(self, spatial: tuple[int, ...], size: tuple[int, ...], grid: bool = False):
        super().__init__()
        self.spatial, self.size, self.grid = spatial, size, grid
        split, groups, tokens = _split(spatial, size, grid)
        permuted = [0, *groups, *tokens, len(split) + 1]
        self._permuted = tuple(split[i - 1] for i in permuted[1:-1])
        self._order = tuple(permuted.index(i) for i in range(len(permuted)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[-1]
        x = x.reshape(-1, *self._permuted, channels).permute(self._order)
        return x.reshape(-1, *self.spatial, channels)

    def extra_repr(self) -> str:
        return f"spatial={self.spatial}, size={self.size}, grid={self.grid}"


def shifted_window_mask(spatial: tuple[int, ...], size: tuple[int, ...],
                        shift: tuple[int, ...]) -> torch.Tensor:
    """(windows, N, N): 0 between tokens of one sub-window, -100 across sub-windows, for a map
    rolled by -shift and cut into windows of `size` (Swin, Section 3.2 and torchvision's
    `shifted_window_attention`: the same regions and the same -100)."""
    labels = torch.zeros(spatial)
    for d, (length, s, t) in enumerate(zip(spatial, size, shift, strict=True)):
        region = torch.zeros(length)
        if t:  # [0, L - s) | [L - s, L - t) | [L - t, L): the wrapped strips are apart
            region[length - s:length - t] = 1
            region[length - t:] = 2
        labels = labels + region.view(*(-1 if i == d else 1 for i in range(len(spatial)))) \
            * 3 ** (len(spatial) - 1 - d)
    windows = WindowPartition(spatial, size)(labels[None, ..., None])[0, ..., 0]  # (nW, N)
    differ = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(differ.shape).masked_fill(differ, -100.0)


class ShiftedWindowMask(nn.Module):
    """Outputs the fixed additive mask (B, windows, N, N) of shifted windows; the input only
    gives the batch size (the mask is a non-persistent buffer, recomputed from the spec)."""

    def __init__(self, spatial: tuple[int, ...], size: tuple[int, ...], shift: tuple[int, ...]):
        super().__init__()
        self.spatial, self.size, self.shift = spatial, size, shift
        self.register_buffer("mask", shifted_window_mask(spatial, size, shift), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.to(x.dtype).expand(x.shape[0], *self.mask.shape)

    def extra_repr(self) -> str:
        return f"spatial={self.spatial}, size={self.size}, shift={self.shift}"


class MergePatches(nn.Module):
    """(B, H, W, C) -> (B, H/s, W/s, s*s*C): each s x s group of neighbouring tokens
    concatenated along channels in Swin's order (row offset fastest: for s=2 the tokens
    (0,0), (1,0), (0,1), (1,1), as torchvision's PatchMerging). Odd sizes are zero-padded at
    the bottom and right, as torchvision pads."""

    def __init__(self, spatial: tuple[int, int], size: int):
        super().__init__()
        self.spatial, self.size = spatial, size
        self._pad = tuple(-length % size for length in spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.size
        if any(self._pad):
            x = F.pad(x, (0, 0, 0, self._pad[1], 0, self._pad[0]))
        height, width = (length + pad for length, pad in zip(self.spatial, self._pad, strict=True))
        channels = x.shape[-1]
        x = x.reshape(-1, height // s, s, width // s, s, channels).permute(0, 1, 3, 4, 2, 5)
        return x.reshape(-1, height // s, width // s, s * s * channels)

    def extra_repr(self) -> str:
        return f"spatial={self.spatial}, size={self.size}"
