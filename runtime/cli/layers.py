"""`nnspec layers [KIND]`: the layer catalogue, read from the registry."""

from __future__ import annotations

import argparse
import json
import types

from nnspec.compiler.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="show one kind's parameters")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[],
                        metavar="MODULE", help="import a module that registers layer kinds")


def _annotation(annotation) -> str:
    """A readable type: `int | list[int]`, `'zeros' | 'reflect'`, `float | None`."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_annotation(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _annotation(typing.get_args(annotation)[0])
    if origin is not None:
        inner = ", ".join(_annotation(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', origin)}[{inner}]"
    if annotation is type(None):
        return "None"
    fields = getattr(annotation, "model_fields", None)
    if fields is not None:  # a nested config: `{window: int | list[int]}`
        return "{" + ", ".join(f"{n}: {_annotation(f.annotation)}" for n, f in fields.items()) + "}"
    return getattr(annotation, "__name__", str(annotation))


def _params(kind) -> dict[str, str]:
    out = {}
    for name, field in kind.Config.model_fields.items():
        if name == "type":
            continue
        text = _annotation(field.annotation)
        out[name] = text if field.is_required() else f"{text} = {field.default!r}"
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
            params = ", ".join(f"`{p}: {t}`".replace("|", "\\|")
                               for p, t in _params(kind).items()) or "-"
            print(f"| `{name}` | {kind.summary} | {params} |")
    else:
        width = max(len(n) for n in kinds)
        for name, kind in sorted(kinds.items()):
            print(f"{name.ljust(width)}  {kind.summary}")
            if args.kind:
                for p, t in _params(kind).items():
                    print(f"    {p}: {t}")
    return 0
