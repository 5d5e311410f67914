"""`nnspec lint SPEC`: training-practice warnings; exit 1 when any, 0 when clean, 2 bad spec."""

from __future__ import annotations

import argparse

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="spec file or zoo name")
    parser.add_argument(
        "--rules", action="store_true", help="list every rule with its reason and exit"
    )
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler import compile_graph
    from nnspec.compiler.errors import UsageError
    from nnspec.runtime.lab.lint import RULES, format_rules, lint

    if args.rules:
        print(format_rules())
        return 0
    if not args.spec:
        raise UsageError("lint needs a SPEC (or --rules to list the rules)")
    spec = spec_from_args(args)
    findings = lint(compile_graph(spec), spec)
    for finding in findings:
        print(finding.format(RULES[finding.rule].reason))
    if findings:
        plural = "s" if len(findings) != 1 else ""
        print(
            f"{len(findings)} warning{plural} (switch a rule off with `lint: {{ignore: [RULE]}}`)"
        )
        return 1
    print(f"{spec.name}: no warnings")
    return 0
