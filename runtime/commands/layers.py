"""`nnspec layers [KIND]`: the layer catalogue, read from the registry."""

from __future__ import annotations

import argparse
import json

from nnspec.compiler.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="show one kind's parameters")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[],
                        metavar="MODULE", help="import a module that registers layer kinds")


def _params(kind) -> dict[str, str]:
    out = {}
    for name, field in kind.Config.model_fields.items():
        if name == "type":
            continue
        annotation = getattr(field.annotation, "__name__", None) or str(field.annotation)
        annotation = annotation.replace("typing.", "")
        out[name] = annotation if field.is_required() else f"{annotation} = {field.default!r}"
    return out


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler import load_plugins
    from nnspec.compiler.layers import all_kinds, get_kind

    load_plugins(args.plugins)
    if args.kind:
        try:
            kinds = {args.kind: get_kind(args.kind)}
        except KeyError as e:
            raise UsageError(e.args[0]) from None
    else:
        kinds = all_kinds()
    if args.json:
        print(json.dumps({n: {"summary": k.summary, "category": k.category, "params": _params(k)}
                          for n, k in sorted(kinds.items())}, indent=2))
    elif args.markdown:
        print("| kind | what it does | parameters (default) |\n|---|---|---|")
        for name, kind in sorted(kinds.items()):
            params = ", ".join(f"`{p}: {t}`" for p, t in _params(kind).items()) or "-"
            print(f"| `{name}` | {kind.summary} | {params} |")
    else:
        width = max(len(n) for n in kinds)
        for name, kind in sorted(kinds.items()):
            print(f"{name.ljust(width)}  {kind.summary}")
            if args.kind:
                for p, t in _params(kind).items():
                    print(f"    {p}: {t}")
    return 0
