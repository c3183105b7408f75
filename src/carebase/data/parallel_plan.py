"""Parsing, planning and validating input chunks in worker processes, in input order.

The importer's CPU goes to three things: parsing and planning documents, validating their
resources, and writing them (indexing included). Worker processes take the first two off
the main process, which only writes: each `Chunk` (a whole JSON document, or a block of
NDJSON lines) is parsed, planned (`bundle_import.plan`) and validated in a worker, which
also computes the valid resources' index rows (`prepare_index`); its
results come back in input order with at most `max_pending` chunks in flight, so memory
stays bounded however large the input is (`workers` 0: all in this process).

Workers have no database. Planning that needs the store (a `urn:uuid:` reference to no entry
of its Bundle, a conditional reference, an `ifNoneExist` or conditional PUT) is detected
there, and such a chunk comes back `needs_store` for the main process to plan itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from carebase.data.bundle_import import Load, Planned, plan
from carebase.data.loader import Origin, check
from carebase.data.loader_workers import worker_pool
from carebase.data.sources import Chunk, ParseFailure, parse
from carebase.errors import Issue
from carebase.store.prepared_index import PreparedIndex, prepare_index


@dataclass(frozen=True, slots=True)
class PlannedValue:
    """What a worker made of one JSON value at `location`: its plans, each Load with its
    validation issues (`planned`); or the value itself when it is no resource or must be
    planned against the store (`raw`, `planned` None)."""

    location: str
    planned: list[tuple[Planned, list[Issue] | None, PreparedIndex | None]] | None
    raw: object = None


class _NoStore:
    """A resolver for workers: every lookup misses, and says a store was needed."""

    def __init__(self) -> None:
        self.needed = False

    def by_uuid(self, urn: str) -> str | None:
        self.needed = True
        return None

    def by_criteria(self, reference: str) -> str | None:
        self.needed = True
        return None


def values_of(chunk: Chunk) -> Iterator[tuple[object, str]]:
    """The parsed JSON values of a chunk with their location (`line N` or '')."""
    if chunk.error is not None:
        yield ParseFailure(chunk.error), ""
        return
    if not chunk.ndjson:
        yield parse(chunk.data), ""
        return
    for offset, line in enumerate(chunk.data.split(b"\n")):
        if line.strip():
            yield parse(line), f"line {chunk.first_line + offset}"


def plan_chunk(chunk: Chunk, prepare: bool = False) -> list[PlannedValue]:
    """Parse, plan and validate one chunk; `prepare`: compute the valid resources' index
    rows too (in a worker: in the writing process that is left to the write, which skips
    it for unchanged resources)."""
    out: list[PlannedValue] = []
    for value, location in values_of(chunk):
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            out.append(PlannedValue(location, None, value))  # the main process reports it
            continue
        if _has_conditional_create(value):
            out.append(PlannedValue(location, None, value))
            continue
        resolver = _NoStore()
        origin = Origin(chunk.source, location)
        planned = list(plan(value, origin, resolver, final=True))
        if resolver.needed:
            # Planning rewrote the value in place; the main process starts from the chunk.
            out.append(PlannedValue(location, None, _reparse(chunk, location)))
            continue
        out.append(PlannedValue(location, [_checked(p, prepare) for p in planned]))
    return out


def _checked(
    item: Planned, prepare: bool
) -> tuple[Planned, list[Issue] | None, PreparedIndex | None]:
    """A plan with its validation errors and, when valid and `prepare`, its index rows."""
    if not isinstance(item, Load):
        return item, None, None
    issues = check(item.resource)
    return item, issues, prepare_index(item.resource) if prepare and not issues else None


def _reparse(chunk: Chunk, location: str) -> object:
    if not chunk.ndjson:
        return parse(chunk.data)
    line = int(location.removeprefix("line ")) - chunk.first_line
    return parse(chunk.data.split(b"\n")[line])


def _has_conditional_create(value: dict[str, object]) -> bool:
    """Whether a transaction entry's outcome depends on the store (ifNoneExist, a
    conditional PUT); the worker's plan would be wrong for it."""
    if value.get("resourceType") != "Bundle" or value.get("type") not in ("transaction", "batch"):
        return False
    entries = value.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        request = entry.get("request") if isinstance(entry, dict) else None
        if isinstance(request, dict) and (
            request.get("ifNoneExist") or "?" in str(request.get("url", ""))
        ):
            return True
    return False


def planned_in_order(
    chunks: Iterable[Chunk], workers: int, max_pending: int = 8
) -> Iterator[tuple[Chunk, list[PlannedValue]]]:
    """`plan_chunk` of every chunk on `workers` processes, yielded in input order."""
    if workers < 1:
        for chunk in chunks:
            yield chunk, plan_chunk(chunk)
        return
    with worker_pool(workers) as pool:
        pending: deque[tuple[Chunk, Future[list[PlannedValue]]]] = deque()
        try:
            for chunk in chunks:
                pending.append((chunk, pool.submit(plan_chunk, chunk, True)))
                if len(pending) >= max_pending:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _chunk, future in pending:
                future.cancel()
