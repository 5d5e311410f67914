"""Arguments shared by every command that takes a spec: --set, --var, --plugin."""

from __future__ import annotations

import argparse

from nnspec.compiler.errors import UsageError


def add_set_argument(parser: argparse.ArgumentParser,
                     help: str = "override a spec value, e.g. --set optimizer.lr=0.05 "
                                 "--set network[3].conv.out=32") -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="PATH=VALUE", help=help)


def add_var_argument(parser: argparse.ArgumentParser,
                     help: str = "variable for a *.yaml.j2 spec family, e.g. --var depth=50") -> None:
    parser.add_argument("--var", dest="variables", action="append", default=[],
                        metavar="NAME=VALUE", help=help)


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    add_set_argument(parser)
    add_var_argument(parser)
    parser.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a Python module that registers extra layer kinds",
    )


def parse_variables(items: list[str]) -> dict[str, str]:
    """`--var k=v` items as a dict; the values stay strings (the template decides types)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--var expects NAME=VALUE, got {item!r}")
        out[name.strip()] = value
    return out


def run_spec_path(source: str) -> str:
    """A run directory's resolved `spec.yaml` for a run directory (as export takes them), else
    `source` unchanged (a spec file or zoo name)."""
    from pathlib import Path

    spec = Path(source) / "spec.yaml"
    return str(spec) if spec.is_file() else source


def spec_from_args(args: argparse.Namespace, source=None):
    """Load the spec named by `source` (default: `args.spec`) with the shared options applied."""
    from nnspec.compiler import load_plugins, load_spec

    load_plugins(args.plugins)
    return load_spec(
        args.spec if source is None else source,
        overrides=args.overrides,
        variables=parse_variables(args.variables),
    )
