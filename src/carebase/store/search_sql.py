"""Search parameters as SQL conditions over the index tables: the WHERE clause of a search.

`build_search(type, params)` returns `SearchCriteria`: WHERE fragments over the (unaliased)
`resource` table, ANDed, with `?` placeholders. Comma-separated values are ORed inside one
parameter, repeated parameters are ANDed. Chaining and `_has` live in `search_chain`, value
syntax in `search_values`; `_text`/`_content` and the terminology modifiers (`:in`, `:not-in`,
`:above`, `:below`, `:of-type`) are delegated to `search_text` and `search_modifiers`.

Query shape: each criterion knows how selective it probably is (`Criterion.rank`). The most
selective one drives the query as `rid IN (SELECT rid FROM idx_x WHERE pkey = ? AND ...)`;
the others are checked per row by correlated `EXISTS (... x.rid = resource.rid ...)`, which
the databases answer through the `rid` index instead of materialising every match.

Unknown or unsupported parameters and invalid modifiers raise `UnknownParameter` (a 400);
with `lenient=True` they are dropped and listed in `SearchCriteria.ignored` instead.
Malformed values are a 400 in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from carebase.errors import BadRequest
from carebase.fhir.definitions.loader import get_definitions
from carebase.fhir.definitions.model import SearchParam
from carebase.store import search_modifiers, search_text
from carebase.store.index_values import index_text
from carebase.store.schema import param_key
from carebase.store.search_restriction import Restriction
from carebase.store.search_values import (
    Condition,
    Dialect,
    bad_value,
    composite_part,
    date_condition,
    date_range_ms,
    number_bounds,
    number_condition,
    quantity_condition,
    reference_condition,
    split_prefix,
    split_unescaped,
    split_values,
    string_condition,
    token_condition,
    token_text_condition,
    unescape,
    uri_condition,
)

__all__ = [
    "MAX_SEARCH_CRITERIA",
    "MAX_SEARCH_VALUES",
    "RESULT_PARAMETERS",
    "Criterion",
    "SearchCriteria",
    "UnknownParameter",
    "build_search",
    "date_range_ms",
    "is_supported",
    "split_values",
]

#: Parameters that shape the result rather than select resources; other parts of the search
#: engine handle them, and build_search skips them.
RESULT_PARAMETERS = frozenset(
    {
        "_count", "_total", "_summary", "_elements", "_format", "_pretty", "_cursor", "_sort",
        "_include", "_revinclude", "_contained", "_containedType",
    }
)  # fmt: skip
#: Parameters every resource type has that are searched on system level (no type)
COMMON_PARAMETERS = (
    "_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_text", "_content",
    "_list",
)  # fmt: skip
#: Parameters handled here although their SearchParameter has no indexed expression
_SPECIAL = frozenset({"_id", "_lastUpdated", "_text", "_content", "_list", "_has", "_type"})

#: the most values (comma-separated ones counted singly) one search may have
MAX_SEARCH_VALUES = 500
#: the most ANDed parameters one search may have (chain links and `_has` levels count too):
#: PostgreSQL's planning time grows steeply with them (measured: 20 take 0.2 s to plan,
#: 40 take 3 s, 120 take 40 s)
MAX_SEARCH_CRITERIA = 20

_TABLES = {
    "token": "idx_token",
    "string": "idx_string",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "uri": "idx_uri",
    "reference": "idx_reference",
    "composite": "idx_composite",
}
_RANGE_TYPES = ("quantity", "number", "date")
#: Modifiers implemented here, per parameter type (`:[type]` on references besides)
_OWN_MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"text", "not", "missing"},
    "reference": {"identifier", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"missing"},
    "composite": {"missing"},
}
#: Modifiers `search_modifiers.modifier_condition` implements, per parameter type
_DELEGATED_MODIFIERS = {
    "token": set(search_modifiers.MODIFIERS),
    "uri": {"above", "below"},
}

# Ranks: which criterion probably selects fewest rows (lowest drives the query).
RANK_ID = 0
RANK_EQUAL = 1  # token and reference equality, compartment, _list
RANK_STRING = 2  # string, full text
RANK_URI = 3  # uri, composite
RANK_NUMBER = 4  # number, quantity
RANK_DATE = 5
RANK_WEAK = 6  # :missing=false, :contains, :text
RANK_NEGATED = 7  # :not, :missing=true (NOT EXISTS: never a driver)


class UnknownParameter(BadRequest):
    """An unknown or unsupported parameter or modifier (dropped under lenient handling)."""


@dataclass(frozen=True, slots=True)
class SearchCriteria:
    """The WHERE clause of a search over the table `resource`."""

    where: list[str]  # ANDed SQL fragments, `?` placeholders
    args: list[Any]
    ignored: tuple[str, ...] = ()  # parameter names dropped under lenient handling
    #: the same selection read from one index table alone, when it can be (see IndexFirst)
    index_first: IndexFirst | None = None


@dataclass(frozen=True, slots=True)
class IndexFirst:
    """A search whose matches one index table yields without the `resource` table.

    Index rows exist only for current, non-deleted resources and `pkey` implies the type, so
    when the driving criterion is an index lookup and every other criterion only tests the
    row id, `SELECT DISTINCT resource.rid FROM {table} resource WHERE {where}` is the set of
    matches: page, order (by rid) and count come from the index, and only the page's bodies
    are read from `resource` (the alias lets the correlated checks run unchanged).
    """

    table: str
    where: str
    args: list[Any]


@dataclass(frozen=True, slots=True)
class Criterion:
    """One parameter's condition in two forms: driving (`rid IN (...)`) and correlated."""

    rank: int
    driver: Condition
    correlated: Condition | None = None  # None: the driver form is fine anywhere
    #: a selective `rid IN (...)`: better than any other index to find the rows
    drives: bool = False
    #: (index table, condition on it) when the criterion is "some row of that table matches"
    index: tuple[str, Condition] | None = None
    #: both forms test `rid` / `resource.rid` only (no other column of `resource`)
    rid_only: bool = False

    def as_check(self) -> Condition:
        """The form for a criterion that does not drive the query."""
        return self.correlated or self.driver


def index_criterion(
    dialect: Dialect, rank: int, table: str, inner: Condition, negate: bool = False
) -> Criterion:
    """A criterion `inner` (pkey and column conditions) holds for some row of `table`.

    On SQLite the correlated form writes `+x.pkey`: without statistics SQLite would probe the
    (pkey, ...) lookup index for each row, scanning every row of that parameter, instead of
    the rid index that finds the row's few entries.
    """
    sql, args = inner
    check = f"+x.{sql}" if dialect == "sqlite" and sql.startswith("pkey") else sql
    exists = f"EXISTS (SELECT 1 FROM {table} x WHERE x.rid = resource.rid AND {check})"
    if negate:
        return Criterion(RANK_NEGATED, (f"NOT {exists}", list(args)), rid_only=True)
    return Criterion(
        rank,
        (f"rid IN (SELECT rid FROM {table} WHERE {sql})", list(args)),
        (exists, list(args)),
        drives=rank <= RANK_URI,
        index=(table, (sql, list(args))),
        rid_only=True,
    )


def keyed(pkeys: Sequence[int], cond: Condition | None = None) -> Condition:
    """`pkey = ? AND (cond)` (or `pkey IN (...)` for several keys)."""
    if len(pkeys) == 1:
        sql, args = "pkey = ?", [pkeys[0]]
    else:
        sql, args = f"pkey IN ({', '.join('?' * len(pkeys))})", list(pkeys)
    if cond is not None:
        sql += f" AND {cond[0]}"
        args += cond[1]
    return sql, args


def any_of(parts: list[str]) -> str:
    """`(a OR b OR ...)` nested as a balanced tree: SQLite refuses expression trees deeper
    than 1,000, which a flat chain of a few hundred ORs already is."""
    if len(parts) == 1:
        return parts[0]
    if len(parts) <= 16:
        return "(" + " OR ".join(parts) + ")"
    mid = len(parts) // 2
    return f"({any_of(parts[:mid])} OR {any_of(parts[mid:])})"


def or_conditions(conds: list[Condition]) -> Condition:
    """The OR of several conditions, with their arguments in order."""
    return any_of([c[0] for c in conds]), [a for c in conds for a in c[1]]


def conjunction(criteria: list[Criterion]) -> Condition:
    """The AND of criteria: the lowest-ranked drives, the others are correlated checks."""
    if not criteria:
        return "1 = 1", []
    ordered = sorted(criteria, key=lambda c: c.rank)
    parts = [ordered[0].driver] + [c.as_check() for c in ordered[1:]]
    return " AND ".join(p[0] for p in parts), [a for p in parts for a in p[1]]


def index_first(criteria: list[Criterion]) -> IndexFirst | None:
    """The index-only form of one type's criteria (see IndexFirst), when they allow it."""
    if not criteria:
        return None
    ordered = sorted(criteria, key=lambda c: c.rank)
    lead = ordered[0]
    if lead.index is None or not lead.drives or not all(c.rid_only for c in ordered[1:]):
        return None
    table, (sql, args) = lead.index
    checks = [c.as_check() for c in ordered[1:]]
    where = " AND ".join([sql, *(c[0] for c in checks)])
    return IndexFirst(table, where, [*args, *(a for c in checks for a in c[1])])


def typed(dialect: Dialect, type_: str, criteria: list[Criterion]) -> Condition:
    """`type = ? AND <conjunction>`. On SQLite, when a selective criterion drives, `+type`
    keeps SQLite (which has no statistics) from scanning the type index instead."""
    if not criteria:
        return "type = ?", [type_]
    sql, args = conjunction(criteria)
    drives = dialect == "sqlite" and min(criteria, key=lambda c: c.rank).drives
    return f"{'+' if drives else ''}type = ? AND {sql}", [type_, *args]


class SearchContext:
    """What building one search needs besides a parameter: dialect, terminology, and the
    caller's restriction (chains and `_has` see only what the caller may see)."""

    def __init__(
        self, dialect: Dialect, terminology: Any, restriction: Restriction | None = None
    ) -> None:
        self.dialect: Dialect = dialect
        self.terminology = terminology
        self.restriction = restriction

    def restricted(self, type_: str, criteria: list[Criterion], where: str) -> list[Criterion]:
        """`criteria` on `type_` plus the restriction's criteria for it (403 naming `where`
        when the type is not permitted at all)."""
        if self.restriction is None:
            return criteria
        from carebase.store.search_restriction import restriction_criteria

        visibility = self.restriction.require(type_, where)
        if visibility.unrestricted:
            return criteria
        # the restriction's own criteria are built unrestricted (they are the scope's words)
        plain = SearchContext(self.dialect, self.terminology)
        return [*criteria, *restriction_criteria(plain, type_, visibility)]


def unknown(name: str, why: str) -> UnknownParameter:
    """The 400 for a parameter or modifier this server does not know or support."""
    return UnknownParameter(f"Search parameter '{name}': {why}", location=name)


def _check_modifier(param: SearchParam, modifier: str, name: str) -> None:
    if modifier in _OWN_MODIFIERS.get(param.type, ()):
        return
    if modifier in _DELEGATED_MODIFIERS.get(param.type, ()):
        return
    if param.type == "reference" and modifier in (
        param.targets or get_definitions().resource_types
    ):
        return
    raise unknown(name, f"modifier ':{modifier}' is not valid for a {param.type} parameter")


def is_supported(param: SearchParam) -> bool:
    """Whether this engine can search on `param` (what /metadata lists)."""
    if param.code in _SPECIAL:
        return True
    return param.expression is not None and param.type in _TABLES


def _values(name: str, raw: str) -> list[str]:
    values = split_values(raw)
    for value in values:
        if value == "":
            raise bad_value(name, raw, "has an empty value")
    return values


def resolve_param(type_: str | None, code: str, name: str) -> SearchParam:
    """The search parameter `code` of `type_` (None: the common Resource ones), or 400."""
    if type_ is None:
        param = get_definitions().search_param("Resource", code)
        if code not in COMMON_PARAMETERS or param is None:
            raise unknown(
                name,
                "searching all types allows only the parameters every resource has ("
                + ", ".join(COMMON_PARAMETERS)
                + "); name the types with _type or search one type, e.g. /fhir/Patient?...",
            )
        return param
    param = get_definitions().search_param(type_, code)
    if param is None:
        raise unknown(
            name,
            f"unknown for {type_}; see /fhir/metadata for the parameters this server supports",
        )
    if not is_supported(param):
        raise unknown(name, f"the {param.type} parameter '{code}' is not supported for searching")
    return param


def _pkeys(type_: str | None, code: str) -> list[int]:
    if type_ is not None:
        return [param_key(type_, code)]
    return [param_key(t, code) for t in sorted(get_definitions().resource_types)]


def criterion(ctx: SearchContext, type_: str | None, name: str, raw: str) -> Criterion:
    """The criterion of one search parameter `name=raw` on resources of `type_` (None: any)."""
    from carebase.store import search_chain  # the chain module builds on this one

    if name.startswith("_has:") or name == "_has":
        if type_ is None:
            raise unknown(name, "_has needs a resource type to search")
        return search_chain.reverse_chain(ctx, type_, name, raw)
    if "." in name:
        if type_ is None:
            raise unknown(name, "chained parameters need a resource type to search")
        return search_chain.chain(ctx, type_, name, raw)
    code, _, modifier = name.partition(":")
    if code == "_type":
        raise unknown(name, "_type is only valid when searching all types (/fhir?_type=...)")
    if code in ("_id", "_lastUpdated", "_text", "_content", "_list"):
        if modifier:
            raise unknown(name, f"modifier ':{modifier}' is not supported on {code}")
        return _special(ctx, type_, code, name, _values(name, raw))
    param = resolve_param(type_, code, name)
    if modifier:
        _check_modifier(param, modifier, name)
    if modifier == "missing":
        return _missing(ctx, type_, param, name, raw)
    values = _values(name, raw)
    if modifier in _DELEGATED_MODIFIERS.get(param.type, ()):
        if type_ is None:
            raise unknown(name, f"modifier ':{modifier}' needs a resource type to search")
        cond = search_modifiers.modifier_condition(
            type_, param, modifier, values, name, ctx.terminology
        )
        rank = RANK_NEGATED if modifier == "not-in" else RANK_STRING
        return Criterion(rank, cond, rid_only=True)  # `rid [NOT] IN (...)`
    if param.type == "composite":
        assert type_ is not None
        return _composite(ctx, type_, param, name, values)
    return _plain(ctx, type_, param, name, modifier, values)


def _special(
    ctx: SearchContext, type_: str | None, code: str, name: str, values: list[str]
) -> Criterion:
    """`_id`, `_lastUpdated` (columns of `resource`), `_text`/`_content`, `_list`."""
    from carebase.store import search_chain

    if code == "_id":
        marks = ", ".join("?" * len(values))
        return Criterion(RANK_ID, (f"id IN ({marks})", [unescape(v) for v in values]))
    if code == "_lastUpdated":
        conds = [date_condition(name, v, "last_updated", "last_updated") for v in values]
        return Criterion(RANK_DATE, or_conditions(conds))
    if code == "_list":
        if ctx.restriction is not None:
            ctx.restriction.require("List", name)
        return search_chain.in_lists(type_, values)
    # words are usually selective, and FTS5/GIN find them fast: let full text drive
    condition = search_text.text_condition(ctx.dialect, code, values, name)
    return Criterion(RANK_STRING, condition, rid_only=True)  # `rid IN (...)`


def _plain(
    ctx: SearchContext,
    type_: str | None,
    param: SearchParam,
    name: str,
    modifier: str,
    values: list[str],
) -> Criterion:
    """string, token, date, number, quantity, uri and reference parameters."""
    ptype = param.type
    table = _TABLES[ptype]
    pkeys = _pkeys(type_, param.code)
    rank = {
        "token": RANK_EQUAL,
        "reference": RANK_EQUAL,
        "string": RANK_STRING,
        "uri": RANK_URI,
        "number": RANK_NUMBER,
        "quantity": RANK_NUMBER,
        "date": RANK_DATE,
    }[ptype]
    if ptype == "reference" and modifier == "identifier":
        assert type_ is not None
        conds = [token_condition(name, v) for v in values]
        inner = keyed([param_key(type_, f"{param.code}:identifier")], or_conditions(conds))
        return index_criterion(ctx.dialect, RANK_EQUAL, "idx_token", inner)
    conds = [_value_condition(ctx, ptype, modifier, name, v) for v in values]
    if modifier in ("contains", "text"):
        rank = RANK_WEAK
    return index_criterion(
        ctx.dialect, rank, table, keyed(pkeys, or_conditions(conds)), modifier == "not"
    )


def _value_condition(
    ctx: SearchContext, ptype: str, modifier: str, name: str, value: str
) -> Condition:
    if ptype == "string":
        return string_condition(ctx.dialect, modifier, value)
    if ptype == "token":
        return token_text_condition(value) if modifier == "text" else token_condition(name, value)
    if ptype == "date":
        return date_condition(name, value)
    if ptype == "number":
        prefix, text = split_prefix(value)
        number, lo, hi = number_bounds(name, text)
        return number_condition(prefix, number, lo, hi, "value")
    if ptype == "quantity":
        return quantity_condition(name, value)
    if ptype == "uri":
        return uri_condition(value)
    return reference_condition(value, modifier or None)


def _missing(
    ctx: SearchContext, type_: str | None, param: SearchParam, name: str, raw: str
) -> Criterion:
    """`:missing=true|false`: the resource has no / some value for the parameter."""
    if raw not in ("true", "false"):
        raise bad_value(name, raw, "must be true or false")
    missing = raw == "true"
    if param.type == "composite":
        assert type_ is not None
        return _composite_missing(ctx.dialect, type_, param, missing)
    table = _TABLES[param.type]
    pkeys = keyed(_pkeys(type_, param.code))
    if param.type == "reference":  # a reference by identifier only is there too
        by_id = keyed(_pkeys(type_, f"{param.code}:identifier"))
        either = [
            index_criterion(ctx.dialect, RANK_WEAK, t, k).as_check()
            for t, k in (("idx_reference", pkeys), ("idx_token", by_id))
        ]
        sql, args = or_conditions(either)
        return (
            Criterion(RANK_NEGATED, (f"NOT {sql}", args))
            if missing
            else Criterion(RANK_WEAK, (sql, args))
        )
    return index_criterion(ctx.dialect, RANK_WEAK, table, pkeys, missing)


def _components(type_: str, param: SearchParam) -> list[tuple[str, str]]:
    """(component code, type) of a composite parameter (as the indexer types them)."""
    out = []
    for comp_code, _expr in param.components:
        comp = get_definitions().search_param(type_, comp_code)
        out.append((comp_code, comp.type if comp else "token"))
    return out


def _composite(
    ctx: SearchContext, type_: str, param: SearchParam, name: str, values: list[str]
) -> Criterion:
    """`A$B` values of a composite parameter, against the rows `indexer._composite` writes."""
    comps = _components(type_, param)
    last_type = comps[-1][1]
    conds: list[Condition] = []
    for value in values:
        parts = split_unescaped(value, "$")
        if len(parts) != len(comps):
            raise bad_value(
                name,
                value,
                f"needs {len(comps)} components separated by '$' ("
                + "$".join(f"[{c}]" for c, _ in comps)
                + ")",
            )
        if last_type in _RANGE_TYPES and len(comps) > 1:
            head = "$".join(
                composite_part(name, ctype, part)
                for (_c, ctype), part in zip(comps[:-1], parts[:-1], strict=True)
            )
            last = _value_condition(ctx, last_type, "", name, parts[-1])
            conds.append(keyed([param_key(type_, f"{param.code}${head}")], last))
        else:
            key = "$".join(
                composite_part(name, ctype, part)
                for (_c, ctype), part in zip(comps, parts, strict=True)
            )
            conds.append(keyed([param_key(type_, param.code)], ("key = ?", [index_text(key)])))
    table = _TABLES[last_type] if last_type in _RANGE_TYPES and len(comps) > 1 else "idx_composite"
    return index_criterion(ctx.dialect, RANK_URI, table, or_conditions(conds))


def _composite_missing(
    dialect: Dialect, type_: str, param: SearchParam, missing: bool
) -> Criterion:
    """`:missing` on a composite. Rows of range-typed composites are keyed by the other
    components' values, so their presence is read from the component parameters' rows
    (present when every component parameter has a value)."""
    comps = _components(type_, param)
    if comps[-1][1] not in _RANGE_TYPES or len(comps) == 1:
        pkeys = keyed([param_key(type_, param.code)])
        return index_criterion(dialect, RANK_WEAK, "idx_composite", pkeys, missing)
    present = [
        index_criterion(dialect, RANK_WEAK, _TABLES[t], keyed([param_key(type_, c)])).as_check()
        for c, t in comps
    ]
    sql = "(" + " AND ".join(p[0] for p in present) + ")"
    args = [a for p in present for a in p[1]]
    if missing:
        return Criterion(RANK_NEGATED, (f"NOT {sql}", args))
    return Criterion(RANK_WEAK, (sql, args))


def _count_criteria(params: list[tuple[str, str]]) -> None:
    criteria = sum(
        1 + name.count(".") + name.count("_has:")
        for name, _raw in params
        if name not in RESULT_PARAMETERS
    )
    if criteria > MAX_SEARCH_CRITERIA:
        raise BadRequest(
            f"The search has {criteria} parameters (chain links and _has levels counted); at "
            f"most {MAX_SEARCH_CRITERIA} are allowed in one search (combine values of one "
            "parameter with commas, or narrow it first)"
        )
    values = sum(1 + raw.count(",") for name, raw in params if name not in RESULT_PARAMETERS)
    if values > MAX_SEARCH_VALUES:  # each value binds a few arguments; databases cap those
        raise BadRequest(
            f"The search has {values} parameter values; at most {MAX_SEARCH_VALUES} are "
            "allowed in one search, so split it into several"
        )


def searched_types(type_: str | None, params: list[tuple[str, str]]) -> list[str] | None:
    """The types searched: [type_], the `_type` list on system level, or None (all)."""
    listed = [raw for name, raw in params if name == "_type"]
    if type_ is not None:
        if listed:
            raise unknown("_type", "_type is only valid when searching all types (/fhir?_type=)")
        return [type_]
    if not listed:
        return None
    types: set[str] = set()
    for raw in listed:
        names = [unescape(v).strip() for v in split_values(raw)]
        for name in names:
            if name not in get_definitions().resource_types:
                raise bad_value("_type", raw, f"names '{name}', which is not an R4 resource type")
        types = set(names) if not types else types & set(names)
    return sorted(types)


def build_search(
    type_: str | None,
    params: list[tuple[str, str]],
    *,
    dialect: Literal["sqlite", "postgresql"] = "sqlite",
    lenient: bool = False,
    compartment: tuple[str, str] | None = None,
    terminology: Any = None,
    restriction: Restriction | None = None,
) -> SearchCriteria:
    """The WHERE clause selecting current resources of `type_` (None: all) matching `params`,
    inside `compartment` (e.g. ("Patient", "123")) when given, and only those `restriction`
    lets the caller see (a system-level search covers only the types it permits)."""
    from carebase.store.search_chain import compartment_criterion

    _count_criteria(params)
    for name, raw in params:
        if "\x00" in raw or "\x00" in name:  # no resource holds one; PostgreSQL refuses it
            raise bad_value(name, raw, "contains a NUL character")
    ctx = SearchContext(dialect, terminology, restriction)
    ignored: list[str] = []
    try:
        types = searched_types(type_, params)
    except UnknownParameter:
        if not lenient:
            raise
        ignored.append("_type")
        types = [type_] if type_ else None
    if compartment is not None and types is None:
        types = sorted({"Patient", *get_definitions().patient_compartment})
        if restriction is not None:
            types = [t for t in types if restriction.of(t) is not None]
    elif restriction is not None and types is None:
        types = sorted(restriction.types)
    searched: list[str | None] = list(types) if types is not None else [None]
    per_type: dict[str | None, list[Criterion]] = {t: [] for t in searched}
    for name, raw in params:
        if name in RESULT_PARAMETERS or name == "_type":
            continue
        try:
            built = {t: criterion(ctx, t, name, raw) for t in per_type}
        except UnknownParameter:
            if not lenient:
                raise
            ignored.append(name)
            continue
        for t, crit in built.items():
            per_type[t].append(crit)
    if compartment is not None:
        for t, crits in per_type.items():
            assert t is not None
            crits.append(compartment_criterion(dialect, t, compartment))
    if restriction is not None:
        for t in per_type:
            assert t is not None
            per_type[t] = ctx.restricted(t, per_type[t], t)
    if not per_type:  # the caller may see no type at all: nothing matches
        return SearchCriteria(["1 = 0"], [], tuple(ignored))
    where = ["deleted = 0"]
    args: list[Any] = []
    alternatives: list[Condition] = []
    for t, crits in per_type.items():
        alternatives.append(conjunction(crits) if t is None else typed(dialect, t, crits))
    if len(alternatives) == 1:
        sql, a = alternatives[0]
        if sql != "1 = 1":
            where.append(sql)
            args.extend(a)
    else:
        sql, a = or_conditions([(f"({s})", x) for s, x in alternatives])
        where.append(sql)
        args.extend(a)
    only = next(iter(per_type)) if len(per_type) == 1 else None
    fast = index_first(per_type[only]) if only is not None else None
    return SearchCriteria(where, args, tuple(ignored), fast)
