"""Reads and writes of the web pages, through the same interactions, access guard and store
as the FHIR API (`api.interactions`, `api.access.Guard`): a page sees exactly what the
signed-in user's token would, and every resource it touches is noted for its audit entry.

Blocking: call from a worker thread (`run_in_threadpool`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from carebase.api import interactions
from carebase.api.results import Context
from carebase.errors import Forbidden
from carebase.store.base import StoredResource

Resource = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Found:
    """One page of search matches: the resources, the total when counted, and the cursor of
    the next page (None at the end)."""

    resources: list[Resource]
    total: int | None
    next_cursor: str | None


class Records:
    """The FHIR record as one user may see and change it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def may(self, type_: str, letter: str) -> bool:
        """Whether the user may `letter` (r, s, c, u, d) `type_` resources at all."""
        try:
            return self.ctx.guard.policy.visibility(type_, letter) is not None
        except Forbidden:
            return False

    def find(
        self,
        type_: str,
        params: list[tuple[str, str]],
        *,
        count: int = 20,
        cursor: str | None = None,
        counted: bool = False,
    ) -> Found:
        """A page of `type_` resources matching `params`, among those the user may search."""
        guard = self.ctx.guard
        restriction, include_restriction = guard.search(type_, params)
        page = self.ctx.store.search(
            type_,
            params,
            count=count,
            cursor=cursor,
            total="accurate" if counted else "none",
            restriction=restriction,
            include_restriction=include_restriction,
        )
        guard.saw_all(page.entries)
        resources = [orjson.loads(s.body) for s in page.entries if s.body is not None]
        return Found(resources, page.total, page.next_cursor)

    def search(self, type_: str, params: list[tuple[str, str]], count: int = 20) -> list[Resource]:
        """The first `count` matches (see `find`)."""
        return self.find(type_, params, count=count).resources

    def read(self, type_: str, id_: str) -> Resource:
        """The current version of Type/id (404 when it is not one the user may see)."""
        stored = interactions.read(self.ctx, type_, id_).stored
        assert stored is not None and stored.body is not None
        resource: Resource = orjson.loads(stored.body)
        return resource

    def create(self, type_: str, resource: Resource) -> StoredResource:
        """Create a resource (validated, access-checked, one transaction)."""
        interactions.check(resource, type_)
        with self.ctx.store.transaction() as tx:
            result = interactions.create(self.ctx, tx, type_, resource, validate=False)
        assert result.stored is not None
        return result.stored

    def update(self, type_: str, id_: str, resource: Resource, version: int) -> StoredResource:
        """Update Type/id if it is still at `version` (else 412: someone changed it since)."""
        interactions.check(resource, type_)
        with self.ctx.store.transaction() as tx:
            result = interactions.update(
                self.ctx, tx, type_, id_, resource, if_match=f'W/"{version}"', validate=False
            )
        assert result.stored is not None
        return result.stored


def stored_json(stored: StoredResource) -> Resource:
    """The JSON of a stored version."""
    assert stored.body is not None
    resource: Resource = orjson.loads(stored.body)
    return resource
