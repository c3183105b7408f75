"""lowBoundary()/highBoundary() in SQL: decimals by written precision, partial dates and times."""

from __future__ import annotations

from typing import TYPE_CHECKING

from carebase.analytics.fhirpath_ast import Expr, FunctionCall, Literal, Member, TypeSpecifier
from carebase.analytics.sql_scalar import context_of
from carebase.fhir.element_nav import resolve_key

if TYPE_CHECKING:
    from carebase.analytics.sql_compile import Scope, SqlCompiler

_DATE = r"(\d{4})(-(\d{2})(-(\d{2}))?)?"
_TIME = r"(\d{2})(:(\d{2})(:(\d{2})(\.(\d+))?)?)?"
_ZONE = r"(Z|[+-]\d{2}:\d{2})?"


def _known_type(call: FunctionCall) -> str | None:
    # the type the tree pins down (`x.ofType(dateTime)`), as fhirpath_functions._static_type
    base = call.base
    if isinstance(base, FunctionCall) and base.name in ("ofType", "as") and base.args:
        arg = base.args[0]
        if isinstance(arg, TypeSpecifier):
            return "dateTime" if arg.name == "instant" else arg.name
    if isinstance(base, Literal):
        return base.type
    return None


def _fill_time(c: SqlCompiler, text: str, high: bool) -> str:
    """hh:mm:ss.fff from a partial time (the groups of _TIME in `text`)."""
    d = c.d

    def group(n: int, default: str) -> str:
        return f"coalesce(nullif({d.regexp_extract(text, '^' + _TIME, n)}, ''), '{default}')"

    fraction = d.regexp_extract(text, "^" + _TIME, 7)
    pad = "999" if high else "000"
    return (
        f"{group(1, '23' if high else '00')} || ':' || {group(3, '59' if high else '00')} || ':' "
        f"|| {group(5, '59' if high else '00')} || '.' || substr({fraction} || '{pad}', 1, 3)"
    )


def _temporal(c: SqlCompiler, s: str, kind: str, high: bool) -> str:
    """SQL string of the boundary of `s` read as `kind`, or NULL when it is not of that form."""
    d = c.d
    if kind == "time":
        return f"CASE WHEN {d.matches(s, _TIME)} THEN {_fill_time(c, s, high)} END"
    date_part = f"split_part({s}, 'T', 1)" if d.name == "duckdb" else f"split({s}, 'T')[0]"
    time_part = f"coalesce(regexp_extract({s}, '^[^T]*T(.*)$', 1), '')"
    if d.name == "duckdb":
        time_part = f"coalesce(regexp_extract({s}, '^[^T]*T(.*)$', 1), '')"
    year = d.regexp_extract(date_part, "^" + _DATE, 1)
    month = f"nullif({d.regexp_extract(date_part, '^' + _DATE, 3)}, '')"
    day = f"nullif({d.regexp_extract(date_part, '^' + _DATE, 5)}, '')"
    if high:
        month_text = f"coalesce({month}, '12')"
        last = d.last_day(f"CAST({year} AS INT)", f"CAST({month_text} AS INT)")
        day_text = f"coalesce({day}, lpad(CAST({last} AS STRING), 2, '0'))"
    else:
        month_text, day_text = f"coalesce({month}, '01')", f"coalesce({day}, '01')"
    date_text = f"{year} || '-' || {month_text} || '-' || {day_text}"
    ok = d.matches(date_part, _DATE)
    if kind == "date":
        return f"CASE WHEN {ok} THEN {date_text} END"
    zone = d.regexp_extract(time_part, "(Z|[+-][0-9]{2}:[0-9]{2})$", 1)
    bare = f"regexp_replace({time_part}, '(Z|[+-][0-9]{{2}}:[0-9]{{2}})$', '')"
    default_zone = "-12:00" if high else "+14:00"
    zone_text = f"coalesce(nullif({zone}, ''), '{default_zone}')"
    return (
        f"CASE WHEN {ok} THEN {date_text} || 'T' || {_fill_time(c, bare, high)} || {zone_text} END"
    )


def _decimal(
    c: SqlCompiler, item: str, high: bool, precision: str | None, written: str | None
) -> str:
    """The bound as an exact ratio of integers, so that doubles round it as Python's Decimal
    does: with d digits, the value is n / 10^d and the bound (10n -+ 5) / 10^(d+1); to a
    `precision` p of fewer digits it goes down (low) or up (high) to p digits."""
    d = c.d
    # a literal's digits are known here; an item's come from the data
    digits = _written_places(c, item) if written is None else str(_places(written))
    k, m = c.var(), c.var()
    scaled = f"(round({d.as_double(item)} * power(10, {k})) * 10 {'+' if high else '-'} 5)"
    bound = f"{m} / power(10, {k} + 1)"
    if precision is not None:
        p = c.var()
        step = "ceil" if high else "floor"
        bound = d.let(
            precision,
            p,
            f"CASE WHEN {p} > {k} THEN {bound} "
            f"ELSE {step}({m} / power(10, {k} + 1 - {p})) / power(10, {p}) END",
        )
    return d.from_double(d.let(digits, k, d.let(scaled, m, bound)))


def _written_places(c: SqlCompiler, item: str) -> str:
    """How many digits after the point the number `item` was written with. Engines read
    1.50 as 1.5, so the digits are those of the resource's JSON text: the most any number
    written there with this value has (at least the item's own). Two numbers of equal value
    written with different digits in one resource both count as the longer."""
    d = c.d
    t, u = c.var(), c.var()
    same = d.filter(
        d.json_numbers(d.resource_text),
        t,
        f"{t} NOT LIKE '%e%' AND {t} NOT LIKE '%E%' AND CAST({t} AS DOUBLE) = {d.as_double(item)}",
    )
    written = d.list_max(d.transform(same, u, f"length({u}) - instr({u}, '.')"))
    return f"greatest({d.stored_places(item)}, coalesce({written}, 0))"


def _places(text: str) -> int:
    return len(text.partition(".")[2])


_TEMPORAL_TYPES = ("date", "dateTime", "instant", "time")
_NUMBER_TYPES = ("decimal", "integer", "positiveInt", "unsignedInt", "integer64")


def _element_type(c: SqlCompiler, expr: Expr, scope: Scope) -> str | None:
    """The FHIR type of the element `expr` reads when the definitions say (`Quantity.value`
    is a decimal), else None."""
    if not isinstance(expr, Member):
        return None
    owner = context_of(c, expr.base, scope)
    found = resolve_key(owner, expr.name) if owner is not None else None
    return None if found is None or found.is_choice else found.type_code


def boundary(c: SqlCompiler, call: FunctionCall, scope: Scope, base: str) -> str:
    """The boundary of a one-item collection (empty for anything it does not apply to)."""
    d = c.d
    high = call.name == "highBoundary"
    known = _known_type(call)
    precision = c.integer(call.args[0], scope) if call.args else None
    v, x, s, b = c.var(), c.var(), c.var(), c.var()
    if known in ("date", "dateTime", "time"):
        text = _temporal(c, s, known, high)
    else:
        text = (
            f"CASE WHEN {s} LIKE '%T%' THEN {_temporal(c, s, 'dateTime', high)} "
            f"WHEN {d.matches(s, _DATE)} THEN {_temporal(c, s, 'date', high)} "
            f"WHEN {s} LIKE '%:%' THEN {_temporal(c, s, 'time', high)} END"
        )
    as_list = f"CASE WHEN {b} IS NULL THEN {d.empty} ELSE {d.list_of(d.from_string(b))} END"
    string_case = d.let(d.as_string(x), s, d.let(text, b, as_list))
    integer_stays = known in ("integer", None)
    literal = call.base
    written = (
        str(literal.value) if isinstance(literal, Literal) and literal.type == "decimal" else None
    )
    # an element the definitions type as a number holds no strings, a temporal one no
    # numbers (valid data): the SQL of the other branch, large, is left out
    element = _element_type(c, call.base, scope)
    numbers = (
        ""
        if element in _TEMPORAL_TYPES
        else f"WHEN {d.kind(x)} IN ('integer', 'decimal') "
        f"THEN {d.list_of(_decimal(c, x, high, precision, written))} "
    )
    strings = "" if element in _NUMBER_TYPES else f"WHEN {d.kind(x)} = 'string' THEN {string_case} "
    one = (
        f"CASE WHEN {d.kind(x)} = 'integer' AND {integer_stays} THEN {d.list_of(x)} "
        f"{numbers}{strings}ELSE {d.empty} END"
    )
    return d.let(
        base,
        v,
        f"CASE WHEN {d.length(v)} = 0 THEN {d.empty} WHEN {d.length(v)} > 1 "
        f"THEN {c.fail(f'{call.name}() needs a single item')} "
        f"ELSE {d.let(d.at(v, '0'), x, one)} END",
    )
