"""FHIRPath operators (comparison, logic, arithmetic, union, membership) as closures."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from carebase.analytics import fhirpath_values as fv
from carebase.analytics.fhirpath_ast import Binary
from carebase.analytics.fhirpath_functions import distinct

if TYPE_CHECKING:
    from carebase.analytics.fhirpath_compile import Compiled, Compiler, Env

_COMPARISONS = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def compile_binary(compiler: Compiler, expr: Binary) -> Compiled:
    """The closure for `left op right`."""
    left = compiler.compile(expr.left)
    right = compiler.compile(expr.right)
    op = expr.op
    loc = compiler.location
    if op in ("=", "!="):
        negate = op == "!="

        def eq(focus: list[Any], env: Env) -> list[Any]:
            a = left(focus, env)
            if not a:
                return []
            b = right(focus, env)
            if not b:
                return []
            if len(a) == 1 and len(b) == 1:
                same = fv.equal(a[0], b[0])
            else:
                same = fv.collections_equal(a, b)
            return [same != negate]

        return eq
    if op in ("~", "!~"):
        negate = op == "!~"

        def equiv(focus: list[Any], env: Env) -> list[Any]:
            a, b = left(focus, env), right(focus, env)
            same = len(a) == len(b) and all(any(fv.equivalent(x, y) for y in b) for x in a)
            return [same != negate]

        return equiv
    if op in _COMPARISONS:
        test = _COMPARISONS[op]

        def comparison(focus: list[Any], env: Env) -> list[Any]:
            a, b = left(focus, env), right(focus, env)
            if not a or not b:
                return []
            if len(a) > 1 or len(b) > 1:
                raise compiler.fail(f"'{op}' needs single items, got {len(a)} and {len(b)}")
            order = fv.compare(a[0], b[0], loc)
            return [] if order is None else [test(order)]

        return comparison
    if op in ("and", "or", "xor", "implies"):
        return _logic(compiler, op, left, right)
    if op == "|":
        return lambda focus, env: distinct(left(focus, env) + right(focus, env))
    if op in ("in", "contains"):
        item_side, list_side = (left, right) if op == "in" else (right, left)

        def membership(focus: list[Any], env: Env) -> list[Any]:
            item = item_side(focus, env)
            if not item:
                return []
            if len(item) > 1:
                raise compiler.fail(
                    f"'{op}' needs a single item on its {'left' if op == 'in' else 'right'}"
                )
            return [any(fv.equal(item[0], v) for v in list_side(focus, env))]

        return membership
    if op == "&":

        def concat(focus: list[Any], env: Env) -> list[Any]:
            a, b = left(focus, env), right(focus, env)
            return [(str(a[0]) if a else "") + (str(b[0]) if b else "")]

        return concat
    return _arithmetic(compiler, op, left, right)


def _logic(compiler: Compiler, op: str, left: Compiled, right: Compiled) -> Compiled:
    loc = compiler.location

    def logic(focus: list[Any], env: Env) -> list[Any]:
        a = fv.truth(left(focus, env), loc)
        if op == "and" and a is False:
            return [False]
        if op == "or" and a is True:
            return [True]
        if op == "implies" and a is False:
            return [True]
        b = fv.truth(right(focus, env), loc)
        if op == "and":
            if b is False:
                return [False]
            return [True] if a is True and b is True else []
        if op == "or":
            if b is True:
                return [True]
            return [False] if a is False and b is False else []
        if op == "xor":
            return [] if a is None or b is None else [a != b]
        # implies with a true or empty
        if b is True:
            return [True]
        return [False] if a is True and b is False else []

    return logic


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _arithmetic(compiler: Compiler, op: str, left: Compiled, right: Compiled) -> Compiled:
    def arithmetic(focus: list[Any], env: Env) -> list[Any]:
        a, b = left(focus, env), right(focus, env)
        if not a or not b:
            return []
        if len(a) > 1 or len(b) > 1:
            raise compiler.fail(f"'{op}' needs single items, got {len(a)} and {len(b)}")
        x, y = a[0], b[0]
        if op == "+" and isinstance(x, str) and isinstance(y, str):
            return [x + y]
        if not (_number(x) and _number(y)):
            raise compiler.fail(f"'{op}' needs numbers, got {x!r} and {y!r}")
        return _apply(op, x, y)

    return arithmetic


def _apply(op: str, x: int | float, y: int | float) -> list[Any]:
    both_int = isinstance(x, int) and isinstance(y, int)
    if op in ("/", "div", "mod") and y == 0:
        return []  # FHIRPath: division by zero gives empty
    if op == "div":
        return [int(Decimal(str(x)) / Decimal(str(y)))]
    if op == "mod":
        if both_int:
            return [int(abs(x) % abs(y)) * (1 if x >= 0 else -1)]
        return [float(Decimal(str(x)) % Decimal(str(y)))]
    if both_int and op in ("+", "-", "*"):
        return [x + y if op == "+" else x - y if op == "-" else x * y]
    # decimals: exact decimal arithmetic on the written values, then back to float
    dx, dy = Decimal(repr(x)), Decimal(repr(y))
    result = dx + dy if op == "+" else dx - dy if op == "-" else dx * dy if op == "*" else dx / dy
    return [float(result)]
