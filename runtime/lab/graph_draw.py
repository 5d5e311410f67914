"""Draw a compiled Graph IR as Graphviz DOT, with the tensor shape on every edge.

DOT is written here as text (it is a small, stable format); turning it into SVG is the `dot`
binary's job, so Graphviz is needed only for `-o graph.svg`, not for `-o graph.dot`.
"""

from __future__ import annotations

import shutil
import subprocess

from nnspec.compiler.errors import UsageError

# Fill colours by layer family, so the eye finds convs, norms and merges at a glance.
KIND_COLOURS = {
    "conv": "#cfe2ff",
    "linear": "#d7f5dd",
    "batchnorm": "#fff1c1",
    "layernorm": "#fff1c1",
    "groupnorm": "#fff1c1",
    "dropout": "#eeeeee",
    "add": "#f8d7da",
    "concat": "#f8d7da",
    "multiply": "#f8d7da",
}
# Config fields worth showing inside a node box, in this order, when present.
SHOWN_FIELDS = ("out", "kernel", "stride", "padding", "groups", "p", "heads", "dim")


class GraphvizMissing(UsageError):
    """`dot` is not installed, so only DOT text can be written."""


def graph_to_dot(graph) -> str:
    """The DOT source of `graph`: inputs as ovals, layers as boxes, edges labelled by shape."""
    shapes = {name: tuple(spec.shape) for name, spec in graph.inputs.items()}
    lines = [
        f"digraph {_quote(graph.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica",'
        " fontsize=10];",
        '  edge [fontname="Helvetica", fontsize=8, color="#555555"];',
    ]
    for name, shape in shapes.items():
        label = f"{name}\\n{_shape_text(shape)}"
        lines.append(f'  {_quote(name)} [shape=oval, fillcolor="#e8e8f8", label="{label}"];')
    for node in graph.nodes:
        shapes[node.id] = tuple(node.shape)
        colour = KIND_COLOURS.get(node.kind, "#ffffff")
        style = ', style="rounded,filled,dashed"' if node.head else ""
        lines.append(
            f'  {_quote(node.id)} [label="{_node_label(node)}", fillcolor="{colour}"{style}];'
        )
        for source in node.inputs:
            shape = _shape_text(shapes.get(source, ()))
            lines.append(f'  {_quote(source)} -> {_quote(node.id)} [label=" {shape}"];')
    output = graph.output
    lines.append('  "__output__" [shape=oval, fillcolor="#e8e8f8", label="output"];')
    lines.append(f'  {_quote(output)} -> "__output__" [label=" {_shape_text(shapes[output])}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(graph) -> bytes:
    """SVG bytes of `graph`, rendered by Graphviz's `dot` binary."""
    return dot_to_svg(graph_to_dot(graph))


def dot_to_svg(dot_source: str) -> bytes:
    executable = shutil.which("dot")
    if executable is None:
        raise GraphvizMissing(
            "Graphviz's `dot` program is not installed, so the graph cannot be rendered to SVG; "
            "install it (e.g. `apt-get install graphviz`, `brew install graphviz`) or write "
            "DOT text with `-o graph.dot`",
        )
    result = subprocess.run(
        [executable, "-Tsvg"], input=dot_source.encode(), capture_output=True, check=False
    )
    if result.returncode != 0:
        raise UsageError(f"Graphviz failed to render the graph: {result.stderr.decode().strip()}")
    return result.stdout


def _node_label(node) -> str:
    # Only what differs from the kind's defaults: `conv(out=64, kernel=3)`, not every field.
    dump = getattr(node.config, "model_dump", None)
    config = dump(exclude_defaults=True) if dump else {}
    details = ", ".join(f"{k}={config[k]}" for k in SHOWN_FIELDS if k in config)
    kind = f"{node.kind}({details})" if details else node.kind
    parts = [node.id] if kind == node.id.rsplit(".", 1)[-1] else [node.id, kind]
    if node.head:
        parts.append(f"training-only head {node.head}")
    return "\\n".join(_escape(p) for p in parts)


def _shape_text(shape) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


def _quote(name: str) -> str:
    return f'"{_escape(name)}"'


def _escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"')
