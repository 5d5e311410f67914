"""`nnspec summary SPEC [--json]`: per-layer shapes, parameters and MACs."""

from __future__ import annotations

import argparse
import json

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="spec file or zoo name")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler import compile_graph
    from nnspec.compiler.summary import format_summary, summarize

    summary = summarize(compile_graph(spec_from_args(args)))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
