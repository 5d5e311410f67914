"""`nnspec check SPEC... [--onnx]`: validate specs (and that each network's output can serve
its task); exit 0 when all are valid, 2 otherwise."""

from __future__ import annotations

import argparse
import sys

from nnspec.compiler.errors import SpecError
from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or zoo names")
    parser.add_argument("--onnx", action="store_true",
                        help="also dry-run the ONNX export (finds operators the opset lacks)")
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler import compile_graph
    from nnspec.compiler.task_check import output_task_problems

    failed = 0
    for source in args.specs:
        try:
            graph = compile_graph(spec_from_args(args, source))
            problems = output_task_problems(graph)
            if problems:
                raise SpecError(problems)
            if args.onnx:
                from nnspec.runtime.export.exporter import dry_run_export

                dry_run_export(graph.spec)
        except SpecError as error:
            failed += 1
            print(f"{source}: invalid\n{error}", file=sys.stderr)
            continue
        shape = "x".join(map(str, graph.output_shape))
        extra = ", ONNX export ok" if args.onnx else ""
        task = graph.spec.task.type
        print(f"{source}: ok ({len(graph.nodes)} layers, output {shape}, {task}{extra})")
    return 2 if failed else 0
