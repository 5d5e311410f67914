"""`nnspec resolve`: the fully expanded canonical spec, with shapes as comments.

Blocks are inlined, repeats unrolled, every id explicit and dotted, every layer parameter
filled with its default. Loading the output again builds the same model: same state_dict keys,
same parameter count (zero_init_residual becomes explicit per-node `init` overrides).
"""

from __future__ import annotations

from typing import Any

import yaml

from nnspec.compiler.graph import Graph, Node

_TOP_KEYS = ("nnspec", "name", "description", "input", "inputs", "normalize", "labels", "init",
             "optimizer", "schedule", "loss", "train", "lint", "output_name")
_NORMS = ("batchnorm", "layernorm", "groupnorm")


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False).strip()


def _node_entry(node: Node, previous: str | None, prefix: str, zeroed: set[str]) -> dict:
    entry: dict[str, Any] = {"id": node.id[len(prefix):]}
    entry[node.kind] = node.config.model_dump(mode="json", exclude={"type"})
    if node.inputs != [previous]:
        refs = [r[len(prefix):] if prefix and r.startswith(prefix) else r for r in node.inputs]
        entry["from"] = refs[0] if len(refs) == 1 else refs
    init = node.init.model_dump(mode="json", exclude_none=True) if node.init else {}
    if node.id in zeroed:
        init["weight"] = {"scheme": "zeros"}
    if init:
        entry["init"] = init
    return entry


def _emit_nodes(nodes: list[Node], first_input: str, indent: str, prefix: str,
                zeroed: set[str]) -> list[str]:
    lines, previous = [], first_input
    for node in nodes:
        entry = _node_entry(node, previous, prefix, zeroed)
        shape = "x".join(map(str, node.shape))
        lines.append(f"{indent}- {_flow(entry)}  # -> ({shape})")
        previous = node.id
    return lines


def resolve_text(graph: Graph) -> str:
    spec = graph.spec
    data = spec.to_data()
    top = {k: data[k] for k in _TOP_KEYS if k in data}
    zeroed: set[str] = set()
    init = dict(top.get("init") or {})
    if init.pop("zero_init_residual", False):
        for residual in graph.residuals:
            norms = [n for n in residual.body if graph.node(n).kind in _NORMS]
            if norms:
                zeroed.add(norms[-1])
        top["init"] = init
    lines = [f"# {spec.name}: resolved from {spec.source} (spec hash {spec.spec_hash[:12]})"]
    lines.append(yaml.safe_dump(top, sort_keys=False, width=100, default_flow_style=None).rstrip())
    main = [n for n in graph.nodes if n.head is None]
    first_input = next(iter(graph.inputs))
    lines.append("network:")
    lines += _emit_nodes(main, first_input, "  ", "", zeroed)
    if main and graph.output != main[-1].id:
        lines.append(f"output: {graph.output}")
    if graph.heads:
        lines.append("heads:")
        for head in graph.heads.values():
            nodes = [n for n in graph.nodes if n.head == head.id]
            source = nodes[0].inputs[0]
            lines.append(f"  - id: {head.id}")
            lines.append(f"    from: {source}")
            lines.append(f"    loss_weight: {head.loss_weight}")
            lines.append("    network:")
            lines += _emit_nodes(nodes, source, "      ", head.id + ".", zeroed)
    return "\n".join(lines) + "\n"
