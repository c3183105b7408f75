"""The storage interface every backend (SQLite, PostgreSQL) implements, and its value types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from carebase.store.prepared_index import PreparedIndex
from carebase.store.search_restriction import Restriction

Interaction = Literal["create", "update", "delete"]
#: `_total`: no total, the database's estimate, or an exact count.
TotalMode = Literal["none", "estimate", "accurate"]


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of a resource as stored.

    `body` is the compact JSON bytes exactly as served (meta.versionId and meta.lastUpdated
    inside); it is None for a deletion tombstone (`deleted` is True).
    """

    type: str
    id: str
    version: int
    last_updated: datetime  # timezone-aware UTC
    deleted: bool
    body: bytes | None
    interaction: Interaction = "update"

    @property
    def etag(self) -> str:
        """The weak ETag of this version, `W/"<version>"`."""
        return f'W/"{self.version}"'


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of history entries, newest first, and the cursor of the next page (or None)."""

    entries: list[StoredResource]
    next_cursor: str | None
    total: int | None = None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of search matches (current versions, in the search's order) and its cursors.

    `next_cursor`/`previous_cursor` continue after the last / before the first match (None
    when there is nothing there to page to). `included` are the `_include`/`_revinclude`
    resources (each once, never a match), `includes_truncated` says the per-page cap cut them
    short, and `ignored` names the parameters left out under lenient handling.
    """

    entries: list[StoredResource]
    next_cursor: str | None
    total: int | None = None
    previous_cursor: str | None = None
    included: list[StoredResource] = field(default_factory=list)
    includes_truncated: bool = False
    ignored: tuple[str, ...] = ()


class Transaction(ABC):
    """A unit of work: every write through it commits together or not at all.

    Writes take a parsed resource (dict), stamp `id` and `meta.versionId`/`meta.lastUpdated`
    on it (the dict is modified), serialise it once, and write the resource row, the version
    row and the index rows.
    """

    @abstractmethod
    def read(self, type_: str, id_: str) -> StoredResource | None:
        """The current version (or the tombstone if deleted); None if never existed."""

    def read_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], StoredResource]:
        """The current versions (or tombstones) of many (type, id) keys at once; keys that
        never existed are absent. Backends answer it in a few queries, not one per key."""
        found: dict[tuple[str, str], StoredResource] = {}
        for type_, id_ in keys:
            stored = self.read(type_, id_)
            if stored is not None:
                found[(type_, id_)] = stored
        return found

    @abstractmethod
    def create(
        self,
        type_: str,
        resource: dict[str, object],
        id_: str | None = None,
        *,
        prepared: PreparedIndex | None = None,
    ) -> StoredResource:
        """Create version 1 with a server-assigned id (or `id_`); Conflict if the id exists.
        `prepared`: the resource's index rows, computed ahead (see store/prepared_index.py)."""

    @abstractmethod
    def update(
        self,
        type_: str,
        id_: str,
        resource: dict[str, object],
        *,
        if_match: int | None = None,
    ) -> tuple[StoredResource, bool]:
        """Write a new version (or version 1 if new or after delete); returns (stored, created).

        Raises PreconditionFailed when `if_match` is given and differs from the current version
        (including when the resource does not exist).
        """

    @abstractmethod
    def delete(self, type_: str, id_: str, *, if_match: int | None = None) -> StoredResource | None:
        """Write a tombstone version; returns it, or None when there was nothing to delete."""

    def lock(self, key: str) -> None:  # noqa: B027 - backends that need it override
        """Serialise, until this transaction ends, with other transactions locking `key`.

        Conditional create and update lock their criteria, so two concurrent requests with
        the same criteria cannot both find no match and both create.
        """

    @abstractmethod
    def search_ids(
        self,
        type_: str,
        params: list[tuple[str, str]],
        *,
        limit: int | None = None,
        restriction: Restriction | None = None,
    ) -> list[str]:
        """Ids of current, non-deleted resources of `type_` matching the search `params`
        (only those `restriction` lets the caller see, when given)."""


class Store(ABC):
    """A FHIR resource store over one database."""

    dialect: Literal["sqlite", "postgresql"]
    url: str

    @abstractmethod
    def migrate(self) -> list[int]:
        """Create or upgrade the schema; returns the migration numbers applied."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the database is at (0 when empty)."""

    @abstractmethod
    def read(self, type_: str, id_: str) -> StoredResource | None:
        """The current version or tombstone of a resource; None if it never existed."""

    async def read_async(self, type_: str, id_: str) -> StoredResource | None:
        """`read` for the event loop; backends override it with something cheaper than a
        thread hop (SQLite reads inline, PostgreSQL uses an async connection)."""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.read, type_, id_)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what `read_async` opened on the event loop (call before `close`)."""

    @abstractmethod
    def vread(self, type_: str, id_: str, version: int) -> StoredResource | None:
        """One version (a tombstone when that version is a deletion); None if absent."""

    @abstractmethod
    def history(
        self,
        type_: str | None = None,
        id_: str | None = None,
        *,
        since: datetime | None = None,
        at: datetime | None = None,
        count: int = 20,
        cursor: str | None = None,
        with_total: bool = True,
        restriction: Restriction | None = None,
    ) -> HistoryPage:
        """Versions newest first, at instance (type+id), type (type) or system level (neither).

        `since`: only versions written at or after it; `at`: for each resource the version
        current at that instant. `cursor` continues from a previous page's `next_cursor`.
        `restriction`: only versions of resources the caller may see now (the current
        version decides; deleted resources are then hidden).
        """

    @abstractmethod
    def search(
        self,
        type_: str | None,
        params: list[tuple[str, str]],
        *,
        count: int = 20,
        cursor: str | None = None,
        total: TotalMode = "accurate",
        lenient: bool = False,
        compartment: tuple[str, str] | None = None,
        max_include: int = 1000,
        restriction: Restriction | None = None,
        include_restriction: Restriction | None = None,
    ) -> SearchPage:
        """Current, non-deleted resources matching `params` (name, value) pairs.

        `params` are criteria plus `_sort`, `_include` and `_revinclude`; the page holds up
        to `count` matches in `_sort` order (then row order), continuing from `cursor` (a
        `next_cursor`/`previous_cursor` of an earlier page of the same search). `lenient`
        ignores unknown parameters instead of refusing them; `compartment` is
        ("Patient", id) to search inside that patient's compartment; at most `max_include`
        resources are included per page. `restriction` narrows the matches (and what chains
        and `_has` traverse) to what the caller may search, `include_restriction` the
        included resources to what it may read; None: no narrowing.
        """

    @abstractmethod
    def visible(self, type_: str, id_: str, restriction: Restriction) -> bool:
        """Whether the current, non-deleted Type/id is one `restriction` lets the caller see."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """A unit of work; commits on normal exit, rolls back on exception."""

    @abstractmethod
    def iter_current(self, type_: str | None = None) -> Iterator[StoredResource]:
        """Every current, non-deleted resource (for tests, export and reindexing)."""

    def refresh_statistics(self) -> None:
        """After a bulk load, let the query planner see the new data. PostgreSQL plans from
        sampled statistics that autovacuum refreshes only after enough changes, so a search
        right after a large load can be planned as if the tables were empty (scans where
        index probes belong); SQLite is left without statistics on purpose (its plans are
        chosen by the schema's indexes)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


def every_match(
    store: Store,
    type_: str,
    params: list[tuple[str, str]],
    page_size: int = 500,
    *,
    compartment: tuple[str, str] | None = None,
    restriction: Restriction | None = None,
) -> Iterator[StoredResource]:
    """Every current resource of `type_` that `params` find (in `compartment`, within
    `restriction`), page after page, for code that needs them all rather than one page."""
    cursor: str | None = None
    while True:
        page = store.search(
            type_, params, count=page_size, cursor=cursor, total="none",
            compartment=compartment, restriction=restriction,
        )  # fmt: skip
        yield from page.entries
        cursor = page.next_cursor
        if cursor is None:
            return
