"""`nnspec new FAMILY [--var k=v]... -o my_net.yaml`: start a spec from a family template."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnspec.compiler.errors import UsageError
from nnspec.runtime.cli.arguments import add_var_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("family", nargs="?", help="family name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the families and their variables")
    add_var_argument(
        parser, help="set a family variable, e.g. --var depth=50 (see --list for each family's)"
    )
    parser.add_argument("-o", "--output", type=Path, help="spec file to write (default: stdout)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")


def run(args: argparse.Namespace) -> int:
    from nnspec.runtime.cli.arguments import parse_variables
    from nnspec.runtime.codegen import families

    if args.list:
        print(format_families(families.list_families()))
        return 0
    if not args.family:
        raise UsageError(
            "name a family, e.g. `nnspec new resnet --var depth=34 -o net.yaml`; "
            "`nnspec new --list` shows them"
        )
    given = parse_variables(args.variables)
    if args.output is None:
        print(families.render_family(args.family, given), end="")
        return 0
    families.write_family(args.family, given, args.output, force=args.force)
    print(f"wrote {args.output} (family {args.family}); try `nnspec summary {args.output}`")
    return 0


def format_families(items) -> str:
    lines = []
    for family in items:
        lines.append(f"{family.name}: {family.description}")
        width = max((len(f"{v.name}={v.default}") for v in family.variables), default=0)
        for var in family.variables:
            lines.append(f"    --var {f'{var.name}={var.default}':<{width}}  {var.doc}")
        lines.append("")
    return "\n".join(lines).rstrip()
