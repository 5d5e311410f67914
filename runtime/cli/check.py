"""`nnspec check SPEC... [--onnx] [--max-params N] [--max-memory SIZE]`: validate specs;
exit 0 when all are valid, 2 otherwise.

Beyond types and shapes, check holds each spec to a footprint budget (parameters, and the
memory one sample needs), so that it refuses what `summary` or `train` could not allocate,
and checks that the network's output can serve the spec's task.
"""

from __future__ import annotations

import argparse
import sys

from nnspec.compiler.errors import SpecError
from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnspec.compiler.footprint import (
        DEFAULT_MAX_MEMORY,
        DEFAULT_MAX_PARAMS,
        format_bytes,
        format_count,
        parse_bytes,
        parse_count,
    )

    parser.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or zoo names")
    parser.add_argument("--onnx", action="store_true",
                        help="also dry-run the ONNX export (finds operators the opset lacks)")
    parser.add_argument("--max-params", type=_argument(parse_count), metavar="N",
                        default=DEFAULT_MAX_PARAMS,
                        help=f"refuse models with more parameters (default "
                             f"{format_count(DEFAULT_MAX_PARAMS)}; e.g. 500M)")
    parser.add_argument("--max-memory", type=_argument(parse_bytes), metavar="SIZE",
                        default=DEFAULT_MAX_MEMORY,
                        help=f"refuse models whose parameters and activations for one sample "
                             f"need more (default {format_bytes(DEFAULT_MAX_MEMORY)}; e.g. 4GiB)")
    add_spec_arguments(parser)


def _argument(parse):
    """An argparse type from a parser that raises UsageError (argparse then words the error)."""
    from nnspec.compiler.errors import UsageError

    def convert(text: str):
        try:
            return parse(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler import compile_graph
    from nnspec.compiler.footprint import estimate_footprint, footprint_problems
    from nnspec.compiler.task_check import output_task_problems

    failed = 0
    for source in args.specs:
        try:
            graph = compile_graph(spec_from_args(args, source))
            problems = footprint_problems(estimate_footprint(graph), args.max_params,
                                         args.max_memory) + output_task_problems(graph)
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
        task = graph.spec.task.type  # named when it is not the default
        task = "" if task == "classification" else f", {task}"
        print(f"{source}: ok ({len(graph.nodes)} layers, output {shape}{task}{extra})")
    return 2 if failed else 0
