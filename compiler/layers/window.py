"""Windowed attention's tensor kinds on channels-last maps (*spatial, C): roll (cyclic shift),
window_partition / window_reverse (windows or a grid of tokens on a leading dim),
shifted_window_mask (Swin's additive mask), merge_patches (Swin's 2x2 patch merging)."""

from __future__ import annotations

import math
from typing import Literal

from nnspec.compiler import windows
from nnspec.compiler.layers.common import (
    NonNegativeIntOrList,
    PositiveInt,
    PositiveIntOrList,
    torch_dim,
)
from nnspec.compiler.layers.registry import LayerConfig, LayerKind, ShapeError, register_layer

_CHANNELS_LAST = "windows take channels-last maps (H, W, C); `permute: {dims: [1, 2, 0]}` " \
                 "turns (C, H, W) into them"


def _spatial(shape, what: str) -> tuple[int, ...]:
    """The spatial dims of a channels-last (*spatial, C) map with 1 to 3 spatial dims."""
    if not 2 <= len(shape) <= 4:
        raise ShapeError(f"{what} expects a channels-last map (*spatial, C) with 1 to 3 spatial "
                         f"dims, got a per-sample shape {shape}", hint=_CHANNELS_LAST)
    return tuple(shape[:-1])


def _per_dim(value: int | list[int], n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ShapeError(f"{name} has {len(value)} values for {n} spatial dims")
    return tuple(value)


def _check_divides(spatial: tuple[int, ...], size: tuple[int, ...], what: str) -> None:
    if any(length % s for length, s in zip(spatial, size, strict=True)):
        raise ShapeError(
            f"{what}: the map {spatial} is not divisible into windows of {size}",
            hint="choose an input size whose maps are multiples of the window size "
                 "(Swin-T and MaxViT-T at 224x224: 56, 28, 14, 7)")


@register_layer
class RollKind(LayerKind):
    name = "roll"
    summary = "shift cyclically along dims (torch.roll): Swin's shifted windows"

    class Config(LayerConfig):
        type: Literal["roll"] = "roll"
        shifts: int | list[int]
        dims: int | list[int]

    def _pairs(self, cfg, shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
        shifts = (cfg.shifts,) if isinstance(cfg.shifts, int) else tuple(cfg.shifts)
        dims = (cfg.dims,) if isinstance(cfg.dims, int) else tuple(cfg.dims)
        if len(shifts) != len(dims):
            raise ShapeError(f"roll has {len(shifts)} shifts for {len(dims)} dims")
        return shifts, tuple(torch_dim(d, len(shape)) for d in dims)

    def infer_shape(self, cfg, in_shapes):
        self._pairs(cfg, in_shapes[0])
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        return windows.Roll(*self._pairs(cfg, in_shapes[0]))


class _Partition(LayerConfig):
    size: PositiveIntOrList
    grid: bool = False


@register_layer
class WindowPartitionKind(LayerKind):
    name = "window_partition"
    summary = "(*spatial, C) -> (windows, tokens, C): windows of `size`, or a `grid` of tokens"

    class Config(_Partition):
        type: Literal["window_partition"] = "window_partition"

    def _geometry(self, cfg, shape):
        spatial = _spatial(shape, "window_partition")
        size = _per_dim(cfg.size, len(spatial), "size")
        _check_divides(spatial, size, "window_partition")
        return spatial, size

    def infer_shape(self, cfg, in_shapes):
        spatial, size = self._geometry(cfg, in_shapes[0])
        return (math.prod(spatial) // math.prod(size), math.prod(size), in_shapes[0][-1])

    def build(self, cfg, in_shapes):
        return windows.WindowPartition(*self._geometry(cfg, in_shapes[0]), grid=cfg.grid)


@register_layer
class WindowReverseKind(LayerKind):
    name = "window_reverse"
    summary = "(windows, tokens, C) -> (*shape, C): undo window_partition"

    class Config(_Partition):
        type: Literal["window_reverse"] = "window_reverse"
        shape: list[PositiveInt]

    def _geometry(self, cfg, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"window_reverse expects (windows, tokens, C), got {in_shape}")
        spatial = tuple(cfg.shape)
        if not 1 <= len(spatial) <= 3:
            raise ShapeError(f"shape {list(spatial)} needs 1 to 3 spatial dims")
        size = _per_dim(cfg.size, len(spatial), "size")
        _check_divides(spatial, size, "window_reverse")
        expected = (math.prod(spatial) // math.prod(size), math.prod(size))
        if tuple(in_shape[:2]) != expected:
            raise ShapeError(
                f"windows of {size} tile a {list(spatial)} map as {expected[0]} windows of "
                f"{expected[1]} tokens, but the input has {in_shape[0]} of {in_shape[1]}",
                hint="give the map's shape before window_partition, e.g. "
                     "`shape: \"${in_shape[:2]}\"` in a block")
        return spatial, size

    def infer_shape(self, cfg, in_shapes):
        spatial, _ = self._geometry(cfg, in_shapes[0])
        return (*spatial, in_shapes[0][-1])

    def build(self, cfg, in_shapes):
        return windows.WindowReverse(*self._geometry(cfg, in_shapes[0]), grid=cfg.grid)


@register_layer
class ShiftedWindowMaskKind(LayerKind):
    name = "shifted_window_mask"
    summary = "Swin's additive mask (windows, N, N) for a map shifted by `shift` (from its shape)"

    class Config(LayerConfig):
        type: Literal["shifted_window_mask"] = "shifted_window_mask"
        size: PositiveIntOrList
        shift: NonNegativeIntOrList

    def _geometry(self, cfg, shape):
        spatial = _spatial(shape, "shifted_window_mask")
        size = _per_dim(cfg.size, len(spatial), "size")
        shift = _per_dim(cfg.shift, len(spatial), "shift")
        _check_divides(spatial, size, "shifted_window_mask")
        if any(t >= s for t, s in zip(shift, size, strict=True)):
            raise ShapeError(f"shift {shift} must be smaller than the window {size}")
        return spatial, size, shift

    def infer_shape(self, cfg, in_shapes):
        spatial, size, _ = self._geometry(cfg, in_shapes[0])
        tokens = math.prod(size)
        return (math.prod(spatial) // tokens, tokens, tokens)

    def build(self, cfg, in_shapes):
        return windows.ShiftedWindowMask(*self._geometry(cfg, in_shapes[0]))


@register_layer
class MergePatchesKind(LayerKind):
    name = "merge_patches"
    summary = "(H, W, C) -> (H/s, W/s, s*s*C): concatenate s x s neighbours (Swin's patch merging)"

    class Config(LayerConfig):
        type: Literal["merge_patches"] = "merge_patches"
        size: PositiveInt = 2

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        if len(shape) != 3:
            raise ShapeError(f"merge_patches expects a channels-last map (H, W, C), got {shape}",
                             hint=_CHANNELS_LAST)
        h, w, c = shape
        return (-(-h // cfg.size), -(-w // cfg.size), cfg.size * cfg.size * c)

    def build(self, cfg, in_shapes):
        return windows.MergePatches(tuple(in_shapes[0][:2]), cfg.size)
