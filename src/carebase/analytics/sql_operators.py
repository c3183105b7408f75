"""FHIRPath operators compiled to SQL (the twin of fhirpath_operators for SQL engines)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from carebase.analytics.fhirpath_ast import Binary, Expr, Literal
from carebase.analytics.sql_scalar import equals_string, single

if TYPE_CHECKING:
    from carebase.analytics.sql_compile import Scope, SqlCompiler

_NUMERIC = "('integer', 'decimal')"


def binary_bool(c: SqlCompiler, expr: Binary, scope: Scope) -> str:
    """A boolean operator as a three-valued SQL BOOLEAN."""
    op, d = expr.op, c.d
    if op in ("and", "or", "xor", "implies"):
        a = c.compile_bool(expr.left, scope)
        b = c.compile_bool(expr.right, scope)
        # SQL's three-valued AND/OR are FHIRPath's (NULL = empty)
        if op == "and":
            return f"(({a}) AND ({b}))"
        if op == "or":
            return f"(({a}) OR ({b}))"
        if op == "xor":
            return f"(({a}) <> ({b}))"
        return f"((NOT ({a})) OR ({b}))"
    if op in ("=", "!="):
        fast = equals_string(c, expr.left, expr.right, scope)
        if fast is not None:
            return fast if op == "=" else f"(NOT {fast})"
    left = c.compile(expr.left, scope)
    right = c.compile(expr.right, scope)
    a, b = c.var(), c.var()
    la, lb = d.length(a), d.length(b)
    fa, fb = c.var(), c.var()  # the first items, bound once
    if op in ("=", "!="):
        x, y = c.var(), c.var()
        same = (
            f"CASE WHEN {la} = 0 OR {lb} = 0 THEN NULL WHEN {la} <> {lb} THEN false "
            f"WHEN {la} = 1 THEN {c.item_eq(fa, fb)} "
            f"ELSE {d.transform(a, x, d.text(x))} = {d.transform(b, y, d.text(y))} END"
        )
        body = same if op == "=" else f"NOT ({same})"
    elif op in ("~", "!~"):
        folded = "lower(regexp_replace(trim({0}), '\\s+', ' ', 'g'))"
        if d.name == "spark":
            folded = "lower(regexp_replace(trim({0}), '\\\\s+', ' '))"
        eq = (
            f"CASE WHEN {d.kind(fa)} = 'string' AND {d.kind(fb)} = 'string' "
            f"THEN {folded.format(d.as_string(fa))} = {folded.format(d.as_string(fb))} "
            f"ELSE {c.item_eq(fa, fb)} END"
        )
        same = f"CASE WHEN {la} <> {lb} THEN false WHEN {la} = 0 THEN true ELSE {eq} END"
        body = same if op == "~" else f"NOT ({same})"
    elif op in ("<", "<=", ">", ">="):
        body = (
            f"CASE WHEN {la} = 0 OR {lb} = 0 THEN NULL WHEN {la} > 1 OR {lb} > 1 "
            f"THEN {c.fail(f'{op!r} needs single items')} "
            f"WHEN {d.kind(fa)} IN {_NUMERIC} AND {d.kind(fb)} IN {_NUMERIC} "
            f"THEN {d.as_double(fa)} {op} {d.as_double(fb)} "
            f"WHEN {d.kind(fa)} = 'string' AND {d.kind(fb)} = 'string' "
            f"THEN {d.as_string(fa)} {op} {d.as_string(fb)} "
            f"ELSE {c.fail(f'cannot compare these values with {op}')} END"
        )
    else:  # in, contains
        item, items = (a, b) if op == "in" else (b, a)
        y = c.var()
        first = d.at(item, "0")
        body = (
            f"CASE WHEN {d.length(item)} = 0 THEN NULL WHEN {d.length(item)} > 1 "
            f"THEN {c.fail(f'{op!r} needs a single item')} "
            f"ELSE {d.length(d.filter(items, y, c.item_eq(first, y)))} > 0 END"
        )
    return _bind(c, left, right, a, b, fa, fb, body)


def _union_operands(expr: Expr) -> list[Expr]:
    if isinstance(expr, Binary) and expr.op == "|":
        return _union_operands(expr.left) + _union_operands(expr.right)
    return [expr]


def union_items(c: SqlCompiler, expr: Expr, scope: Scope) -> list[str] | None:
    """The operands of `a | b | ...` as one SQL item each (NULL when empty) when each gives
    at most one item; None otherwise (or when `expr` is no union)."""
    if not (isinstance(expr, Binary) and expr.op == "|"):
        return None
    items, before = [], c.state()
    for operand in _union_operands(expr):
        item = single(c, operand, scope)
        if item is None:
            c.restore(before)  # the generic spelling reads what it needs
            return None
        items.append(item)
    return items


def _single_union(c: SqlCompiler, expr: Binary, scope: Scope) -> str | None:
    """`a | b | ...` when each operand gives at most one item: each kept unless empty or
    equal to an earlier one, spelled without lambdas (`distinct` compares every pair of a
    list); None when an operand may give several items."""
    items = union_items(c, expr, scope)
    if items is None:
        return None
    d, parts = c.d, []
    for n, item in enumerate(items):
        tests = [f"{item} IS NOT NULL"]
        tests += [f"({e} IS NULL OR NOT ({c.item_eq(e, item)}))" for e in items[:n]]
        parts.append(f"CASE WHEN {' AND '.join(tests)} THEN {d.list_of(item)} ELSE {d.empty} END")
    return d.concat(*parts)


def binary_list(c: SqlCompiler, expr: Binary, scope: Scope) -> str:
    """A non-boolean operator (`|`, `&`, arithmetic) as a SQL list of items."""
    op, d = expr.op, c.d
    if op == "|":
        singles = _single_union(c, expr, scope)
        if singles is not None:
            return singles
    left = c.compile(expr.left, scope)
    right = c.compile(expr.right, scope)
    if op == "|":
        return distinct(c, d.concat(left, right))
    a, b = c.var(), c.var()
    fa, fb = c.var(), c.var()  # the first items, bound once
    if op == "&":
        text = "CASE WHEN {0} IS NULL THEN '' WHEN {k} = 'string' THEN {s} ELSE {t} END"
        joined = (
            text.format(fa, k=d.kind(fa), s=d.as_string(fa), t=d.text(fa))
            + " || "
            + text.format(fb, k=d.kind(fb), s=d.as_string(fb), t=d.text(fb))
        )
        return _bind(c, left, right, a, b, fa, fb, d.list_of(d.from_string(f"({joined})")))
    x, y = d.as_double(fa), d.as_double(fb)
    both_int = f"{d.kind(fa)} = 'integer' AND {d.kind(fb)} = 'integer'"
    if op in ("+", "-", "*"):
        value = (
            f"CASE WHEN {both_int} THEN {d.from_bigint(f'{x} {op} {y}')} "
            f"ELSE {d.from_double(f'{x} {op} {y}')} END"
        )
    elif op == "/":
        value = d.from_double(f"{x} / {y}")
    elif op == "div":
        value = d.from_bigint(f"trunc({x} / {y})")
    else:  # mod
        value = (
            f"CASE WHEN {both_int} THEN {d.from_bigint(f'{x} - {y} * trunc({x} / {y})')} "
            f"ELSE {d.from_double(f'{x} - {y} * trunc({x} / {y})')} END"
        )
    if op in ("+",) and not _numeric_literal(expr):
        strings = f"{d.kind(fa)} = 'string' AND {d.kind(fb)} = 'string'"
        value = (
            f"CASE WHEN {strings} THEN {d.from_string(d.as_string(fa) + ' || ' + d.as_string(fb))} "
            f"ELSE {value} END"
        )
    body = (
        f"CASE WHEN {d.length(a)} = 0 OR {d.length(b)} = 0 THEN {d.empty} "
        f"WHEN {d.length(a)} > 1 OR {d.length(b)} > 1 THEN {c.fail(f'{op!r} needs single items')} "
        f"WHEN NOT ({d.kind(fa)} IN {_NUMERIC} AND {d.kind(fb)} IN {_NUMERIC}) "
        f"AND NOT ({d.kind(fa)} = 'string' AND {d.kind(fb)} = 'string' AND {op == '+'}) "
        f"THEN {c.fail(f'{op!r} needs numbers')} "
        f"WHEN {op in ('/', 'div', 'mod')} AND {y} = 0 THEN {d.empty} "
        f"ELSE {d.list_of(value)} END"
    )
    return _bind(c, left, right, a, b, fa, fb, body)


def _bind(
    c: SqlCompiler, left: str, right: str, a: str, b: str, fa: str, fb: str, body: str
) -> str:
    """`body` with a, b bound to the operand lists and fa, fb to their first items."""
    d = c.d
    inner = d.let(d.at(a, "0"), fa, d.let(d.at(b, "0"), fb, body))
    return d.let(left, a, d.let(right, b, inner))


def _numeric_literal(expr: Binary) -> bool:
    return any(
        isinstance(side, Literal) and side.type in ("integer", "decimal")
        for side in (expr.left, expr.right)
    )


def distinct(c: SqlCompiler, lst: str) -> str:
    """Items without repeats, first occurrence kept (order matters for the Python twin)."""
    d = c.d
    v, x, i, y = c.var(), c.var(), c.var(), c.var()
    earlier = d.slice(v, "0", d.index0(i))
    return d.let(
        lst, v, d.filter_indexed(v, x, i, f"{d.length(d.filter(earlier, y, c.item_eq(x, y)))} = 0")
    )
