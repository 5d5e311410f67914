"""Magnitudes a layer may have: each integer within int32, each number finite, each dim of an
inferred shape too.

Types alone let `out: 100000000000000000000000` through, and torch then fails with an
OverflowError while building; a dim beyond 2**31 - 1 is no network anyone can allocate or
export. These checks run on every layer, plugins included, right after its config validates;
how much memory the whole model needs is compiler/footprint.py's job.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

MAX_INT = 2**31 - 1
_HINT = "sizes, strides and dims of a layer are at most 2**31 - 1 (2,147,483,647)"


def layer_magnitude_problems(config: BaseModel) -> list[tuple[tuple, str, str]]:
    """(path inside the layer, message, hint) for each integer beyond int32 and each
    non-finite number in a validated layer config."""
    found: list[tuple[tuple, str, str]] = []
    for name in type(config).model_fields:
        _walk(getattr(config, name), (name,), found)
    return found


def _walk(value: Any, loc: tuple, found: list) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > MAX_INT:
        found.append((loc, f"{_shown(value)} is larger than a layer can be", _HINT))
    elif isinstance(value, float) and not math.isfinite(value):
        found.append((loc, f"expected a finite number, got {value}", ""))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, loc + (i,), found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, loc + (key,), found)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _walk(getattr(value, name), loc + (name,), found)


def shape_problem(shape: tuple[int, ...]) -> str | None:
    """Why an inferred per-sample shape is beyond any tensor, or None."""
    big = [d for d in shape if d > MAX_INT]
    if big:
        return (f"the output shape {_shown_shape(shape)} has a dim larger than 2**31 - 1; "
                "no tensor can hold it")
    return None


def _shown(value: int) -> str:
    digits = len(str(abs(value))) if value.bit_length() < 10_000 else None
    if digits is not None and digits <= 30:
        return str(value)
    return f"a {digits or 'many'}-digit integer"


def _shown_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(_shown(d) for d in shape) + ")"
