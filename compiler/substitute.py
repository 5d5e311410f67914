"""`$name` and `${expression}` in block bodies and `vars`, evaluated in a jinja2 sandbox.

Expressions are data-only: compiler/sandbox.py's budgeted sandbox compiles them, so a spec can
compute `${width * 4}` or `${stride == 1 and cin == cout}` but can never reach Python objects or
imports, nor ask for more work than its budget (`${7 ** 300000000}` is refused at once).
A value an earlier problem left unknown (compiler/unknown.py's `UNKNOWN`) makes the result unknown, or raises
`FollowOnError` where it decides something: the problem follows from the earlier one.
"""

from __future__ import annotations

import functools
import re
from typing import Any

_NAME = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_EXPR = re.compile(r"^\$\{(.+)\}$", re.S)


class SubstitutionError(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class FollowOnError(SubstitutionError):
    """The expression used a value that an earlier problem left unknown."""


_env = None


def _sandbox():
    global _env
    if _env is None:
        from nnspec.compiler.sandbox import SpecSandbox

        _env = SpecSandbox()
        # plain arithmetic helpers, e.g. MobileNet's `${max(8, (c * 4 + 4) // 8 * 8)}`
        _env.globals.update(min=min, max=max, abs=abs, int=int, float=float, round=round)
    return _env


def substitute(value: Any, env: dict[str, Any]) -> Any:
    """Replace `$name` / `${expr}` strings anywhere inside `value` (dicts and lists included)."""
    if isinstance(value, str):
        return _substitute_string(value, env)
    if isinstance(value, dict):
        return {k: substitute(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    return value


def _substitute_string(text: str, env: dict[str, Any]) -> Any:
    if not text.startswith("$"):
        return text
    m = _NAME.match(text)
    if m:
        name = m.group(1)
        if name not in env:
            from nnspec.compiler.suggest import did_you_mean

            known = ", ".join(sorted(env)) or "none"
            raise SubstitutionError(f"unknown variable ${name}{did_you_mean(name, env)}",
                                    hint=f"variables here: {known}")
        return env[name]
    m = _EXPR.match(text)
    if m:
        return evaluate(m.group(1), env)
    return text


@functools.lru_cache(maxsize=4096)
def _compile(expression: str):
    # compiling is ~1 ms (jinja2 generates Python source); blocks repeat the same expressions
    return _sandbox().compile_expression(expression, undefined_to_none=False)


def evaluate(expression: str, env: dict[str, Any]) -> Any:
    """The value of `${expression}` in `env`, under the active budget (or a fresh one)."""
    import jinja2

    from nnspec.compiler.budget import LIMITS_HINT, BudgetExceeded, budget
    from nnspec.compiler.unknown import UnknownValue

    shown = expression if len(expression) <= 80 else expression[:77] + "..."
    try:
        with budget() as active, active.running():
            result = _compile(expression)(**env)
    except jinja2.TemplateSyntaxError as e:
        raise SubstitutionError(f"cannot parse expression ${{{shown}}}: {e.message}") from None
    except jinja2.UndefinedError as e:
        known = ", ".join(sorted(env)) or "none"
        raise SubstitutionError(f"in ${{{shown}}}: {e.message}",
                                hint=f"variables here: {known}") from None
    except jinja2.exceptions.SecurityError as e:
        raise SubstitutionError(f"expression ${{{shown}}} is not allowed: {e}") from None
    except BudgetExceeded as e:
        raise SubstitutionError(f"expression ${{{shown}}} {e}", hint=LIMITS_HINT) from None
    except UnknownValue:
        raise FollowOnError(f"expression ${{{shown}}} depends on an earlier problem") from None
    except Exception as e:  # arithmetic errors and the like, e.g. division by zero
        raise SubstitutionError(f"expression ${{{shown}}} failed: {e}") from None
    if isinstance(result, jinja2.Undefined):
        raise SubstitutionError(f"expression ${{{shown}}} is undefined")
    return result
