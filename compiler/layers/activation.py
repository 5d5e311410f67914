"""Element-wise activations (and softmax), each a registry entry made by one factory."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from nnspec.compiler.layers.common import torch_dim
from nnspec.compiler.layers.registry import LayerConfig, LayerKind, register_layer


def _simple(kind: str, module: type[nn.Module], text: str) -> None:
    config = type(
        f"{kind.title().replace('_', '')}Config",
        (LayerConfig,),
        {"__annotations__": {"type": Literal[kind]}, "type": kind, "__module__": __name__},
    )
    register_layer(type(
        f"{kind.title().replace('_', '')}Kind",
        (LayerKind,),
        {"name": kind, "Config": config, "summary": text, "build": lambda self, cfg, s: module()},
    ))


for _kind, _module, _text in [
    ("relu", nn.ReLU, "max(0, x)"),
    ("relu6", nn.ReLU6, "min(max(0, x), 6) (MobileNet)"),
    ("silu", nn.SiLU, "x * sigmoid(x) (swish)"),
    ("sigmoid", nn.Sigmoid, "1 / (1 + exp(-x))"),
    ("tanh", nn.Tanh, "tanh(x)"),
    ("hardswish", nn.Hardswish, "x * relu6(x + 3) / 6 (MobileNetV3)"),
    ("hardsigmoid", nn.Hardsigmoid, "relu6(x + 3) / 6"),
    ("identity", nn.Identity, "passes its input through"),
]:
    _simple(_kind, _module, _text)


@register_layer
class LeakyReLU(LayerKind):
    name = "leaky_relu"
    summary = "max(0, x) + slope * min(0, x)"

    class Config(LayerConfig):
        type: Literal["leaky_relu"] = "leaky_relu"
        slope: float = 0.01

    def build(self, cfg, in_shapes):
        return nn.LeakyReLU(cfg.slope)


@register_layer
class GELU(LayerKind):
    name = "gelu"
    summary = "Gaussian error linear unit (exact or tanh approximation)"

    class Config(LayerConfig):
        type: Literal["gelu"] = "gelu"
        approximate: Literal["none", "tanh"] = "none"

    def build(self, cfg, in_shapes):
        return nn.GELU(approximate=cfg.approximate)


@register_layer
class Softmax(LayerKind):
    name = "softmax"
    summary = "softmax along a per-sample dim (default: the last)"

    class Config(LayerConfig):
        type: Literal["softmax"] = "softmax"
        dim: int = Field(-1)

    def infer_shape(self, cfg, in_shapes):
        torch_dim(cfg.dim, len(in_shapes[0]))
        return in_shapes[0]

    def build(self, cfg, in_shapes):
        return nn.Softmax(torch_dim(cfg.dim, len(in_shapes[0])))
