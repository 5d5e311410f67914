"""`nnspec codegen SPEC -o model.py [--class-name NAME]`: standalone PyTorch source.

SPEC may be a run directory, as `nnspec export` takes them: its resolved spec is used."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnspec.compiler.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnspec.runtime.cli.arguments import add_spec_arguments

    parser.add_argument("spec", help="spec file, zoo name, or run directory (its spec)")
    add_spec_arguments(parser)
    parser.add_argument("-o", "--output", type=Path, help="Python file to write (default: stdout)")
    parser.add_argument(
        "--class-name", help="name of the network class (default: from the spec name)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler import compile_graph
    from nnspec.runtime.cli.arguments import run_spec_path, spec_from_args
    from nnspec.runtime.codegen.generate import generate_source, network_class_name, write_source

    if args.output is not None and args.output.exists() and not args.force:
        raise UsageError(f"{args.output} already exists; pass --force to overwrite it")
    graph = compile_graph(spec_from_args(args, run_spec_path(args.spec)))
    if args.output is None:
        print(generate_source(graph, args.class_name), end="")
        return 0
    write_source(graph, args.output, args.class_name)
    print(
        f"wrote {args.output}: class {network_class_name(graph, args.class_name)} "
        f"(spec {graph.name}, hash {graph.spec.spec_hash[:12]})"
    )
    return 0
