"""Criteria that follow references: chaining, reverse chaining (`_has`), `_list`, compartments.

References are indexed in `idx_reference` as (target_type, target_id) for local targets, so
following one is a lookup by `pkey` and target. Targets must be current resources
(`deleted = 0`). The nested SELECTs name the `resource` table unaliased: SQL resolves each
column to the nearest enclosing `resource`, so criteria built for the top level work nested.
"""

from __future__ import annotations

from carebase.errors import BadRequest
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.schema import param_key
from carebase.store.search_sql import (
    COMMON_PARAMETERS,
    RANK_EQUAL,
    Criterion,
    SearchContext,
    UnknownParameter,
    criterion,
    index_criterion,
    keyed,
    or_conditions,
    typed,
    unknown,
)
from carebase.store.search_values import Condition, Dialect, unescape

_HAS_FORM = (
    "expected _has:[type]:[reference parameter of that type]:[parameter]=[value], "
    "e.g. Patient?_has:Observation:patient:code=1234-5"
)


def _current(
    ctx: SearchContext, type_: str, crit: Criterion, name: str, column: str = "id"
) -> Condition:
    """`SELECT id` (or `rid`) of current resources of `type_` meeting `crit` (and visible to
    the caller when the search is restricted: a chain or `_has` reveals nothing hidden)."""
    sql, args = typed(ctx.dialect, type_, ctx.restricted(type_, [crit], name))
    return f"SELECT {column} FROM resource WHERE {sql} AND deleted = 0", args


def _nested(ctx: SearchContext, type_: str, full: str, rest: str, raw: str) -> Criterion:
    """The criterion of the chain's remainder `rest`; its errors name the whole parameter."""
    try:
        return criterion(ctx, type_, rest, raw)
    except BadRequest as exc:
        if f"'{full}'" in exc.message:
            raise
        raise type(exc)(f"In search parameter '{full}': {exc.message}", location=full) from None


def _defines(type_: str, code: str) -> bool:
    if code in COMMON_PARAMETERS or code == "_has":
        return True
    return get_definitions().search_param(type_, code) is not None


def chain(ctx: SearchContext, type_: str, name: str, raw: str) -> Criterion:
    """`link[:Type].rest=raw`: a reference parameter whose target meets `rest=raw`."""
    link, _, rest = name.partition(".")
    code, _, type_modifier = link.partition(":")
    if not rest or not code:
        raise BadRequest(
            f"Search parameter '{name}': a chain is [reference parameter][:Type].[parameter]",
            location=name,
        )
    param = get_definitions().search_param(type_, code)
    if param is None:
        raise unknown(name, f"'{code}' is not a search parameter of {type_}")
    if param.type != "reference":
        raise unknown(name, f"'{code}' is a {param.type} parameter; only references chain")
    targets = param.targets or tuple(sorted(get_definitions().resource_types))
    next_code = rest.split(".", 1)[0].split(":", 1)[0]
    if type_modifier:
        if type_modifier not in targets:
            raise unknown(
                name, f"'{code}' of {type_} does not refer to {type_modifier} (it refers to "
                + ", ".join(targets) + ")",
            )  # fmt: skip
        candidates = [type_modifier]
    else:
        candidates = [t for t in targets if _defines(t, next_code)]
        if not candidates:
            raise unknown(
                name,
                f"none of the types '{code}' refers to ({', '.join(targets)}) has a search "
                f"parameter '{next_code}'",
            )
    alternatives: list[Condition] = []
    rank = RANK_EQUAL
    refused: list[UnknownParameter] = []
    if ctx.restriction is not None and not type_modifier:
        # a chain without a type goes only to the target types the caller may search
        permitted = [t for t in candidates if ctx.restriction.of(t) is not None]
        if not permitted:
            ctx.restriction.require(candidates[0], name)
        candidates = permitted
    for target in candidates:
        try:
            inner = _nested(ctx, target, name, rest, raw)
        except UnknownParameter as exc:
            # a target type where the rest of a longer chain leads nowhere is no candidate
            if type_modifier:
                raise
            refused.append(exc)
            continue
        rank = max(rank, inner.rank)
        select, args = _current(ctx, target, inner, name)
        alternatives.append((f"(target_type = ? AND target_id IN ({select}))", [target, *args]))
    if not alternatives:
        raise refused[0]
    inner_sql = keyed([param_key(type_, code)], or_conditions(alternatives))
    return index_criterion(ctx.dialect, rank, "idx_reference", inner_sql)


def reverse_chain(ctx: SearchContext, type_: str, name: str, raw: str) -> Criterion:
    """`_has:Type:ref:rest=raw`: some current `Type` whose `ref` refers to this resource
    meets `rest=raw` (`rest` may itself be a `_has`, a chain, or carry a modifier)."""
    pieces = name.split(":", 3)
    if len(pieces) < 4 or not all(pieces[1:]):
        raise BadRequest(f"Search parameter '{name}': {_HAS_FORM}", location=name)
    _has, source, ref, rest = pieces
    if source not in get_definitions().resource_types:
        raise unknown(name, f"'{source}' is not a resource type; {_HAS_FORM}")
    param = get_definitions().search_param(source, ref)
    if param is None or param.type != "reference":
        raise unknown(name, f"'{ref}' is not a reference parameter of {source}; {_HAS_FORM}")
    if param.targets and type_ not in param.targets:
        raise unknown(name, f"'{ref}' of {source} never refers to {type_}; {_HAS_FORM}")
    if ctx.restriction is not None:
        ctx.restriction.require(source, name)
    inner = _nested(ctx, source, name, rest, raw)
    sources, args = _current(ctx, source, inner, name, "rid")
    # SQLite: find the sources' rows by rid, not every row of the parameter by pkey
    pkey = "+pkey" if ctx.dialect == "sqlite" else "pkey"
    select = (
        f"SELECT target_id FROM idx_reference WHERE {pkey} = ? AND target_type = ? "
        f"AND rid IN ({sources})"
    )
    return Criterion(inner.rank, (f"id IN ({select})", [param_key(source, ref), type_, *args]))


def in_lists(type_: str | None, values: list[str]) -> Criterion:
    """`_list=id,...`: the resource is an item (`List.entry.item`) of one of these Lists."""
    ids = [unescape(v) for v in values]
    lists = (
        "rid IN (SELECT rid FROM resource WHERE type = 'List' AND deleted = 0 AND id IN ("
        + ", ".join("?" * len(ids))
        + "))"
    )
    if type_ is None:
        sql = (
            "(type, id) IN (SELECT target_type, target_id FROM idx_reference"
            f" WHERE pkey = ? AND {lists})"
        )
        return Criterion(RANK_EQUAL, (sql, [param_key("List", "item"), *ids]))
    sql = (
        "id IN (SELECT target_id FROM idx_reference WHERE pkey = ? AND target_type = ? AND "
        f"{lists})"
    )
    return Criterion(RANK_EQUAL, (sql, [param_key("List", "item"), type_, *ids]))


def compartment_criterion(dialect: Dialect, type_: str, compartment: tuple[str, str]) -> Criterion:
    """The resource is in the compartment (`("Patient", id)`), per R4's Patient compartment:
    it refers to the patient through one of its type's compartment parameters (the Patient
    itself is in its own compartment)."""
    kind, owner = compartment
    if kind != "Patient":
        raise BadRequest(
            f"Compartment '{kind}' is not supported; this server searches the Patient "
            "compartment (Patient/[id]/[type])",
            location=kind,
        )
    codes = get_definitions().patient_compartment.get(type_)
    if codes is None and type_ != "Patient":
        raise BadRequest(
            f"{type_} is not in the Patient compartment (R4 CompartmentDefinition patient)",
            location=type_,
        )
    refs = index_criterion(
        dialect,
        RANK_EQUAL,
        "idx_reference",
        keyed(
            [param_key(type_, c) for c in codes or ()],
            ("target_id = ? AND target_type = 'Patient'", [owner]),
        ),
    )
    if type_ != "Patient":
        return refs
    if not codes:
        return Criterion(RANK_EQUAL, ("id = ?", [owner]))
    sql, args = refs.driver
    return Criterion(RANK_EQUAL, (f"(id = ? OR {sql})", [owner, *args]))
