"""Per-layer shapes, parameter counts and MACs of a compiled graph (the `summary` contract).

Parameters are counted on modules built on torch's `meta` device (exact counts, no memory, no
init cost); MACs come from each kind's own rule, for one sample's forward pass.
"""

from __future__ import annotations

from typing import Any

from nnspec.compiler.build import CompiledModel
from nnspec.compiler.footprint import meta_modules
from nnspec.compiler.graph import Graph
from nnspec.compiler.layers import get_kind

_WEIGHTED = ("conv", "conv_transpose", "linear", "patch_embed", "self_attention", "lstm", "gru",
             "embedding")


def summarize(graph: Graph) -> dict[str, Any]:
    """The summary JSON object: totals for the eval model, per-layer rows, heads apart."""
    with meta_modules():
        model = CompiledModel(graph)
    eval_ids = {n.id for n in graph.eval_nodes()}
    owners = training_only_owners(graph, eval_ids)
    layers = []
    totals = {"params": 0, "trainable": 0, "macs": 0, "training": 0}
    heads: dict[str, dict[str, int]] = {h: {"params": 0, "macs": 0} for h in graph.heads}
    for node in graph.nodes:
        module = model.get_submodule(node.id)
        params = sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        macs = int(get_kind(node.kind).macs(node.config, node.in_shapes, node.shape))
        layers.append({
            "id": node.id, "kind": node.kind, "inputs": node.inputs,
            "output_shape": list(node.shape), "params": params, "macs": macs,
            "head": node.head,
        })
        totals["training"] += params
        if node.id in eval_ids:
            totals["params"] += params
            totals["trainable"] += trainable
            totals["macs"] += macs
        for head in owners.get(node.id, ()):
            heads[head]["params"] += params
            heads[head]["macs"] += macs
    inputs = {name: list(i.shape) for name, i in graph.inputs.items()}
    return {
        "name": graph.name,
        "params": totals["params"],
        "trainable_params": totals["trainable"],
        "training_params": totals["training"],
        "macs": totals["macs"],
        "input_shape": next(iter(inputs.values())) if len(inputs) == 1 else inputs,
        "output_shape": list(graph.output_shape),
        "depth": weighted_depth(graph),
        "heads": heads,
        "layers": layers,
    }


def training_only_owners(graph: Graph, eval_ids: set[str]) -> dict[str, list[str]]:
    """For each node that runs only in training, the heads it serves: a head's own layers, and
    main-network layers that only a head reads (`from:` a branch the output does not use)."""
    owners: dict[str, list[str]] = {}
    for head in graph.heads.values():
        needed = {head.output}
        for node in reversed(graph.nodes):
            if node.id in needed and node.id not in eval_ids:
                needed.update(node.inputs)
                owners.setdefault(node.id, []).append(head.id)
    return owners


def weighted_depth(graph: Graph) -> int:
    """Weighted layers (conv, linear, attention, ...) on the longest input-to-output path of the
    eval model: how papers count depth (ResNet-50: 50, GoogLeNet: 22, VGG16: 16)."""
    depth: dict[str, int] = dict.fromkeys(graph.inputs, 0)
    for node in graph.eval_nodes():
        here = 1 if node.kind in _WEIGHTED else 0
        depth[node.id] = here + max(depth[i] for i in node.inputs)
    return depth[graph.output]


def format_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def format_summary(summary: dict[str, Any]) -> str:
    """A fixed-width table for people."""
    rows = [("id", "kind", "output", "params", "MACs")]
    for layer in summary["layers"]:
        tag = f" [{layer['head']}]" if layer["head"] else ""
        rows.append((layer["id"] + tag, layer["kind"], "x".join(map(str, layer["output_shape"])),
                     f"{layer['params']:,}", format_count(layer["macs"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("-" * len(lines[0]))
    lines.append(f"{summary['name']}: {summary['params']:,} params "
                 f"({summary['trainable_params']:,} trainable), "
                 f"{format_count(summary['macs'])} MACs per sample, "
                 f"input {summary['input_shape']} -> output {summary['output_shape']}")
    for head, figures in summary["heads"].items():
        lines.append(f"training-only head {head}: {figures['params']:,} params, "
                     f"{format_count(figures['macs'])} MACs (not in the totals above)")
    if summary["training_params"] != summary["params"]:
        lines.append(f"in training: {summary['training_params']:,} params "
                     "(the model above, its training-only heads and the layers only they use)")
    return "\n".join(lines)
