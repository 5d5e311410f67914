"""Layers over features and token sequences: linear, embedding, attention, recurrent, tokens."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from nnspec.compiler import modules
from nnspec.compiler.layers.common import PositiveInt, Probability
from nnspec.compiler.layers.registry import LayerConfig, LayerKind, ShapeError, register_layer


def _needs_rank(shape, ranks, what, hint=""):
    if len(shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(f"{what} expects a per-sample shape of rank {want}, got {shape}", hint=hint)


@register_layer
class Linear(LayerKind):
    name = "linear"
    category = "linear"
    summary = "fully connected layer on the last dim"

    class Config(LayerConfig):
        type: Literal["linear"] = "linear"
        out: PositiveInt
        bias: bool = True

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        if len(shape) > 2:
            raise ShapeError(
                f"linear expects features (F,) or tokens (N, F), got a per-sample shape {shape}",
                hint="add `flatten` or `global_avg_pool` before it",
            )
        return (*shape[:-1], cfg.out)

    def build(self, cfg, in_shapes):
        return nn.Linear(in_shapes[0][-1], cfg.out, bias=cfg.bias)

    def macs(self, cfg, in_shapes, out_shape):
        return math.prod(in_shapes[0]) * cfg.out


@register_layer
class Embedding(LayerKind):
    name = "embedding"
    category = "embedding"
    summary = "lookup table: int64 token ids (L,) -> (L, dim)"

    class Config(LayerConfig):
        type: Literal["embedding"] = "embedding"
        num: PositiveInt
        dim: PositiveInt
        padding_idx: int | None = None

    def infer_shape(self, cfg, in_shapes):
        return (*in_shapes[0], cfg.dim)

    def build(self, cfg, in_shapes):
        return nn.Embedding(cfg.num, cfg.dim, padding_idx=cfg.padding_idx)


@register_layer
class SelfAttentionKind(LayerKind):
    name = "self_attention"
    category = "attention"
    summary = "multi-head self-attention on tokens (N, D)"

    class Config(LayerConfig):
        type: Literal["self_attention"] = "self_attention"
        heads: PositiveInt
        dropout: Probability = 0.0
        bias: bool = True

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        _needs_rank(shape, (2,), "self_attention", "tokens are (N, D); use patch_embed first")
        if shape[1] % cfg.heads:
            raise ShapeError(f"dim {shape[1]} is not divisible by heads={cfg.heads}")
        return shape

    def build(self, cfg, in_shapes):
        return modules.SelfAttention(in_shapes[0][1], cfg.heads, cfg.dropout, cfg.bias)

    def macs(self, cfg, in_shapes, out_shape):
        n, d = in_shapes[0]
        return 4 * n * d * d + 2 * n * n * d  # q, k, v, out projections + two attention matmuls


class _Recurrent(LayerKind):
    category = "recurrent"
    gates: int
    module: type

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        _needs_rank(shape, (2,), self.name, "sequences are (L, F)")
        width = cfg.hidden * (2 if cfg.bidirectional else 1)
        return (width,) if cfg.output == "last" else (shape[0], width)

    def build(self, cfg, in_shapes):
        return self.module(
            in_shapes[0][1], cfg.hidden, num_layers=cfg.layers, bidirectional=cfg.bidirectional,
            dropout=cfg.dropout, batch_first=True, last_only=cfg.output == "last",
        )

    def macs(self, cfg, in_shapes, out_shape):
        length, features = in_shapes[0]
        dirs = 2 if cfg.bidirectional else 1
        total, width = 0, features
        for _ in range(cfg.layers):
            total += dirs * length * self.gates * cfg.hidden * (width + cfg.hidden)
            width = cfg.hidden * dirs
        return total


class _RecurrentConfig(LayerConfig):
    hidden: PositiveInt
    layers: PositiveInt = 1
    bidirectional: bool = False
    dropout: Probability = 0.0
    output: Literal["sequence", "last"] = "sequence"


@register_layer
class LSTMKind(_Recurrent):
    name = "lstm"
    gates = 4
    module = modules.LSTM
    summary = "LSTM over (L, F); output the sequence or the last step"

    class Config(_RecurrentConfig):
        type: Literal["lstm"] = "lstm"


@register_layer
class GRUKind(_Recurrent):
    name = "gru"
    gates = 3
    module = modules.GRU
    summary = "GRU over (L, F); output the sequence or the last step"

    class Config(_RecurrentConfig):
        type: Literal["gru"] = "gru"


@register_layer
class ClassToken(LayerKind):
    name = "class_token"
    category = "token"
    summary = "prepend a learnable class token: (N, D) -> (N+1, D)"

    class Config(LayerConfig):
        type: Literal["class_token"] = "class_token"

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        _needs_rank(shape, (2,), "class_token")
        return (shape[0] + 1, shape[1])

    def build(self, cfg, in_shapes):
        return modules.ClassToken(in_shapes[0][1])


@register_layer
class PositionEmbeddingKind(LayerKind):
    name = "position_embedding"
    category = "token"
    summary = "add a learnable position embedding to (N, D) tokens"

    class Config(LayerConfig):
        type: Literal["position_embedding"] = "position_embedding"
        std: float = Field(0.02, gt=0)

    def infer_shape(self, cfg, in_shapes):
        _needs_rank(in_shapes[0], (2,), "position_embedding")
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        return modules.PositionEmbedding(*in_shapes[0], std=cfg.std)
