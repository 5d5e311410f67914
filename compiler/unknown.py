"""`UNKNOWN`: the value of something an earlier problem left unknown.

After a layer fails, the shape of its output is unknown, and so are the `in_channels` and
`in_shape` a block called after it sees. Whatever a `${...}` expression computes from such a
value is `UNKNOWN` too, and using it to decide something (a condition, a length) raises
`UnknownValue`; the expander then counts the problem as one that follows from the first,
instead of reporting "unsupported operand type(s) for *: 'NoneType' and 'int'" at every block.
"""

from __future__ import annotations

from typing import Any


class UnknownValue(Exception):
    """A value that depends on an earlier failure was used as a condition or a size."""


class _Unknown:
    """The value of something an earlier problem left unknown; it absorbs operations."""

    _instance: _Unknown | None = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown>"

    def _absorb(self, *_: Any) -> _Unknown:
        return self

    def _refuse(self, *_: Any):
        raise UnknownValue("the value depends on an earlier problem")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _absorb
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _absorb
    __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = _absorb
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _absorb  # type: ignore[assignment]
    __getitem__ = __call__ = _absorb
    __bool__ = __int__ = __index__ = __float__ = __len__ = __iter__ = _refuse
    __contains__ = __str__ = _refuse

    def __hash__(self) -> int:
        return 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self


UNKNOWN: Any = _Unknown()


def contains_unknown(value: Any) -> bool:
    """Whether `value` is UNKNOWN or holds it (in nested lists and dicts)."""
    if value is UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(contains_unknown(k) or contains_unknown(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_unknown(v) for v in value)
    return False
