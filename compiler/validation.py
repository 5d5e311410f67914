"""Turning pydantic validation errors into located, human-worded Problems."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from nnspec.compiler.errors import Problem
from nnspec.compiler.load import PathKey, SourceMap, format_path
from nnspec.compiler.suggest import did_you_mean


def _is_union_tag(part: Any) -> bool:
    # pydantic names union members in `loc`: model classes ("NormalizeSpec"),
    # "literal['auto']", "function-after[...]", "list[int]", "int". Spec keys are snake_case.
    return isinstance(part, str) and (
        part[:1].isupper() or "[" in part or "-" in part
        or part in ("int", "float", "str", "bool", "none", "list", "dict")
    )


def _without_discriminator_tags(data: Any, loc: tuple) -> tuple:
    """`loc` without the tags a discriminated union on `type` inserts: pydantic names the
    member (`('task', 'multilabel', 'threshold')`) where the data has none
    (`task: {type: multilabel, threshold: 2}`)."""
    kept: list = []
    for part in loc:
        if isinstance(data, dict) and part not in data and data.get("type") == part:
            continue
        kept.append(part)
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            data = None
    return tuple(kept)


def _value_at(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


_CONSTRAINTS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short",
                "too_long", "string_pattern_mismatch", "multiple_of"}


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: dict, allowed: list[str] | None) -> str:
    kind = err["type"]
    loc = err["loc"]
    key = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        hint = did_you_mean(str(key), allowed or [])
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return f"missing required key {key!r}"
    if kind in ("value_error", "assertion_error"):
        return _expected(err)
    return f"expected {_expected(err)}, got {_describe(err.get('input'))}"


def _expected(err: dict) -> str:
    """What an error says was expected, in words ('a positive integer', 'a valid list')."""
    ctx = err.get("ctx") or {}
    if err["type"] == "greater_than" and ctx.get("gt") == 0:
        return "a positive integer" if isinstance(err.get("input"), int) else "a positive number"
    msg = err["msg"]
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg[:1].lower() + msg[1:]


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str] | None:
    """Field names of the model that owns the last element of `loc`, walking annotations."""
    import typing

    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = _model_in(field.annotation, typing)
        else:
            current = None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return None


def _model_in(annotation: Any, typing) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg, typing)
        if found is not None:
            return found
    return None


def _without_misspelt_missing(errors: list[dict], model, strip_first: bool) -> list[dict]:
    """`outt: 10` for `out: 10` is one mistake: drop "missing required key 'out'" when an
    unknown key beside it is the misspelling of `out`."""
    def parent(err):
        return tuple(err["loc"])[:-1]

    suggested = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = tuple(err["loc"])[1 if strip_first else 0:]
            allowed = _fields_at(model, loc) or []
            close = difflib.get_close_matches(str(loc[-1]), sorted(allowed), n=1, cutoff=0.6)
            if close:
                suggested.add((parent(err), close[0]))
    return [err for err in errors
            if not (err["type"] == "missing" and (parent(err), err["loc"][-1]) in suggested)]


def problems_from_validation(
    error: ValidationError,
    data: Any,
    base: PathKey,
    source: SourceMap | None,
    model: type[BaseModel] | None = None,
    context: str = "",
    strip_first: bool = False,
) -> list[Problem]:
    """Problems for every error in `error`, located at `base` + the error's loc.

    `strip_first` drops the discriminator tag a discriminated union puts first in `loc`.
    """
    problems: list[Problem] = []
    union_fallback: dict[tuple, list[str]] = {}
    errors = _without_misspelt_missing(error.errors(), model, strip_first)
    for err in errors:
        loc = tuple(err["loc"])[1 if strip_first else 0:]
        loc = _without_discriminator_tags(data, loc)
        tags = [i for i, p in enumerate(loc) if _is_union_tag(p)]
        if tags:
            head = loc[: tags[0]]
            clean = tuple(p for p in loc if not _is_union_tag(p))
            value = _value_at(data, head)
            if len(clean) == len(head):  # the member itself rejected the value
                union_fallback.setdefault(head, []).append(err)
                continue
            if not isinstance(value, dict | list):
                continue
            loc = clean
        err = {**err, "loc": loc}
        allowed = _fields_at(model, loc) if err["type"] == "extra_forbidden" else None
        path = base + loc
        problems.append(Problem(
            _message(err, allowed),
            path=format_path(path),
            mark=source.mark(path) if source else None,
            context=context,
        ))
    located = {p.path for p in problems}
    for head, errors in union_fallback.items():
        path = base + head
        if format_path(path) in located or any(p.path.startswith(format_path(path) + ".")
                                               for p in problems):
            continue
        # A member that accepted the value's type but not its value says the most.
        specific = [e for e in errors if e["type"] in _CONSTRAINTS] or errors
        options = "; or ".join(dict.fromkeys(_expected(e) for e in specific))
        problems.append(Problem(
            f"expected {options}, got {_describe(_value_at(data, head))}",
            path=format_path(path), mark=source.mark(path) if source else None, context=context,
        ))
    return problems
