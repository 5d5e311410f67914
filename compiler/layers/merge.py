"""Merge layers with two or more inputs: add, multiply (broadcasting), concat."""

from __future__ import annotations

from typing import Literal

from nnspec.compiler import modules
from nnspec.compiler.layers.common import sample_dim, torch_dim
from nnspec.compiler.layers.registry import LayerConfig, LayerKind, ShapeError, register_layer


def _describe(shapes) -> str:
    return " and ".join(str(s) for s in shapes)


@register_layer
class AddKind(LayerKind):
    name = "add"
    arity = None
    summary = "element-wise sum of inputs with equal shapes (skip connections)"

    class Config(LayerConfig):
        type: Literal["add"] = "add"

    def infer_shape(self, cfg, in_shapes):
        if len(set(in_shapes)) != 1:
            raise ShapeError(
                f"add needs equal shapes, got {_describe(in_shapes)}",
                hint="project the shortcut (a 1x1 conv with the same stride) so shapes match",
            )
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        return modules.Add()


@register_layer
class MultiplyKind(LayerKind):
    name = "multiply"
    arity = None
    summary = "element-wise product with broadcasting (squeeze-excitation gates)"

    class Config(LayerConfig):
        type: Literal["multiply"] = "multiply"

    def infer_shape(self, cfg, in_shapes):
        rank = max(len(s) for s in in_shapes)
        padded = [(1,) * (rank - len(s)) + tuple(s) for s in in_shapes]
        out = []
        for dims in zip(*padded, strict=True):
            sizes = {d for d in dims if d != 1}
            if len(sizes) > 1:
                raise ShapeError(f"multiply cannot broadcast {_describe(in_shapes)}")
            out.append(sizes.pop() if sizes else 1)
        return tuple(out)

    def build(self, cfg, in_shapes):
        return modules.Multiply()


@register_layer
class ConcatKind(LayerKind):
    name = "concat"
    arity = None
    summary = "join inputs along a per-sample dim (default 0: channels)"

    class Config(LayerConfig):
        type: Literal["concat"] = "concat"
        dim: int = 0

    def infer_shape(self, cfg, in_shapes):
        ranks = {len(s) for s in in_shapes}
        if len(ranks) != 1:
            raise ShapeError(f"concat needs inputs of one rank, got {_describe(in_shapes)}")
        rank = ranks.pop()
        torch_dim(cfg.dim, rank)
        d = sample_dim(cfg.dim, rank)
        rest = {tuple(s[:d]) + tuple(s[d + 1:]) for s in in_shapes}
        if len(rest) != 1:
            raise ShapeError(
                f"concat along dim {cfg.dim} needs equal other dims, got {_describe(in_shapes)}",
                hint="resize one input first (upsample, crop with padding, or a strided conv)",
            )
        out = list(in_shapes[0])
        out[d] = sum(s[d] for s in in_shapes)
        return tuple(out)

    def build(self, cfg, in_shapes):
        return modules.Concat(torch_dim(cfg.dim, len(in_shapes[0])))
