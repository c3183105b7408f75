"""FHIRPath functions compiled to SQL (the twin of fhirpath_functions for SQL engines)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from carebase.analytics import fhirpath_values as fv
from carebase.analytics.fhirpath_ast import FunctionCall, Member, TypeSpecifier
from carebase.analytics.sql_compile import _REFERENCE_PATTERN
from carebase.analytics.sql_operators import distinct
from carebase.analytics.sql_scalar import choice_member, context_of

if TYPE_CHECKING:
    from carebase.analytics.sql_compile import Scope, SqlCompiler


def _type_arg(call: FunctionCall) -> TypeSpecifier:
    arg = call.args[0]
    assert isinstance(arg, TypeSpecifier)  # the parser guarantees it
    return arg


def _criteria(c: SqlCompiler, call: FunctionCall, scope: Scope, base: str) -> str:
    """Items of `base` for which the argument is true (`where`)."""
    x = c.var()
    inner = scope.with_focus(c.d.list_of(x), context_of(c, call.base, scope))
    test = c.compile_bool(call.args[0], inner)
    return c.d.filter(base, x, f"coalesce({test}, false)")


def function_bool(c: SqlCompiler, call: FunctionCall, scope: Scope) -> str:
    """exists, empty, not, is, hasValue as a three-valued SQL BOOLEAN."""
    d = c.d
    base = c.compile(call.base, scope)
    if call.name == "exists":
        found = _criteria(c, call, scope, base) if call.args else base
        return f"({d.length(found)} > 0)"
    if call.name == "empty":
        return f"({d.length(base)} = 0)"
    if call.name == "not":
        return f"(NOT ({c.truth(base)}))"
    if call.name == "is":
        return c._is(base, _type_arg(call))
    v = c.var()  # hasValue
    return d.let(
        base, v, f"({d.length(v)} = 1 AND {d.kind(d.at(v, '0'))} NOT IN ('object', 'array'))"
    )


def function_list(c: SqlCompiler, call: FunctionCall, scope: Scope) -> str:
    """Every other function as a SQL list of items."""
    d, name = c.d, call.name
    if name == "ofType" and isinstance(call.base, Member):
        return _of_type_member(c, call, scope)
    base = c.compile(call.base, scope)
    x, v = c.var(), c.var()
    if name == "where":
        return _criteria(c, call, scope, base)
    if name == "select":
        inner = scope.with_focus(d.list_of(x), context_of(c, call.base, scope))
        return c.each(base, c.compile(call.args[0], inner), x)
    if name in ("ofType", "as"):
        return d.filter(base, x, c.is_type(x, _type_arg(call)))
    if name == "first":
        return d.slice(base, "0", "1")
    if name == "last":
        return d.let(base, v, d.slice(v, f"{d.length(v)} - 1", "1"))
    if name == "tail":
        return d.let(base, v, d.slice(v, "1", d.length(v)))
    if name == "skip":
        n = f"greatest({c.integer(call.args[0], scope)}, 0)"
        return d.let(base, v, d.slice(v, n, d.length(v)))
    if name == "take":
        return d.slice(base, "0", f"greatest({c.integer(call.args[0], scope)}, 0)")
    if name == "single":
        return d.let(
            base,
            v,
            f"CASE WHEN {d.length(v)} > 1 THEN {c.fail('single() found several items')} "
            f"ELSE {v} END",
        )
    if name == "count":
        return d.list_of(d.from_bigint(d.length(base)))
    if name == "distinct":
        return distinct(c, base)
    if name in ("toString", "join"):
        text = f"CASE WHEN {d.kind(x)} = 'string' THEN {d.as_string(x)} ELSE {d.text(x)} END"
        if name == "join":
            sep = c.string(call.args[0], scope) if call.args else "''"
            joined = f"array_join({d.transform(base, x, text)}, coalesce({sep}, ''))"
            if d.name == "duckdb":
                joined = f"array_to_string({d.transform(base, x, text)}, coalesce({sep}, ''))"
            return d.list_of(d.from_string(joined))
        flag = f"CASE WHEN {d.as_bool(x)} THEN 'true' ELSE 'false' END"
        return d.let(
            d.at(base, "0"),
            x,
            f"CASE WHEN {x} IS NULL OR {d.kind(x)} IN ('object', 'array') THEN {d.empty} "
            f"WHEN {d.kind(x)} = 'boolean' THEN {d.list_of(d.from_string(flag))} "
            f"ELSE {d.list_of(d.from_string(text))} END",
        )
    if name == "extension":
        url = c.string(call.args[0], scope)
        e = c.var()
        found = d.filter(
            c.member_list(x, "extension"), e, f"{d.as_string(d.member(e, 'url'))} = {url}"
        )
        return c.each(base, found, x)
    if name == "getResourceKey":
        keyed = d.filter(
            base,
            x,
            f"{d.member(x, 'resourceType')} IS NOT NULL AND {d.kind(d.member(x, 'id'))} = 'string'",
        )
        return d.transform(keyed, x, d.member(x, "id"))
    if name == "getReferenceKey":
        return _reference_key(c, call, base)
    if name in ("lowBoundary", "highBoundary"):
        from carebase.analytics.sql_boundary import boundary

        return boundary(c, call, scope, base)
    raise AssertionError(f"function {name} reached the list compiler")  # parser-checked


def _of_type_member(c: SqlCompiler, call: FunctionCall, scope: Scope) -> str:
    # `value.ofType(Quantity)` reads `valueQuantity`; a plain `value` key is type-tested
    member = call.base
    assert isinstance(member, Member)
    d, spec = c.d, _type_arg(call)
    known = c.path_list(call, scope)
    if known is not None:
        return known
    owner = c.compile(member.base, scope)
    x, y = c.var(), c.var()
    choice = choice_member(c, call, scope)
    if choice is not None:  # a known choice element: R4 JSON only has the typed key
        return c.each(owner, c.member_list(x, choice[2], (choice[2],)), x)
    typed = c.member_list(x, fv.choice_key(member.name, spec.name))
    plain = d.filter(_plain_member(c, x, member.name), y, c.is_type(y, spec))
    return c.each(owner, d.concat(typed, plain), x)


def _plain_member(c: SqlCompiler, item: str, name: str) -> str:
    d, v = c.d, c.var()
    return d.let(
        d.member(item, name),
        v,
        f"CASE WHEN {v} IS NULL OR {d.kind(v)} = 'null' THEN {d.empty} "
        f"WHEN {d.kind(v)} = 'array' THEN {d.as_array(v)} ELSE {d.list_of(v)} END",
    )


def _reference_key(c: SqlCompiler, call: FunctionCall, base: str) -> str:
    d, x, k = c.d, c.var(), c.var()
    reference = d.as_string(d.member(x, "reference"))
    pair = d.list_of(
        d.from_string(d.regexp_extract(reference, _REFERENCE_PATTERN, 1)),
        d.from_string(d.regexp_extract(reference, _REFERENCE_PATTERN, 2)),
    )
    pairs = d.transform(d.filter(base, x, f"coalesce({reference}, '') <> ''"), x, pair)
    wanted = f"{d.as_string(d.at(k, '1'))} <> ''"
    if call.args:
        wanted += f" AND {d.as_string(d.at(k, '0'))} = {d.lit(_type_arg(call).name)}"
    return d.transform(d.filter(pairs, k, wanted), k, d.at(k, "1"))
