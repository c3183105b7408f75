"""History and search interactions: pages from the store as history/searchset Bundles.

Stored resource bytes are embedded with `orjson.Fragment`, so a page is serialised without
re-parsing its resources (unless `_summary`/`_elements` ask for a reshaped copy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import orjson

from carebase.api.interactions import CONTROL_PARAMS, require_id, require_type
from carebase.api.results import Context, Result, instant, parse_instant
from carebase.errors import BadRequest, Issue, NotFound
from carebase.fhir import operation_outcome
from carebase.store.base import StoredResource, TotalMode

_HISTORY_PARAMS = frozenset({"_since", "_at", "_count", "_cursor", "_format", "_pretty"})
_TOTAL_MODES = ("none", "estimate", "accurate")
_HISTORY_STATUS = {"create": "201 Created", "update": "200 OK", "delete": "204 No Content"}
_HISTORY_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}

#: Turns a stored body into the JSON value to embed (identity Fragment, or a summary).
Shaper = Callable[[bytes], object]


def fragment(body: bytes) -> object:
    """Embed stored bytes verbatim."""
    return orjson.Fragment(body)


def page_size(ctx: Context, value: str | None) -> int:
    """`_count` clamped to the configured maximum (default when absent)."""
    if value is None or value == "":
        return ctx.settings.default_page_size
    if not (value.isascii() and value.isdigit()):  # str.isdigit() alone accepts '²'
        raise BadRequest(f"_count={value!r} must be a non-negative integer", location="_count")
    if len(value.lstrip("0")) > 9:  # int() refuses over 4,300 digits; any such is the max
        return ctx.settings.max_page_size
    return min(int(value), ctx.settings.max_page_size)


def _link(relation: str, url: str) -> dict[str, str]:
    return {"relation": relation, "url": url}


def _page_url(path_url: str, params: list[tuple[str, str]], cursor: str | None) -> str:
    query = [(k, v) for k, v in params if k != "_cursor"]
    if cursor is not None:
        query.append(("_cursor", cursor))
    return f"{path_url}?{urlencode(query)}" if query else path_url


def history(
    ctx: Context,
    type_: str | None,
    id_: str | None,
    params: list[tuple[str, str]],
    path_url: str,
) -> Result:
    """History at instance (type+id), type (type) or system level, newest first, paged."""
    if type_ is not None:
        require_type(type_)
    if id_ is not None:
        require_id(id_)
    values: dict[str, str] = {}
    for name, value in params:
        if name not in _HISTORY_PARAMS:
            raise BadRequest(
                f"Unknown history parameter {name!r}; supported: _since, _at, _count",
                location=name,
            )
        values[name] = value
    since = parse_instant(values["_since"], "_since") if "_since" in values else None
    at = parse_instant(values["_at"], "_at") if "_at" in values else None
    restriction = ctx.guard.history(ctx.store, type_, id_)
    page = ctx.store.history(
        type_,
        id_,
        since=since,
        at=at,
        count=page_size(ctx, values.get("_count")),
        cursor=values.get("_cursor"),
        restriction=restriction,
    )
    ctx.guard.saw_all(page.entries)
    unknown = (
        id_ is not None
        and not page.entries
        and values.get("_cursor") is None
        and ctx.store.read(type_ or "", id_) is None
    )
    if unknown:
        raise NotFound(f"{type_}/{id_} is not known")
    entries = [_history_entry(ctx, stored) for stored in page.entries]
    visible = [(k, v) for k, v in params if k not in ("_format", "_pretty")]
    links = [_link("self", _page_url(path_url, visible, values.get("_cursor")))]
    if page.next_cursor is not None:
        links.append(_link("next", _page_url(path_url, visible, page.next_cursor)))
    bundle = result_bundle("history", page.total, links, entries)
    return Result(200, body=bundle)


def _history_entry(ctx: Context, stored: StoredResource) -> dict[str, object]:
    entry: dict[str, object] = {"fullUrl": ctx.url_of(stored)}
    if stored.body is not None and not stored.deleted:
        entry["resource"] = orjson.Fragment(stored.body)
    interaction = "delete" if stored.deleted else stored.interaction
    method = _HISTORY_METHOD.get(interaction, "PUT")
    entry["request"] = {
        "method": method,
        "url": stored.type if method == "POST" else f"{stored.type}/{stored.id}",
    }
    entry["response"] = {
        "status": _HISTORY_STATUS.get(interaction, "200 OK"),
        "etag": stored.etag,
        "lastModified": instant(stored.last_updated),
    }
    return entry


def search(
    ctx: Context,
    type_: str | None,
    params: list[tuple[str, str]],
    path_url: str,
    shaper: Shaper = fragment,
    *,
    lenient: bool = False,
    compartment: tuple[str, str] | None = None,
) -> Result:
    """Search (GET or POST _search): a searchset Bundle of the matches, paged by cursor.

    Matches come first (`search.mode` match, reshaped by `shaper` for `_summary`/
    `_elements`), then `_include`/`_revinclude` resources whole (mode include), then, when
    the per-page include cap was reached, an OperationOutcome saying so (mode outcome).
    """
    if type_ is not None:
        require_type(type_)
    count_value: str | None = None
    cursor: str | None = None
    total: TotalMode = "accurate"
    summary_count = False
    criteria: list[tuple[str, str]] = []
    for name, value in params:
        if name == "_count":
            count_value = value
        elif name == "_cursor":
            cursor = value
        elif name == "_total":
            if value not in _TOTAL_MODES:
                raise BadRequest(
                    f"_total={value!r} is not valid; use none, estimate or accurate",
                    location="_total",
                )
            total = value  # type: ignore[assignment]
        elif name == "_summary" and value == "count":
            summary_count = True
        elif name not in CONTROL_PARAMS:
            criteria.append((name, value))
    if summary_count and total == "none":
        total = "accurate"
    count = 0 if summary_count else page_size(ctx, count_value)
    restriction, include_restriction = ctx.guard.search(type_, params)
    page = ctx.store.search(
        type_,
        criteria,
        count=count,
        cursor=cursor,
        total=total,
        lenient=lenient,
        compartment=compartment,
        max_include=ctx.settings.max_include,
        restriction=restriction,
        include_restriction=include_restriction,
    )
    ctx.guard.saw_all(page.entries)
    ctx.guard.saw_all(page.included)
    entries: list[dict[str, object]] = []
    for stored, resource, mode in [
        *((s, shaper, "match") for s in page.entries),
        *((s, fragment, "include") for s in page.included),
    ]:
        if stored.body is not None:
            entry = {"fullUrl": ctx.url_of(stored), "resource": resource(stored.body)}
            entries.append({**entry, "search": {"mode": mode}})
    if page.includes_truncated:
        warning = Issue(
            "warning",
            "too-costly",
            f"Included resources were cut off at {ctx.settings.max_include} per page "
            "(CAREBASE_MAX_INCLUDE); request smaller pages (_count) to get them all",
        )
        entries.append(
            {"resource": operation_outcome.outcome([warning]), "search": {"mode": "outcome"}}
        )
    visible = [(k, v) for k, v in params if k not in page.ignored]
    links = paging_links(path_url, visible, cursor, page.next_cursor, page.previous_cursor)
    bundle = result_bundle("searchset", page.total, links, entries)
    return Result(200, body=bundle)


def paging_links(
    path_url: str,
    params: list[tuple[str, str]],
    current: str | None,
    next_cursor: str | None,
    previous_cursor: str | None,
) -> list[dict[str, str]]:
    """Paging links: self (this page), first, and next/previous where there are such pages."""
    visible = [(k, v) for k, v in params if k not in ("_format", "_pretty")]
    links = [_link("self", _page_url(path_url, visible, current))]
    if current is not None or next_cursor is not None:
        links.append(_link("first", _page_url(path_url, visible, None)))
    if previous_cursor is not None:
        links.append(_link("previous", _page_url(path_url, visible, previous_cursor)))
    if next_cursor is not None:
        links.append(_link("next", _page_url(path_url, visible, next_cursor)))
    return links


def result_bundle(
    kind: str,
    total: int | None,
    links: list[dict[str, str]],
    entries: list[dict[str, object]],
) -> dict[str, object]:
    """A history or searchset Bundle of `entries` with its paging links (and total)."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle
