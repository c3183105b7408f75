"""Turning parsed JSON values (Bundles or single resources) into resources to load.

A transaction or batch Bundle becomes its POST and PUT entries, each with a final id and
its references rewritten the way the server would process the Bundle:

- an entry with a `urn:uuid:` fullUrl gets that uuid as id, so importing the same Bundle
  again finds the same resources (idempotent); a PUT keeps its URL's id; a POST without
  either keeps its resource's id, else gets a uuid derived from its content;
- references to another entry's fullUrl become `Type/id`; a `urn:uuid:` that is no entry of
  this Bundle is looked up among stored resources (Synthea's patient Bundles refer to the
  practitioners of its practitioner Bundle that way); conditional references
  (`Practitioner?identifier=...`) and `ifNoneExist` conditional creates are resolved with the
  store's search;
- DELETE, PATCH, GET and HEAD entries, and references that resolve to nothing or to
  several resources, are rejected with the reason.

A reference that resolves to nothing may point into a file not imported yet, so the
importer defers such a Bundle (`Deferred`) and expands it again after every other input
(`final=True`), when what is still unresolved is rejected. Collections (and searchsets,
histories) contribute their entries' resources; any other value is one resource.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from carebase.data.loader import Origin
from carebase.errors import CarebaseError, Issue
from carebase.fhir import json_io
from carebase.fhir.bundle import (
    CONDITIONAL_REF_RE,
    BundleEntry,
    RequestUrl,
    full_url_aliases,
    is_valid_id,
    parse_bundle,
    rewrite_references,
)
from carebase.store.base import Store

#: Bundle types whose entries are imported as resources of their own.
ENTRY_BUNDLES = ("transaction", "batch", "collection", "searchset", "history")
#: Namespace of the ids given to POST entries that carry no id of their own.
_CONTENT_IDS = uuid.UUID("8f0c5a52-3f1e-4d7a-9a57-6c1d2b7e4a10")
_URN_RE = re.compile(rb'"(urn:uuid:[0-9a-fA-F-]{36})"')
_CACHE_LIMIT = 100_000  # resolved references remembered; bounds memory on huge imports


@dataclass(frozen=True, slots=True)
class Load:
    """A resource to hand to the loader."""

    resource: dict[str, Any]
    origin: Origin

    def __reduce__(self) -> tuple[type[Load], tuple[dict[str, Any], Origin]]:
        return Load, (self.resource, self.origin)  # as Origin.__reduce__: much faster


@dataclass(frozen=True, slots=True)
class Existing:
    """A conditional create satisfied by a stored resource (nothing to write)."""

    resource_type: str
    origin: Origin


@dataclass(frozen=True, slots=True)
class Refused:
    """A record that cannot be imported, and why."""

    origin: Origin
    issues: list[Issue]
    resource: object = None


class Deferred(Exception):
    """The Bundle refers to resources not stored yet: expand it again at the end."""


Planned = Load | Existing | Refused


def _error(code: str, text: str, expression: str = "") -> list[Issue]:
    return [Issue("error", code, text, [expression] if expression else [])]


class Resolver(Protocol):
    """What planning asks of the store (ReferenceResolver; workers use one that has none)."""

    def by_uuid(self, urn: str) -> str | None:
        """`Type/id` of the stored resource with the uuid of `urn` as id, or None."""

    def by_criteria(self, reference: str) -> str | None:
        """`Type/id` of the one stored match of `Type?criteria`, or None."""


class ReferenceResolver:
    """Finds stored resources for `urn:uuid:` references and conditional criteria.

    `before_miss` is called before a failed lookup is retried, so the loader can commit
    what it has queued (a conditional reference may name a resource of this very import).
    Answers are cached, and a miss is never cached (it may be loaded later).
    """

    def __init__(self, store: Store, before_miss: Callable[[], bool]) -> None:
        self._store = store
        self._before_miss = before_miss  # returns True when it wrote something
        self._cache: dict[str, str] = {}

    def by_uuid(self, urn: str) -> str | None:
        """`Type/id` of the stored resource whose id is the uuid of `urn`, or None."""
        return self._find(urn, None, [("_id", urn.removeprefix("urn:uuid:"))])

    def by_criteria(self, reference: str) -> str | None:
        """`Type/id` of the one stored match of `Type?criteria`; None when nothing matches.
        Raises CarebaseError when several match or the criteria are not a valid search."""
        match = CONDITIONAL_REF_RE.fullmatch(reference)
        if match is None:
            return None
        params = parse_qsl(match.group(2), keep_blank_values=True)
        return self._find(reference, match.group(1), params)

    def _find(self, key: str, type_: str | None, params: list[tuple[str, str]]) -> str | None:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found = self._search(type_, params)
        if found is None and self._before_miss():
            found = self._search(type_, params)
        if found is not None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _search(self, type_: str | None, params: list[tuple[str, str]]) -> str | None:
        page = self._store.search(type_, params, count=2, total="none")
        if len(page.entries) > 1:
            raise CarebaseError(
                f"{type_ or 'the reference'}?{'&'.join(f'{k}={v}' for k, v in params)}"
                " matches more than one resource"
            )
        if not page.entries:
            return None
        return f"{page.entries[0].type}/{page.entries[0].id}"


def plan(
    value: dict[str, Any], origin: Origin, resolver: Resolver, *, final: bool
) -> Iterator[Planned]:
    """What to do with one parsed JSON object: its entries if it is a Bundle of an imported
    type, else the object itself. Raises Deferred (before yielding anything) when a
    reference resolves to nothing yet and this is not the `final` attempt."""
    if value.get("resourceType") != "Bundle" or value.get("type") not in ENTRY_BUNDLES:
        yield Load(value, origin)
        return
    if value["type"] in ("transaction", "batch"):
        yield from _plan_transaction(value, origin, resolver, final)
    else:
        yield from _plan_collection(value, origin, resolver, final)


def _plan_transaction(
    bundle: dict[str, Any], origin: Origin, resolver: Resolver, final: bool
) -> Iterator[Planned]:
    try:
        _kind, entries = parse_bundle(bundle)
    except CarebaseError as exc:
        yield Refused(origin, exc.issues)
        return
    mapping: dict[str, str] = {}
    outcomes: list[Planned] = []
    for entry in entries:
        where = _at(origin, entry.index)
        try:
            outcome, target = _plan_entry(entry, where, resolver, final)
        except CarebaseError as exc:
            outcome, target = Refused(where, _located(exc.issues, entry.location)), None
        if target is not None and entry.full_url:
            for alias in full_url_aliases(entry.full_url):
                mapping[alias] = target
        outcomes.append(outcome)
    pairs = list(zip(outcomes, entries, strict=True))
    yield from _rewritten(pairs, bundle, mapping, resolver, final)


def _plan_entry(
    entry: BundleEntry, where: Origin, resolver: Resolver, final: bool
) -> tuple[Planned, str | None]:
    """The plan of one transaction entry and the `Type/id` its fullUrl stands for."""
    if entry.method not in ("POST", "PUT"):
        text = (
            f"{entry.method} entries are not imported (only POST and PUT create or update"
            " resources); apply them through the REST API"
        )
        return Refused(
            where, _error("not-supported", text, f"{entry.location}.request.method")
        ), None
    resource = entry.resource
    assert resource is not None  # parse_bundle requires it for POST and PUT
    type_ = resource.get("resourceType")
    if not isinstance(type_, str):
        return Refused(
            where,
            _error(
                "required",
                "the entry's resource has no resourceType",
                f"{entry.location}.resource.resourceType",
            ),
            resource,
        ), None
    if entry.method == "POST" and entry.if_none_exist:
        existing = resolver.by_criteria(f"{type_}?{entry.if_none_exist}")
        if existing is not None:
            return Existing(type_, where), existing
    id_ = _target_id(entry, resource, resolver)
    if entry.target.type not in (None, type_):
        text = f"request.url names {entry.target.type} but the resource is a {type_}"
        return Refused(
            where, _error("invalid", text, f"{entry.location}.request.url"), resource
        ), None
    resource["id"] = id_
    return Load(resource, where), f"{type_}/{id_}"


def _target_id(entry: BundleEntry, resource: dict[str, Any], resolver: Resolver) -> str:
    """The id an entry's resource gets (see the module docstring for the rules)."""
    if entry.method == "PUT":
        if entry.target.has_query:  # conditional update: the one match, else a new resource
            found = resolver.by_criteria(entry.url)
            if found is not None:
                return found.split("/", 1)[1]
        elif entry.target.id:
            return entry.target.id
    full_url = entry.full_url or ""
    if full_url.startswith("urn:uuid:") and is_valid_id(full_url[9:]):
        return full_url[9:]
    own = resource.get("id")
    if isinstance(own, str) and own:
        return own
    aliases = full_url_aliases(full_url) if full_url else []
    if len(aliases) > 1:
        return aliases[1].split("/", 1)[1]
    return str(uuid.uuid5(_CONTENT_IDS, json_io.dumps(resource).decode()))


def _plan_collection(
    bundle: dict[str, Any], origin: Origin, resolver: Resolver, final: bool
) -> Iterator[Planned]:
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        yield Refused(origin, _error("structure", "Bundle.entry must be an array", "Bundle.entry"))
        return
    mapping: dict[str, str] = {}
    pairs: list[tuple[Planned, BundleEntry]] = []
    for i, raw in enumerate(raw_entries):
        where = _at(origin, i)
        resource = raw.get("resource") if isinstance(raw, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            text = "the entry holds no resource to import"
            yield Refused(where, _error("required", text, f"Bundle.entry[{i}].resource"), resource)
            continue
        full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
        entry = BundleEntry(i, "POST", "", RequestUrl(), full_url, resource)
        resource["id"] = _target_id(entry, resource, resolver)
        if full_url:
            for alias in full_url_aliases(full_url):
                mapping[alias] = f"{resource['resourceType']}/{resource['id']}"
        pairs.append((Load(resource, where), entry))
    yield from _rewritten(pairs, bundle, mapping, resolver, final)


def _rewritten(
    pairs: list[tuple[Planned, BundleEntry]],
    bundle: dict[str, Any],
    mapping: dict[str, str],
    resolver: Resolver,
    final: bool,
) -> Iterator[Planned]:
    """The plans with every Load's references rewritten; Deferred (before anything is
    yielded) when some reference resolves to nothing and this is not the final attempt."""
    # urn:uuid references to no entry of this Bundle: one regex over the serialised Bundle
    # finds them (C speed), rather than another walk over every resource.
    missing: set[str] = set()
    for raw in set(_URN_RE.findall(json_io.dumps(bundle))):
        urn = raw.decode()
        if urn not in mapping:
            found = resolver.by_uuid(urn)
            if found is None:
                missing.add(urn)
            else:
                mapping[urn] = found
    unresolved: list[str] = []

    def conditional(reference: str) -> str:
        try:
            found = resolver.by_criteria(reference)
        except CarebaseError:
            found = None
        if found is None:
            unresolved.append(reference)
            return reference
        mapping[reference] = found
        return found

    results: list[Planned] = []
    for outcome, entry in pairs:
        if not isinstance(outcome, Load):
            results.append(outcome)
            continue
        unresolved.clear()
        rewrite_references(outcome.resource, mapping, conditional)
        dangling = list(unresolved)
        if missing:
            body = json_io.dumps(outcome.resource).decode()
            dangling += sorted(urn for urn in missing if f'"{urn}"' in body)
        if dangling and not final:
            raise Deferred()
        if dangling:
            text = (
                f"reference {dangling[0]} resolves to no entry of this Bundle and no stored"
                " resource (or to several)"
            )
            results.append(
                Refused(outcome.origin, _error("not-found", text, entry.location), outcome.resource)
            )
        else:
            results.append(outcome)
    yield from results


def _at(origin: Origin, index: int) -> Origin:
    location = f"{origin.location} entry[{index}]" if origin.location else f"entry[{index}]"
    return Origin(origin.source, location)


def _located(issues: list[Issue], where: str) -> list[Issue]:
    return [Issue(i.severity, i.code, i.diagnostics, i.expression or [where]) for i in issues]
