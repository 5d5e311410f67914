"""The one sandbox that evaluates user text: `*.yaml.j2` templates and `${...}` expressions.

jinja2's ImmutableSandboxedEnvironment keeps a spec away from Python objects (no attributes
that start with `_`, no methods that mutate lists or dicts). It does not stop a spec from
asking for work: `7 ** 300000000`, `'a' * 3000000000` or two nested `range(100000)` loops each
run for minutes and end in a memory error. `SpecSandbox` therefore charges the active
`compiler.budget.Budget` where jinja2 intercepts (binary operators, calls, filters, `range`)
and at the places it leaves alone, rewritten in the template's syntax tree before it compiles:
each `for` loop's iterable and each `~` concatenation pass through a checking filter, and every
`{{ ... }}` output through `finalize`. Results are checked after each step; the operations
whose result can dwarf their inputs (`**`, `'a' * n`, `str.join`, `str.replace`, widths in
`'%9999999d'` / `'{:9999999}'`, `center`, `indent`, ...) are estimated before they run.

Every place that renders user text uses this module: compiler/load.py (families and
`*.yaml.j2` specs, which runtime/codegen/families.py renders too) and compiler/substitute.py.
Values that an earlier problem left unknown (compiler/unknown.py) pass through untouched.
"""

from __future__ import annotations

import functools
import math
import re
import string
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from nnspec.compiler.budget import Budget, BudgetExceeded, current, measure
from nnspec.compiler.unknown import UNKNOWN

__all__ = ["SpecSandbox"]


# a printf conversion (`%08.3f`, `%*d`, `%(name)9d`): its width and precision
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_widths(budget: Budget, widths: list[str], args: Any) -> None:
    """Format widths and precisions allocate before any result can be checked."""
    limit = budget.limits.size
    for width in widths:
        if width == "*" or width.startswith("{"):  # taken from the arguments
            items = list(args) if isinstance(args, tuple | list) else [args]
            items += [v for item in items if isinstance(item, dict) for v in item.values()]
            for item in items:
                if isinstance(item, int) and abs(item) > limit:
                    budget.refuse_size(f"the format width {item}", abs(item))
        elif width and (len(width) > len(str(limit)) or int(width) > limit):
            budget.refuse_size(f"the format width {width}", int(width) if len(width) < 400
                               else float("inf"))


def _check_printf(budget: Budget, fmt: str, args: Any) -> None:
    widths = [w for m in _PRINTF.finditer(fmt) for w in m.groups() if w]
    _check_widths(budget, widths, args)


def _check_format_spec(budget: Budget, spec: str, args: Any) -> None:
    widths = ["{"] if "{" in spec else _DIGITS.findall(spec)
    _check_widths(budget, widths, args)


def _estimate_binop(budget: Budget, op: str, left: Any, right: Any) -> None:
    limit = budget.limits
    ints = isinstance(left, int) and isinstance(right, int)
    if op == "**" and ints and right > 0 and abs(left) > 1:
        bits = int(right * math.log2(abs(left)))
        if bits > limit.int_bits:
            raise BudgetExceeded("integer size", f"{left} ** {right} would have about "
                                                 f"{bits:,} bits (at most {limit.int_bits})")
    elif op == "*" and not ints:
        seq, count = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(count, int) and isinstance(seq, str | bytes | list | tuple):
            size = measure(seq, limit.size) * max(count, 0)
            if size > limit.size:
                budget.refuse_size(f"{type(seq).__name__} * {count}", size)
    elif op == "%" and isinstance(left, str):
        _check_printf(budget, left, right)


def _estimate_call(budget: Budget, name: str, owner: Any, args: tuple, kwargs: dict) -> None:
    """Pre-checks for the str methods and filters whose result can dwarf their arguments."""
    limit = budget.limits.size
    values = list(args) + list(kwargs.values())
    if name in ("center", "ljust", "rjust", "zfill", "batch", "slice"):
        for value in values:
            if isinstance(value, int) and abs(value) > limit:
                budget.refuse_size(f"{name}({value})", abs(value))
    elif name == "join" and isinstance(owner, str) and args:
        items = args[0]
        if isinstance(items, list | tuple):
            budget.check(items, "the joined items")
            size = measure(items, limit) + len(owner) * len(items)
            if size > limit:
                budget.refuse_size("join()", size)
    elif name == "replace" and isinstance(owner, str | bytes) and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str | bytes) and isinstance(new, str | bytes) and len(new) > len(old):
            count = owner.count(old) if old else len(owner) + 1
            size = len(owner) + count * (len(new) - len(old))
            if size > limit:
                budget.refuse_size("replace()", size)
    elif name == "expandtabs" and isinstance(owner, str | bytes):
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tab, int) and len(owner) * max(tab, 1) > limit:
            budget.refuse_size("expandtabs()", len(owner) * tab)
    elif name == "translate" and isinstance(owner, str) and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        if len(owner) * longest > limit:
            budget.refuse_size("translate()", len(owner) * longest)
    elif name == "round":
        digits = args[1] if len(args) > 1 else kwargs.get("ndigits", kwargs.get("precision", 0))
        if isinstance(digits, int) and abs(digits) > 100:
            raise BudgetExceeded("integer size", f"round() to {digits} digits (at most 100)")


def _filter_estimate(budget: Budget, name: str, args: tuple, kwargs: dict) -> None:
    """The filters among jinja2's built-ins that allocate from a width or a repeat count."""
    value = args[0] if args else None
    limit = budget.limits.size
    if name in ("center", "batch", "slice", "round"):
        _estimate_call(budget, name, value, args, kwargs)
    elif name == "indent" and isinstance(value, str):
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        width = len(width) if isinstance(width, str) else width
        if isinstance(width, int):
            size = len(value) + (value.count("\n") + 1) * width
            if size > limit:
                budget.refuse_size("indent()", size)
    elif name == "wordwrap" and isinstance(value, str):
        wrap = (args[3] if len(args) > 3 else kwargs.get("wrapstring")) or "\n"
        width = args[1] if len(args) > 1 else kwargs.get("width", 79)
        if isinstance(width, int) and isinstance(wrap, str):
            size = len(value) + (len(value) // max(width, 1) + 1) * len(wrap)
            if size > limit:
                budget.refuse_size("wordwrap()", size)
    elif name == "format" and isinstance(value, str):
        _check_printf(budget, value, args[1:])
    elif name == "join" and value is not None:
        sep = args[1] if len(args) > 1 else kwargs.get("d", "")
        if isinstance(sep, str):
            _estimate_call(budget, "join", sep, (value,), {})
    elif name == "replace" and isinstance(value, str):
        _estimate_call(budget, "replace", value, args[1:], kwargs)


# ------------------------------------------------------------------------------ the environment

_LOOP_FILTER = "nnspec_loop"
_CHECK_FILTER = "nnspec_checked"


def _budgeted_filter(name: str, function):
    # `join`, `replace`, `wordwrap`, `sum`, `map`...: jinja passes its context first
    passed = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(function)  # keeps jinja's pass_context / pass_environment marks
    def wrapper(*args, **kwargs):
        given = args[passed:]
        if any(a is UNKNOWN for a in given) or any(v is UNKNOWN for v in kwargs.values()):
            return UNKNOWN
        active = current()
        active.step()
        for value in (*given, *kwargs.values()):
            active.check(value, f"the input of |{name}")
        _filter_estimate(active, name, given, kwargs)
        return active.check(function(*args, **kwargs), f"the result of |{name}")

    return wrapper


def _loop(iterable, static_text: int):
    """A `for` loop's iterable, charging each iteration a step and its body's literal text."""
    active = current()
    for item in iterable:
        active.step()
        active.emit(static_text)
        yield item


def _checked(value):
    return current().check(value, "a concatenated string")


def _range(*args: int) -> range:
    active = current()
    for arg in args:
        active.check(arg, "a range bound")
    result = range(*args)
    if len(result) > active.limits.size:
        active.refuse_size(f"range({', '.join(map(str, args))})", len(result))
    return result


def _static_text(body: list[nodes.Node]) -> int:
    """Characters of literal template text a loop body writes per iteration (nested loops
    charge their own)."""
    total = 0
    for node in body:
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif not isinstance(node, nodes.For):
            total += _static_text(list(node.iter_child_nodes()))
    return total


class SpecSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with every operator, call, filter, loop and output charged
    to the active `Budget`. Undefined names are errors."""

    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])

    def __init__(self, **options: Any):
        options.setdefault("undefined", jinja2.StrictUndefined)
        super().__init__(finalize=self._finalize, **options)
        self.filters = {name: _budgeted_filter(name, f) for name, f in self.filters.items()}
        self.filters[_LOOP_FILTER] = _loop
        self.filters[_CHECK_FILTER] = _checked
        self.globals.pop("lipsum", None)  # generates text by the paragraph: nothing a spec needs
        self.globals["range"] = _range

    # -- jinja2 hooks ----------------------------------------------------------------------
    def _load_template(self, name, globals):
        # `{% include %}`, `{% import %}`, `{% extends %}`: a spec is one file, never a reader
        # of others (/etc/passwd), whatever loader a caller might configure
        raise SecurityError(f"a spec template cannot include, import or extend other files "
                            f"({name!r})")

    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [nodes.Const(_static_text(loop.body))],
                                     [], None, None, lineno=loop.lineno)
        for parent in list(tree.find_all(nodes.Node)):
            for field, child in parent.iter_fields():
                if isinstance(child, nodes.Concat):
                    setattr(parent, field, self._checked(child))
                elif isinstance(child, list):
                    child[:] = [self._checked(c) if isinstance(c, nodes.Concat) else c
                                for c in child]
        return tree

    @staticmethod
    def _checked(node: nodes.Concat) -> nodes.Filter:
        return nodes.Filter(node, _CHECK_FILTER, [], [], None, None, lineno=node.lineno)

    def _finalize(self, value: Any) -> Any:
        active = current()
        active.check(value, "an output value")
        active.emit(measure(value, active.limits.size))
        return value

    def call_binop(self, context, operator_: str, left: Any, right: Any) -> Any:
        if left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN
        active = current()
        active.step()
        _estimate_binop(active, operator_, left, right)
        return active.check(self.binop_table[operator_](left, right),
                            f"the result of {operator_!r}")

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if __obj is UNKNOWN or any(a is UNKNOWN for a in args) or \
                any(v is UNKNOWN for v in kwargs.values()):
            return UNKNOWN
        active = current()
        active.step()
        for value in (*args, *kwargs.values()):
            active.check(value, "a call argument")
        name = getattr(__obj, "__name__", "")
        _estimate_call(active, name, getattr(__obj, "__self__", None), args, kwargs)
        return active.check(super().call(__context, __obj, *args, **kwargs),
                            f"the result of {name or 'a call'}()")

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> str:
            active = current()
            for _, _, spec, _ in string.Formatter().parse(fmt):
                if spec:
                    _check_format_spec(active, spec, [*args, *kwargs.values()])
            return wrapped(*args, **kwargs)

        return checked

