"""Batch-norm folding: inference-time batch norm becomes part of the layer before it.

In eval mode a batch norm is a fixed per-channel affine map, ``y = (x - mean) / sqrt(var + eps)
* gamma + beta``. When the layer feeding it is a conv or linear whose output goes nowhere else,
that map is merged into the layer's weights and bias (``torch.nn.utils.fusion``), and the batch
norm becomes an identity. A batch norm with nothing foldable before it (on the input, after an
add, after a pooling) becomes a per-channel scale and shift. Either way the exported graph has
no BatchNormalization node and no dependence on batch statistics.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from nnspec.compiler.errors import ExportError

FOLDABLE_PRODUCER_KINDS = ("conv", "conv_transpose", "linear")


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel (dim 1), the eval-mode form of a batch norm."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> ChannelAffine:
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        weight = bn.weight if bn.weight is not None else torch.ones_like(inv_std)
        bias = bn.bias if bn.bias is not None else torch.zeros_like(inv_std)
        scale = weight * inv_std
        return cls(scale, bias - bn.running_mean * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}"


@dataclass(frozen=True)
class FoldPlan:
    """What folding will do: batch norms merged into a layer (bn id -> layer id), the rest
    turned into a per-channel scale and shift."""

    merged: dict[str, str]
    affine: list[str]

    def __str__(self) -> str:
        return (
            f"{len(self.merged)} batch norm(s) folded into conv/linear, "
            f"{len(self.affine)} turned into per-channel scale+shift"
        )


def plan_batchnorm_folding(model: nn.Module) -> FoldPlan:
    """Decide, without changing anything, how each batch norm of a CompiledModel is folded.

    Raises:
        ExportError: a batch norm keeps no running statistics, so its eval output would depend
            on the batch and cannot be folded.
    """
    graph = model.graph
    # Only what runs in eval mode matters: training-only heads are never exported.
    nodes = graph.eval_nodes()
    merged: dict[str, str] = {}
    affine: list[str] = []
    for node in nodes:
        if node.kind != "batchnorm":
            continue
        bn = model.get_submodule(node.id)
        _require_running_stats(node.id, bn)
        producer_id = _foldable_producer(graph, nodes, node)
        if producer_id is not None and _pairs_up(model.get_submodule(producer_id), bn):
            merged[node.id] = producer_id
        else:
            affine.append(node.id)
    return FoldPlan(merged, affine)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of a CompiledModel with every batch norm folded away.

    The caller's model is not touched. A batchnorm node whose single input is a conv,
    conv_transpose or linear node consumed by nothing else is merged into it (a conv without a
    bias gains one); any other batchnorm becomes a :class:`ChannelAffine` from its running stats.

    Raises:
        ExportError: as :func:`plan_batchnorm_folding`.
    """
    plan = plan_batchnorm_folding(model)
    folded = copy.deepcopy(model).eval()
    for bn_id, layer_id in plan.merged.items():
        bn = folded.get_submodule(bn_id)
        folded.replace_node_module(layer_id, _fuse(folded.get_submodule(layer_id), bn))
        folded.replace_node_module(bn_id, nn.Identity())
    for bn_id in plan.affine:
        folded.replace_node_module(bn_id, ChannelAffine.from_batchnorm(folded.get_submodule(bn_id)))
    return folded


def _require_running_stats(node_id: str, bn: nn.Module) -> None:
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise ExportError(
            f"node {node_id!r} is a batchnorm but runs {type(bn).__name__}; cannot fold it\n"
            "    hint: export with --no-fold-bn"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ExportError(
            f"batch norm {node_id!r} keeps no running statistics (track_running_stats is off), "
            "so its inference output depends on the batch\n"
            "    hint: train with running statistics, or use layernorm/groupnorm instead"
        )


def _foldable_producer(graph, nodes, bn_node) -> str | None:
    """Id of the conv/linear node this batch norm may be merged into, or None."""
    if len(bn_node.inputs) != 1:
        return None
    producer_id = bn_node.inputs[0]
    if producer_id in graph.inputs or producer_id == graph.output:
        return None
    producer = graph.node(producer_id)
    if producer.kind not in FOLDABLE_PRODUCER_KINDS:
        return None
    if producer.kind == "linear" and len(producer.shape) != 1:
        return None
    # The layer's raw output must not be used anywhere else (e.g. by a skip connection):
    # after folding it would carry the normalised values instead.
    if [n.id for n in nodes if producer_id in n.inputs] != [bn_node.id]:
        return None
    return producer_id


def _pairs_up(layer: nn.Module, bn: nn.Module) -> bool:
    """Whether ``bn`` normalises exactly the output channels/features of ``layer``."""
    if isinstance(layer, nn.modules.conv._ConvTransposeNd) and layer.groups != 1:
        # torch's fusion assumes a transposed weight (in, out, ...); grouped ones are
        # (in, out / groups, ...) and fail there.
        return False
    if isinstance(layer, nn.modules.conv._ConvNd):
        return layer.out_channels == bn.num_features
    # A BatchNorm1d normalises dim 1, which is a linear's feature dim only for a
    # (batch, features) output; fuse_linear_bn_eval assumes exactly that.
    return (
        isinstance(layer, nn.Linear)
        and isinstance(bn, nn.BatchNorm1d)
        and layer.out_features == bn.num_features
    )


def _fuse(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    if isinstance(layer, nn.modules.conv._ConvNd):
        transpose = isinstance(layer, nn.modules.conv._ConvTransposeNd)
        return fuse_conv_bn_eval(layer.eval(), bn.eval(), transpose=transpose)
    return fuse_linear_bn_eval(layer.eval(), bn.eval())
