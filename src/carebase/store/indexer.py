"""Resource -> search index rows, from the official R4 SearchParameter expressions.

For each resource type a plan is built once: every search parameter's expression compiled to
typed branches (`fhir.search_expression`), each paired with the row writer for its value type
(`store.index_converters`). Indexing a resource then runs the plan: no parsing, no type
sniffing. `_id` and `_lastUpdated` are columns of the resource table and are not indexed here;
`_text`/`_content` (full text) and `special` parameters (`near`) are not indexed yet.

Composite parameters: see `index_values.composite_key` for the row format.
"""

from __future__ import annotations

import itertools
from typing import Any

from carebase.fhir.definitions.loader import Definitions, get_definitions
from carebase.fhir.search_expression import Runner, compile_for
from carebase.store.index_converters import Context, Convert, converter
from carebase.store.index_rows import IndexRows
from carebase.store.index_values import (
    composite_key,
    escape_part,
    normalize_string,
    token_key,
)

_SKIPPED = frozenset({"_id", "_lastUpdated", "_text", "_content"})
_RANGE_TYPES = ("quantity", "number", "date")

Entry = tuple[Runner, Convert]
#: (component parameter type, [(branch runner, row writer, runs on %resource)])
Component = tuple[str, list[tuple[Runner, Convert, bool]]]
#: (composite code, [(root branch runner, components in order, last component's keys)])
CompositePlan = tuple[str, list[tuple[Runner, list[Component], frozenset[str] | None]]]


class TypePlan:
    """The precompiled indexing work for one resource type.

    Most branches start by reading one top-level JSON key (`Observation.code`,
    `Observation.valueQuantity`); they are grouped under that key in `by_key`, so indexing
    walks the keys the resource actually has instead of trying every branch (choice types
    make most branches miss: `Observation.value` alone has eleven).
    """

    __slots__ = ("by_key", "composites", "entries", "params")

    def __init__(self) -> None:
        #: top-level key -> (key holds primitives, [(rest of the branch or None, writer)])
        self.by_key: dict[str, tuple[bool, list[tuple[Runner | None, Convert]]]] = {}
        #: branches that do not start with a key (boolean expressions, fallbacks)
        self.entries: list[Entry] = []
        self.composites: list[CompositePlan] = []
        #: (code, type, expression) of every indexed parameter, for introspection and tests
        self.params: list[tuple[str, str, str]] = []


class Indexer:
    """Builds index rows; one per server base URL (it decides which references are local)."""

    def __init__(self, base_url: str | None = None, defs: Definitions | None = None) -> None:
        self.defs = defs or get_definitions()
        self.ctx = Context(base_url, self.defs.resource_types)
        self._plans: dict[str, TypePlan] = {}

    def plan(self, resource_type: str) -> TypePlan:
        """The cached plan of a resource type (built on first use)."""
        plan = self._plans.get(resource_type)
        if plan is None:
            plan = self._plans[resource_type] = self._build(resource_type)
        return plan

    def _build(self, rtype: str) -> TypePlan:
        plan = TypePlan()
        params = self.defs.search_params(rtype)
        for code, sp in params.items():
            if code in _SKIPPED or sp.type == "special" or not sp.expression:
                continue
            compiled = compile_for(sp.expression, rtype)
            plan.params.append((code, sp.type, sp.expression))
            if sp.type != "composite":
                for b in compiled.branches:
                    conv = converter(sp.type, b.type, code, b.system, self.ctx)
                    if conv is None:
                        continue
                    if b.head is not None:
                        group = plan.by_key.setdefault(b.head[0], (b.head[1], []))
                        group[1].append((b.rest, conv))
                    else:
                        plan.entries.append((b.run, conv))
                continue
            roots = []
            for branch in compiled.branches:
                comps: list[Component] = []
                keys: frozenset[str] | None = None
                for comp_code, comp_expr in sp.components:
                    comp_param = params.get(comp_code)
                    ctype = comp_param.type if comp_param else "token"
                    relative = compile_for(comp_expr, rtype, branch.type)
                    comps.append((ctype, self._entries(ctype, relative.branches)))
                    heads = [b.head for b in relative.branches if not b.from_resource]
                    complete = len(heads) == len(relative.branches) and None not in heads
                    keys = frozenset(h[0] for h in heads if h) if complete else None
                roots.append((branch.run, comps, keys))
            plan.composites.append((code, roots))
        return plan

    def _entries(self, ptype: str, branches: Any) -> list[tuple[Runner, Convert, bool]]:
        out = []
        for b in branches:
            conv = converter(ptype, b.type, "", b.system, self.ctx)
            if conv is not None:
                out.append((b.run, conv, b.from_resource))
        return out

    def index(self, resource: dict[str, Any]) -> IndexRows:
        """All search index rows of `resource` (duplicates removed)."""
        rows = IndexRows()
        plan = self.plan(resource["resourceType"])
        by_key = plan.by_key
        for key, value in resource.items():
            group = by_key.get(key)
            if group is None:
                continue
            if value.__class__ is list:
                nodes = [v for v in value if v is not None] if group[0] else value
            else:
                nodes = [value]
            for rest, conv in group[1]:
                for item in rest(nodes) if rest is not None else nodes:
                    conv(item, rows)
        focus = [resource]
        for run, conv in plan.entries:
            for value in run(focus):
                conv(value, rows)
        for code, roots in plan.composites:
            for root_run, comps, keys in roots:
                for root in root_run(focus):
                    # cheap pre-check: the last component (the value) reads keys the root
                    # must have, and code-value-concept/-date/-string mostly miss
                    if keys is None or not keys.isdisjoint(root):
                        _composite(code, comps, [root], resource, rows)
        _dedupe(rows)
        return rows


def _composite(
    code: str, comps: list[Component], focus: list[Any], resource: dict[str, Any], rows: IndexRows
) -> None:
    # Evaluate the last component first: for Observation it is the value, which decides
    # which of the code-value-* composites apply at all, so most skip the code's work.
    found: list[IndexRows] = []
    for _ctype, entries in reversed(comps):
        scratch = None
        for run, conv, from_resource in entries:
            values = run([resource] if from_resource else focus)
            if values:
                if scratch is None:
                    scratch = IndexRows()
                for value in values:
                    conv(value, scratch)
        if scratch is None or not _any_rows(scratch):
            return
        found.append(scratch)
    found.reverse()
    last_type = comps[-1][0]
    if last_type in _RANGE_TYPES and len(comps) > 1:
        heads = _combos(comps[:-1], found[:-1])
        last = found[-1]
        for head in heads:
            param = f"{code}${head}"
            if last_type == "quantity":
                rows.quantity.extend((param, *r[1:]) for r in last.quantity)
            elif last_type == "number":
                rows.number.extend((param, *r[1:]) for r in last.number)
            else:
                rows.date.extend((param, *r[1:]) for r in last.date)
        return
    rows.composite.extend((code, key) for key in _combos(comps, found))


def _combos(comps: list[Component], found: list[IndexRows]) -> list[str]:
    choices = [_parts(ctype, scratch) for (ctype, _), scratch in zip(comps, found, strict=True)]
    return [composite_key(combo) for combo in itertools.product(*choices)]


def _parts(ctype: str, scratch: IndexRows) -> list[str]:
    """The canonical strings one component contributes (see `index_values.composite_key`)."""
    out: list[str] = []
    if ctype == "token":
        for _p, system, code, _d in scratch.token:
            if code is not None:
                out.append(token_key(system, code))
                out.append(token_key(None, code, with_system=False))
    elif ctype == "string":
        out = [escape_part(normalize_string(r[2])) for r in scratch.string]
    elif ctype == "reference":
        for _p, rtype, rid, _v, url in scratch.reference:
            target = f"{rtype}/{rid}" if rtype else url
            if target:
                out.append(escape_part(target))
    elif ctype == "uri":
        out = [escape_part(r[1]) for r in scratch.uri]
    elif ctype == "number":
        out = [repr(r[1]) for r in scratch.number]
    elif ctype == "quantity":
        out = [escape_part(f"{r[4]!r}|{r[1] or ''}|{r[2] or ''}") for r in scratch.quantity]
    elif ctype == "date":
        out = [f"{r[1]}..{r[2]}" for r in scratch.date]
    return list(dict.fromkeys(out))


def _any_rows(rows: IndexRows) -> bool:
    return bool(
        rows.token
        or rows.string
        or rows.date
        or rows.number
        or rows.quantity
        or rows.uri
        or rows.reference
        or rows.composite
    )


_ROW_LISTS = tuple(IndexRows.__dataclass_fields__)


def _dedupe(rows: IndexRows) -> None:
    # unions (`code | component.code`) and repeated codings can yield the same row twice
    for name in _ROW_LISTS:
        values = getattr(rows, name)
        if len(values) > 1:
            setattr(rows, name, list(dict.fromkeys(values)))


_indexers: dict[str | None, Indexer] = {}


def get_indexer(base_url: str | None = None) -> Indexer:
    """The shared Indexer for a base URL (plans are cached inside it)."""
    indexer = _indexers.get(base_url)
    if indexer is None:
        indexer = _indexers[base_url] = Indexer(base_url)
    return indexer


def index_resource(resource: dict[str, Any], base_url: str | None = None) -> IndexRows:
    """The search index rows of `resource`; `base_url` is this server's FHIR base, if known."""
    return get_indexer(base_url).index(resource)
