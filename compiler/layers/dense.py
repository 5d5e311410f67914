"""Layers over features and token sequences: linear, embedding, attention, recurrent, tokens."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from nnspec.compiler import modules
from nnspec.compiler.layers.common import PositiveInt, Probability, sample_dim, torch_dim
from nnspec.compiler.layers.registry import (
    WEIGHT_AND_BIAS,
    LayerConfig,
    LayerKind,
    ShapeError,
    register_layer,
)


def _needs_rank(shape, ranks, what, hint=""):
    if len(shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(f"{what} expects a per-sample shape of rank {want}, got {shape}", hint=hint)


def _along(shape, dim: int | None, what: str) -> int:
    """The per-sample dim a feature-wise layer acts on: `dim` if given, else the last dim of
    features (F,) or tokens (N, F); a map (rank 3 and up) must say which dim holds features."""
    if dim is not None:
        torch_dim(dim, len(shape))
        return sample_dim(dim, len(shape))
    if len(shape) > 2:
        raise ShapeError(
            f"{what} expects features (F,) or tokens (N, F), got a per-sample shape {shape}",
            hint="add `flatten` or `global_avg_pool` before it, or say which dim holds the "
                 "features: `dim: -1` for channels-last maps (H, W, C), `dim: 0` for (C, H, W)")
    return len(shape) - 1


@register_layer
class Linear(LayerKind):
    name = "linear"
    category = "linear"
    param_roles = WEIGHT_AND_BIAS
    summary = "fully connected layer on the last dim (or on `dim`: -1 channels-last, 0 channels)"

    class Config(LayerConfig):
        type: Literal["linear"] = "linear"
        out: PositiveInt
        bias: bool = True
        dim: int | None = None

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        d = _along(shape, cfg.dim, "linear")
        return (*shape[:d], cfg.out, *shape[d + 1:])

    def build(self, cfg, in_shapes):
        shape = in_shapes[0]
        d = _along(shape, cfg.dim, "linear")
        if d == len(shape) - 1:
            return nn.Linear(shape[d], cfg.out, bias=cfg.bias)
        return modules.LinearAlongDim(shape[d], cfg.out, bias=cfg.bias, dim=d + 1)

    def macs(self, cfg, in_shapes, out_shape):
        return math.prod(in_shapes[0]) * cfg.out


@register_layer
class Embedding(LayerKind):
    name = "embedding"
    category = "embedding"
    param_roles = {"weight": "embedding"}
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


class PositionBias(LayerConfig):
    """A learned relative position bias over the tokens of a window (Swin's Eq. 4): one value
    per head for each offset between two tokens, added to the attention logits. With `mlp`,
    Swin V2's continuous form: an MLP of that width computes the values from the offsets."""

    window: PositiveInt | list[PositiveInt]
    mlp: PositiveInt | None = None

    def size(self) -> tuple[int, int]:
        window = self.window
        if isinstance(window, int):
            return (window, window)
        if len(window) != 2:
            raise ShapeError(f"position_bias window {window} needs 2 values (height, width)")
        return (window[0], window[1])


@register_layer
class SelfAttentionKind(LayerKind):
    name = "self_attention"
    category = "attention"
    param_roles = {
        "in_proj_weight": "weight", "out_proj.weight": "weight",
        "in_proj_bias": "bias", "out_proj.bias": "bias",
        # the relative position bias: a learned table (or Swin V2's MLP computing it), one
        # value per offset and head, which timm exempts from decay like a position embedding
        "relative_position_bias_table": "embedding", "cpb_mlp.*": "embedding",
        "cpb_mlp.*.bias": "bias",
        "logit_scale": "scale",  # Swin V2's learned temperature per head
    }
    arity = (1, 2)
    summary = "multi-head self-attention over tokens (..., N, D); optional position bias, mask"

    class Config(LayerConfig):
        type: Literal["self_attention"] = "self_attention"
        heads: PositiveInt
        dropout: Probability = 0.0
        bias: bool = True
        scale: float | None = Field(None, gt=0)
        position_bias: PositionBias | None = None
        cosine: bool = False  # Swin V2's scaled cosine attention (a learned temperature)

    def infer_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        if len(shape) < 2:
            raise ShapeError(f"self_attention expects tokens (..., N, D) of rank 2 or more, got "
                             f"{shape}", hint="tokens are (N, D); use patch_embed first")
        if len(in_shapes) > 2:
            raise ShapeError(f"self_attention takes tokens and at most one mask, got "
                             f"{len(in_shapes)} inputs")
        n, dim = shape[-2:]
        if dim % cfg.heads:
            raise ShapeError(f"dim {dim} is not divisible by heads={cfg.heads}")
        if cfg.cosine and cfg.scale is not None:
            raise ShapeError("cosine attention learns its scale: leave out `scale`")
        if cfg.position_bias is not None:
            height, width = cfg.position_bias.size()
            if cfg.position_bias.mlp is not None and min(height, width) < 2:
                raise ShapeError("a continuous position bias needs a window of 2x2 or more")
            if height * width != n:
                raise ShapeError(f"position_bias window {height}x{width} has {height * width} "
                                 f"tokens, the input has {n}",
                                 hint="tokens must be the window's, row by row (window_partition)")
        if len(in_shapes) == 2:
            _check_mask(in_shapes[1], (*shape[:-1], n))
        return shape

    def build(self, cfg, in_shapes):
        shape = in_shapes[0]
        bias = cfg.position_bias
        return modules.SelfAttention(
            shape[-1], cfg.heads, cfg.dropout, cfg.bias, cfg.scale,
            window=bias.size() if bias is not None else None,
            mlp=bias.mlp if bias is not None else None, cosine=cfg.cosine)

    def macs(self, cfg, in_shapes, out_shape):
        *lead, n, d = in_shapes[0]
        # q, k, v and out projections + the two attention matmuls, for each window or group
        total = math.prod(lead) * (4 * n * d * d + 2 * n * n * d)
        bias = cfg.position_bias
        if bias is not None and bias.mlp is not None:  # the continuous bias, once per forward
            height, width = bias.size()
            total += (2 * height - 1) * (2 * width - 1) * bias.mlp * (2 + cfg.heads)
        return total


def _check_mask(mask, logits) -> None:
    """An additive mask must broadcast to the logits (..., N, N) of each head."""
    fits = len(mask) <= len(logits) and all(
        m in (1, size) for m, size in zip(reversed(mask), reversed(logits), strict=False))
    if not fits:
        raise ShapeError(f"the mask {mask} does not broadcast to the attention logits {logits} "
                         "(per head)", hint="a mask is (..., N, N) per sample, e.g. "
                                            "shifted_window_mask's (windows, N, N)")


class _Recurrent(LayerKind):
    category = "recurrent"
    param_roles = {"weight_*": "weight", "bias_*": "bias"}  # weight_ih_l0, bias_hh_l1_reverse
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
    param_roles = {"token": "embedding"}
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
    param_roles = {"embedding": "embedding"}
    summary = "add a learnable position embedding to (N, D) tokens"

    class Config(LayerConfig):
        type: Literal["position_embedding"] = "position_embedding"
        std: float = Field(0.02, gt=0)

    def infer_shape(self, cfg, in_shapes):
        _needs_rank(in_shapes[0], (2,), "position_embedding")
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        return modules.PositionEmbedding(*in_shapes[0], std=cfg.std)
