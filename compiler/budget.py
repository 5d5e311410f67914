"""Budgets for evaluating user text: what one template render, or all the `${...}`
expressions of one spec, may use before it ends in a located error naming the limit.

- integer size: an integer has at most `int_bits` bits (`7 ** 300000000` is refused from an
  estimate before it is computed);
- value size: a string, list or dict holds at most `size` characters or items, nested items
  counted (`'a' * 3000000000` is refused before it allocates);
- output: a template renders at most `output` characters (the size limit of a spec file);
- steps: loop iterations, calls and operators together;
- time: seconds spent evaluating (the clock runs only inside `Budget.running()`, so the work
  around expressions is not charged to them).

compiler/sandbox.py charges the active budget; `BudgetExceeded` says which limit was hit.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

LIMITS_HINT = ("templates and ${...} expressions run under fixed budgets so that no spec can "
               "hang nnspec (see 'Limits' in docs/spec-language.md)")


@dataclass(frozen=True)
class Limits:
    """What one evaluation (a template render, or every expression of one spec) may use."""

    int_bits: int = 64
    size: int = 1_000_000
    output: int = 4 * 1024 * 1024
    steps: int = 1_000_000
    seconds: float = 10.0


class BudgetExceeded(Exception):
    """An evaluation asked for more than its `Limits` allow."""

    def __init__(self, limit: str, detail: str):
        super().__init__(f"exceeds the {limit} limit: {detail}")
        self.limit = limit
        self.detail = detail


class Budget:
    """Counters for one evaluation; the sandbox charges the active one (see `budget`)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.steps = 0
        self.output = 0
        self.spent = 0.0  # seconds evaluated before the current entry
        self.entered: float | None = None

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.limits.steps:
            raise BudgetExceeded(
                "steps", f"more than {self.limits.steps:,} loop iterations, calls and operations")
        if self.entered is not None and \
                self.spent + time.monotonic() - self.entered > self.limits.seconds:
            raise BudgetExceeded("time", f"evaluation ran for more than {self.limits.seconds:g} s")

    def emit(self, n: int) -> None:
        self.output += n
        if self.output > self.limits.output:
            raise BudgetExceeded("output size", f"the rendered text is longer than "
                                                f"{self.limits.output:,} characters")

    def check(self, value: Any, what: str = "a value") -> Any:
        """Refuse an integer beyond `int_bits` or a value larger than `size`; return it."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > self.limits.int_bits:
                raise BudgetExceeded("integer size", f"{what} has {value.bit_length():,} bits "
                                                     f"(at most {self.limits.int_bits})")
        elif isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
            size = measure(value, self.limits.size)
            if size > self.limits.size:
                self.refuse_size(what, size)
        return value

    def refuse_size(self, what: str, size: int | float) -> None:
        if size == math.inf:
            amount = "more than 10^400"
        elif size < 10**15:
            amount = f"{int(size):,}"
        else:
            amount = f"about 10^{math.log10(size):.0f}"
        raise BudgetExceeded("value size", f"{what} would hold {amount} characters or items "
                                           f"(at most {self.limits.size:,})")

    @contextlib.contextmanager
    def running(self) -> Iterator[Budget]:
        """Count wall time while inside (re-entrant: nested entries count once)."""
        if self.entered is not None:
            yield self
            return
        self.entered = time.monotonic()
        try:
            yield self
        finally:
            self.spent += time.monotonic() - self.entered
            self.entered = None


_ACTIVE: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("nnspec_budget",
                                                                       default=None)


@contextlib.contextmanager
def budget(limits: Limits | None = None) -> Iterator[Budget]:
    """Make a budget active for the evaluations inside, or share the one already active (so
    that every expression of one spec draws on one budget); its clock runs only inside
    `Budget.running()`."""
    active = _ACTIVE.get()
    if active is not None:
        yield active
        return
    fresh = Budget(limits or Limits())
    token = _ACTIVE.set(fresh)
    try:
        yield fresh
    finally:
        _ACTIVE.reset(token)


def current() -> Budget:
    """The active budget; outside any, a fresh one (compile-time constant folding runs filters
    outside a render: they are checked on their own)."""
    return _ACTIVE.get() or Budget(Limits())


def measure(value: Any, limit: int) -> int:
    """Characters and items in `value`, nested items included; stops counting past `limit`."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        else:
            total += 1
        if total > limit:
            break
    return total
