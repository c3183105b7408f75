"""`_include` and `_revinclude`: the resources a page's matches reference, or that reference them.

`_include=Type:param[:Target]` adds what the `Type` resources of the page point to through
the reference parameter `param` (only `Target` ones when given); `Type:*` follows every
reference parameter of `Type`. `_revinclude=Type:param[:Target]` adds the `Type` resources
whose `param` points to a resource of the page (of type `Target` when given). With
`:iterate` a rule is applied again to what was just included, until nothing new turns up
(at most `MAX_ROUNDS` times). Each resource appears once: a match is never repeated as an
include, deleted resources are never included, and at most `cap` are added per page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from carebase.errors import BadRequest
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import StoredResource
from carebase.store.body_cipher import BodyCipher
from carebase.store.schema import param_key
from carebase.store.sql_rows import row_to_stored

#: How many times `:iterate` rules are applied to newly included resources, at most.
MAX_ROUNDS = 10
#: Row ids bound in one IN list (well under SQLite's and PostgreSQL's parameter limits).
_CHUNK = 500
_INCLUDE_NAMES = {
    "_include": (False, False),
    "_include:iterate": (False, True),
    "_include:recurse": (False, True),  # the STU3 name of :iterate
    "_revinclude": (True, False),
    "_revinclude:iterate": (True, True),
    "_revinclude:recurse": (True, True),
}

#: Runs one SQL statement (`?` placeholders) and returns its rows.
Query = Callable[[str, list[Any]], list[Any]]


@dataclass(frozen=True, slots=True)
class IncludeRule:
    """One `_include`/`_revinclude` value: the referring type, its reference parameters' keys,
    the target type (None: any), direction and whether it iterates."""

    parameter: str  # `_include`, `_revinclude:iterate`, ...
    source: str
    pkeys: tuple[int, ...]
    target: str | None
    reverse: bool
    iterate: bool


def is_include_parameter(name: str) -> bool:
    """Whether `name` is `_include`/`_revinclude`, with or without `:iterate`."""
    return name in _INCLUDE_NAMES


def parse_rule(name: str, value: str) -> IncludeRule:
    """The rule of one `_include`/`_revinclude` parameter; 400 naming it when invalid."""
    reverse, iterate = _INCLUDE_NAMES[name]
    defs = get_definitions()

    def bad(why: str) -> BadRequest:
        return BadRequest(f"{name}={value!r}: {why}", location=name)

    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise bad("expected SourceType:parameter or SourceType:parameter:TargetType")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if source not in defs.resource_types:
        raise bad(f"'{source}' is not a resource type")
    references = {
        c: p
        for c, p in defs.search_params(source).items()
        if p.type == "reference" and p.expression
    }
    if code == "*":
        if reverse:
            raise bad("_revinclude needs a parameter name, not *")
        codes = sorted(references)
        allowed = {t for p in references.values() for t in (p.targets or defs.resource_types)}
    else:
        param = references.get(code)
        if param is None:
            raise bad(f"'{code}' is not a reference search parameter of {source}")
        codes = [code]
        allowed = set(param.targets or defs.resource_types)
    if target is not None and target not in allowed:
        raise bad(f"'{target}' is not a target type of {source}:{code}")
    return IncludeRule(
        name, source, tuple(param_key(source, c) for c in codes), target, reverse, iterate
    )


def _chunks(rids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(rids), _CHUNK):
        yield rids[start : start + _CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _related(query: Query, rule: IncludeRule, rids: list[int], limit: int) -> list[int]:
    """Row ids of current resources `rule` reaches from the rows `rids` (at most `limit`)."""
    keys = _marks(len(rule.pkeys))
    found: list[int] = []
    for chunk in _chunks(rids):
        if rule.reverse:  # who refers to these rows
            sql = (
                "SELECT x.rid FROM idx_reference x JOIN resource t"
                " ON x.target_type = t.type AND x.target_id = t.id"
                f" WHERE t.rid IN ({_marks(len(chunk))}) AND x.pkey IN ({keys})"
            )
            args: list[Any] = [*chunk, *rule.pkeys]
            if rule.target is not None:
                sql += " AND t.type = ?"
                args.append(rule.target)
        else:  # what these rows refer to
            sql = (
                "SELECT t.rid FROM idx_reference x JOIN resource t"
                " ON t.type = x.target_type AND t.id = x.target_id"
                f" WHERE x.rid IN ({_marks(len(chunk))}) AND x.pkey IN ({keys})"
            )
            args = [*chunk, *rule.pkeys]
            if rule.target is not None:
                sql += " AND x.target_type = ?"
                args.append(rule.target)
        sql = f"SELECT rid FROM resource WHERE deleted = 0 AND rid IN ({sql}) ORDER BY rid LIMIT ?"
        found.extend(row[0] for row in query(sql, [*args, limit]))
    return found


def collect_includes(
    query: Query,
    rules: list[IncludeRule],
    match_rids: list[int],
    cap: int,
    cipher: BodyCipher | None = None,
    admit: Callable[[list[int]], list[int]] | None = None,
) -> tuple[list[StoredResource], bool]:
    """The resources `rules` add to a page whose matches are `match_rids`, in rule order,
    each once and never a match; and whether `cap` cut them short. `admit` keeps only the
    row ids the caller may read: the others are neither added, counted nor followed."""
    seen = set(match_rids)
    added: list[int] = []
    truncated = False
    frontier = list(match_rids)
    active = rules
    for _round in range(MAX_ROUNDS + 1):
        new: list[int] = []
        for rule in active:
            room = cap - len(added) - len(new)
            related = _related(query, rule, frontier, room + len(seen) + 1)
            if admit is not None:
                related = admit([rid for rid in related if rid not in seen])
            for rid in related:
                if rid in seen:
                    continue
                if room <= 0:
                    truncated = True
                    break
                seen.add(rid)
                new.append(rid)
                room -= 1
        added.extend(new)
        active = [rule for rule in rules if rule.iterate]
        if not new or not active or truncated:
            break
        frontier = new
    return _load(query, added, cipher), truncated


def _load(query: Query, rids: list[int], cipher: BodyCipher | None) -> list[StoredResource]:
    """The current versions of rows `rids`, in that order (bodies opened with `cipher`)."""
    by_rid: dict[int, StoredResource] = {}
    for chunk in _chunks(rids):
        rows = query(
            "SELECT rid, type, id, version, last_updated, deleted, body FROM resource"
            f" WHERE rid IN ({_marks(len(chunk))})",
            list(chunk),
        )
        for row in rows:
            by_rid[row[0]] = row_to_stored(row[1:], cipher)
    return [by_rid[rid] for rid in rids if rid in by_rid]
