"""Python expressions for generated code, written out the way `ruff format` lays them out.

Generated files must pass `ruff format --check` without ruff being installed at generation
time, so the few shapes codegen emits (calls, lists, tuples, dicts, names, literals) carry
their own layout rule, which is ruff's (black's) for brackets: the whole statement on one line
if it fits in 88 columns; else the bracket's contents on one indented line; else one item per
line with a trailing comma, each item laid out the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LINE_LENGTH = 88
INDENT = "    "


@dataclass(frozen=True)
class Code:
    """Python source taken as is (a name, an attribute, an arithmetic expression)."""

    text: str


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Brackets:
    """A list `[...]`, tuple `(...)` or dict `{...}` display (dict items are (key, value))."""

    open: str
    items: tuple[Any, ...]


_CLOSE = {"[": "]", "(": ")", "{": "}"}


def literal(value: Any) -> str:
    """Source of a plain value: numbers, strings, bools, None, tuples and lists of them."""
    if isinstance(value, Code):
        return value.text
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        inner = ", ".join(literal(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise TypeError(f"no literal for {value!r}")


def flat(expr: Any) -> str:
    """`expr` on one line."""
    if isinstance(expr, Call):
        return f"{expr.func}({', '.join(_item_flat(i) for i in _call_items(expr))})"
    if isinstance(expr, Brackets):
        inner = ", ".join(_item_flat(i) for i in expr.items)
        if expr.open == "(" and len(expr.items) == 1:
            inner += ","
        return f"{expr.open}{inner}{_CLOSE[expr.open]}"
    return literal(expr)


def _call_items(call: Call) -> list[Any]:
    return [*call.args, *(_Keyword(k, v) for k, v in call.kwargs)]


@dataclass(frozen=True)
class _Keyword:
    name: str
    value: Any


def _item_flat(item: Any) -> str:
    if isinstance(item, _Keyword):
        return f"{item.name}={flat(item.value)}"
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], _DictKey):
        return f"{flat(item[0].key)}: {flat(item[1])}"
    return flat(item)


@dataclass(frozen=True)
class _DictKey:
    key: Any


def dict_display(items: dict[str, Any]) -> Brackets:
    return Brackets("{", tuple((_DictKey(k), v) for k, v in items.items()))


def _parts(expr: Any) -> tuple[str, list[Any], str] | None:
    """(opening text, items, closing bracket) of a splittable expression, else None."""
    if isinstance(expr, Call) and (expr.args or expr.kwargs):
        return f"{expr.func}(", _call_items(expr), ")"
    if isinstance(expr, Brackets) and expr.items:
        return expr.open, list(expr.items), _CLOSE[expr.open]
    if isinstance(expr, tuple | list) and expr:
        return (
            ("(" if isinstance(expr, tuple) else "["),
            list(expr),
            (")" if isinstance(expr, tuple) else "]"),
        )
    return None


def layout(prefix: str, expr: Any, suffix: str = "", depth: int = 0) -> list[str]:
    """Lines of `prefix + expr + suffix` at indentation `depth` (in 4-space steps)."""
    indent = INDENT * depth
    line = f"{indent}{prefix}{flat(expr)}{suffix}"
    parts = _parts(expr)
    if len(line) <= LINE_LENGTH or parts is None:
        return [line]
    opening, items, closing = parts
    inner = INDENT * (depth + 1)
    body = ", ".join(_item_flat(i) for i in items)
    lines = [f"{indent}{prefix}{opening}"]
    single_tuple = opening == "(" and not isinstance(expr, Call) and len(items) == 1
    if len(inner + body) <= LINE_LENGTH and not single_tuple:
        lines.append(inner + body)
    elif len(items) == 1 and not single_tuple:
        lines.extend(_layout_item(items[0], "", depth + 1))
    else:
        for item in items:
            lines.extend(_layout_item(item, ",", depth + 1))
    lines.append(f"{indent}{closing}{suffix}")
    return lines


def _layout_item(item: Any, suffix: str, depth: int) -> list[str]:
    if isinstance(item, _Keyword):
        return layout(f"{item.name}=", item.value, suffix, depth)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], _DictKey):
        return layout(f"{flat(item[0].key)}: ", item[1], suffix, depth)
    return layout("", item, suffix, depth)
