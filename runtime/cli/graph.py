"""`nnspec graph SPEC -o graph.svg|graph.dot`: the network as Graphviz, shapes on edges."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec file or zoo name")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="graph.svg (rendered by Graphviz's dot) or graph.dot; default: DOT on stdout",
    )
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler import compile_graph
    from nnspec.compiler.errors import UsageError
    from nnspec.runtime.lab.graph_draw import dot_to_svg, graph_to_dot

    dot = graph_to_dot(compile_graph(spec_from_args(args)))
    if args.output is None:
        print(dot, end="")
        return 0
    suffix = args.output.suffix.lower()
    if suffix == ".dot" or suffix == ".gv":
        args.output.write_text(dot)
    elif suffix == ".svg":
        args.output.write_bytes(dot_to_svg(dot))
    else:
        raise UsageError(f"-o {args.output}: write a .svg or a .dot file")
    print(f"wrote {args.output}")
    return 0
