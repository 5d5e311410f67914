"""`nnspec resolve SPEC`: print the fully expanded canonical spec (shapes as comments)."""

from __future__ import annotations

import argparse

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="spec file or zoo name")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler import compile_graph
    from nnspec.compiler.resolve import resolve_text

    text = resolve_text(compile_graph(spec_from_args(args)))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")
    return 0
