"""`nnspec graph`: DOT edges match the graph, edge shapes match torch, SVG from Graphviz."""

from __future__ import annotations

import re

import pytest
import torch

from nnspec.compiler import build_model, compile_graph
from nnspec.runtime.cli import main
from nnspec.runtime.lab.graph_draw import graph_to_dot

SPEC = {
    "nnspec": 1,
    "name": "skip_net",
    "input": {"shape": [3, 16, 16]},
    "network": [
        {"id": "stem", "conv": {"out": 8, "kernel": 3, "stride": 2, "padding": 1}},
        "relu",
        {
            "residual": {
                "body": [{"conv": {"out": 16, "kernel": 3, "padding": 1}}, "batchnorm"],
                "shortcut": "auto",
            }
        },  # fmt: skip
        "global_avg_pool",
        {"linear": {"out": 5}},
    ],
}
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label=" ([^"]+)"\];$')


def _edges(dot: str) -> dict[tuple[str, str], str]:
    return {(m[1], m[2]): m[3] for m in map(EDGE.match, dot.splitlines()) if m}


def test_edges_follow_the_graph_and_carry_the_shapes_torch_produces():
    graph = compile_graph(SPEC)
    edges = _edges(graph_to_dot(graph))

    wanted = {(src, node.id) for node in graph.nodes for src in node.inputs}
    wanted.add((graph.output, "__output__"))
    assert set(edges) == wanted
    assert any(node.kind == "add" for node in graph.nodes)  # the skip is drawn as a merge

    model = build_model(SPEC).eval()
    produced = {"input": (3, 16, 16)}
    hooks = [
        model.get_submodule(node.id).register_forward_hook(
            lambda _m, _i, out, node_id=node.id: produced.__setitem__(node_id, out.shape[1:])
        )
        for node in graph.nodes
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
    for hook in hooks:
        hook.remove()
    for (source, _), label in edges.items():
        assert label == "×".join(map(str, produced[source])), source


@pytest.mark.needs_tool("dot")
def test_svg_is_rendered_by_graphviz(tmp_path, capsys):
    out = tmp_path / "graph.svg"
    assert main(["graph", "specs/resnet18.yaml", "-o", str(out)]) == 0
    svg = out.read_text()
    assert "<svg" in svg and "layer4.block2.conv2" in svg and "512×7×7" in svg


def test_dot_file_and_missing_graphviz_message(tmp_path, monkeypatch, capsys):
    dot_file = tmp_path / "graph.dot"
    assert main(["graph", "specs/resnet18.yaml", "-o", str(dot_file)]) == 0
    assert dot_file.read_text().startswith('digraph "resnet18" {')

    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere on PATH
    assert main(["graph", "specs/resnet18.yaml", "-o", str(tmp_path / "g.svg")]) == 2
    err = capsys.readouterr().err
    assert "Graphviz's `dot` program is not installed" in err and "-o graph.dot" in err
    assert not (tmp_path / "g.svg").exists()
