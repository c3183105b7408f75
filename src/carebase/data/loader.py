"""Loads a stream of FHIR resources into the store: validated, batched, idempotent.

The one ingest path behind `carebase import`, `carebase generate --database`, `make demo`
and the `$import` operation. Readers (Bundles, NDJSON, archives) turn their input into
`(resource, origin)` pairs with final ids and references; the loader validates each, writes
valid ones in batched transactions (each batch one transaction: bulk index writes,
`COPY` on PostgreSQL), and reports invalid ones without stopping.

Idempotent: a resource whose stored current version has the same content (ignoring
`meta.versionId`/`meta.lastUpdated`) is left alone and counted as unchanged, so loading the
same input twice writes nothing the second time. Within one load the first record of a
resource id wins: a later record with the same id is counted unchanged (and `repeated`)
and not written. Synthea repeats each Practitioner and Organization, with varying
utilisation counts, in every patient Bundle; letting the last one win would write a new
version on every run.
"""

from __future__ import annotations

import gc
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from carebase.data.loader_workers import BatchPreparer, Prepared
from carebase.errors import CarebaseError, Issue
from carebase.fhir import json_io
from carebase.fhir.definitions.loader import get_definitions
from carebase.fhir.validation import validate_resource
from carebase.store.base import Store, StoredResource
from carebase.store.prepared_index import PreparedIndex

DEFAULT_BATCH = 500


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a resource came from, for reports: a file and a line or entry within it."""

    source: str  # a file path (or "request" for $import bodies), as the user named it
    location: str  # "line 17", "entry[3]", "Patient.name[0]" ...

    def __str__(self) -> str:
        return f"{self.source}: {self.location}" if self.location else self.source

    def __reduce__(self) -> tuple[type[Origin], tuple[str, str]]:
        # Worker processes send one per record; the constructor is faster than slot state.
        return Origin, (self.source, self.location)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that was not loaded, where it was, and every reason."""

    origin: Origin
    issues: list[Issue]
    resource_type: str | None = None
    resource_id: str | None = None


@dataclass(slots=True)
class LoadSummary:
    """Counts of a load; `read == created + updated + unchanged + rejected` always holds."""

    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    by_type: Counter[str] = field(default_factory=Counter)  # written or unchanged, per type
    repeated: int = 0  # of the unchanged: a resource id this load had already loaded

    @property
    def written(self) -> int:
        """Resources that got a new version (created or updated)."""
        return self.created + self.updated

    def add(self, other: LoadSummary) -> None:
        """Fold `other`'s counts into this summary."""
        self.read += other.read
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.repeated += other.repeated
        self.by_type.update(other.by_type)


#: A queued resource: the dict, where it came from, and its index rows if computed ahead.
_Queued = tuple[dict[str, Any], Origin, PreparedIndex | None]


# A load that wrote at least this many resources refreshes the planner's statistics at its end.
STATISTICS_AFTER = 1_000


def refresh_after_load(store: Store, summary: LoadSummary) -> None:
    """Refresh the database's statistics when a load wrote enough to change its plans."""
    if summary.written >= STATISTICS_AFTER:
        store.refresh_statistics()


def same_content(stored: StoredResource, resource: dict[str, Any]) -> bool:
    """Whether `resource` equals the stored current version apart from the server's
    meta.versionId and meta.lastUpdated (a deleted resource never matches)."""
    if stored.deleted or stored.body is None:
        return False
    return _without_server_meta(json_io.loads(stored.body)) == _without_server_meta(resource)


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return resource
    kept = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if kept:
        out["meta"] = kept
    return out


class ResourceLoader:
    """Buffers resources and writes them in batches; use as a context manager or call
    `finish()` to write the last batch and get the summary.

    Every resource must carry `resourceType` and `id`. Invalid ones go to `on_rejected` (and
    are counted); a batch that fails to write as a whole is retried one resource at a time,
    so one bad record never costs its neighbours their place.
    """

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = DEFAULT_BATCH,
        on_rejected: Callable[[Rejected], None] | None = None,
        on_batch: Callable[[LoadSummary], None] | None = None,
        workers: int = 0,
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._on_rejected = on_rejected
        self._on_batch = on_batch  # called after each committed batch with that batch's counts
        self._batch: list[_Queued] = []
        self._unchecked: list[tuple[object, Origin]] = []  # for the workers to check
        self.summary = LoadSummary()
        # Hashes of the (type, id) keys this load wrote or found unchanged: 8 bytes of key per
        # resource rather than the resource, so memory stays small on long inputs.
        self._seen: set[int] = set()
        # workers > 0: batches are validated and indexed in that many processes, the next
        # batch filling while the previous one is prepared (loader_workers.py).
        self._preparer = BatchPreparer(workers) if workers > 0 else None
        self._in_workers: deque[tuple[list[tuple[object, Origin]], Future[list[Prepared]]]] = (
            deque()
        )

    def __enter__(self) -> ResourceLoader:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.close()

    def close(self) -> None:
        """Stop the worker processes, if any (`finish` does it too)."""
        if self._preparer is not None:
            self._preparer.close()
            self._preparer = None

    def add(
        self,
        resource: object,
        origin: Origin,
        issues: list[Issue] | None = None,
        prepared: PreparedIndex | None = None,
    ) -> None:
        """Validate `resource` and queue it; a full batch is written at once. `issues`: the
        errors `check` found for it elsewhere (a worker process), so it is not validated
        twice; `prepared`: its index rows computed there (`prepare_index` of this content)."""
        self.summary.read += 1
        if self._preparer is not None and issues is None:
            self._unchecked.append((resource, origin))
            if len(self._unchecked) >= self._batch_size:
                self._hand_to_workers()
            return
        if issues is None:
            issues = check(resource)
        if issues:
            self._reject(resource, origin, issues)
            return
        assert isinstance(resource, dict)
        self._batch.append((resource, origin, prepared))
        if len(self._batch) >= self._batch_size:
            self._write_batch()

    def add_all(self, records: Iterable[tuple[object, Origin]]) -> LoadSummary:
        """Add every record, write the rest, and return the summary."""
        for resource, origin in records:
            self.add(resource, origin)
        return self.finish()

    def flush(self) -> None:
        """Write everything queued (also what is in the workers), a batch per transaction;
        a batch that fails is written one resource at a time."""
        if self._preparer is not None:
            self._hand_to_workers()
            while self._in_workers:
                self._write_prepared()
        self._write_batch()

    def _hand_to_workers(self) -> None:
        batch, self._unchecked = self._unchecked, []
        if batch and self._preparer is not None:
            future = self._preparer.submit([r for r, _o in batch], check)
            self._in_workers.append((batch, future))
        while len(self._in_workers) > 1:  # write the older batch while this one is prepared
            self._write_prepared()

    def _write_prepared(self) -> None:
        batch, future = self._in_workers.popleft()
        for (resource, origin), (issues, prepared) in zip(batch, future.result(), strict=True):
            if issues:
                self._reject(resource, origin, issues)
            else:
                assert isinstance(resource, dict)
                self._batch.append((resource, origin, prepared))
        self._write_batch()

    def _write_batch(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            counts = self._write(batch)
        except CarebaseError:
            counts = LoadSummary()
            for resource, origin, _prepared in batch:
                try:
                    # Indexed afresh: the failed attempt stamped the dict's meta.
                    counts.add(self._write([(resource, origin, None)]))
                except CarebaseError as exc:
                    self._reject(resource, origin, exc.issues, counted=False)
                    counts.rejected += 1
        self.summary.created += counts.created
        self.summary.updated += counts.updated
        self.summary.unchanged += counts.unchanged
        self.summary.rejected += counts.rejected
        self.summary.repeated += counts.repeated
        self.summary.by_type.update(counts.by_type)
        if self._on_batch is not None:
            self._on_batch(counts)

    def finish(self) -> LoadSummary:
        """Write what is queued, stop the workers, and return the summary of everything
        added."""
        try:
            self.flush()
        finally:
            self.close()
        refresh_after_load(self._store, self.summary)
        return self.summary

    def _write(self, batch: list[_Queued]) -> LoadSummary:
        counts = LoadSummary()
        with self._store.transaction() as tx:
            # One read for the whole batch; resources absent from the store are created
            # without a per-resource lookup (the unique index still refuses a duplicate).
            current = tx.read_many([(r["resourceType"], r["id"]) for r, _o, _p in batch])
            # Creates first (buffered, sent in bulk), then updates: each update reads its row
            # for writing, which flushes the buffer, so interleaving them would cost a round of
            # bulk inserts per update.
            later: list[tuple[str, str, dict[str, Any]]] = []
            in_batch: set[tuple[str, str]] = set()
            for resource, _origin, prepared in batch:
                key = (resource["resourceType"], resource["id"])
                stored = current.get(key)
                counts.by_type[key[0]] += 1
                if key in in_batch or (stored is not None and hash(key) in self._seen):
                    counts.unchanged += 1  # a repeat within this load: the first one wins
                    counts.repeated += 1
                elif stored is not None and same_content(stored, resource):
                    counts.unchanged += 1
                elif stored is None:
                    tx.create(key[0], resource, key[1], prepared=prepared)
                    counts.created += 1
                else:  # changed or deleted
                    later.append((key[0], key[1], resource))
                in_batch.add(key)
            for type_, id_, resource in later:
                _stored, created = tx.update(type_, id_, resource)
                counts.created += created
                counts.updated += not created
        # Remembered once committed (a batch that fails is written again one by one).
        self._seen.update(hash(key) for key in in_batch)
        return counts

    def reject(self, origin: Origin, issues: list[Issue], resource: object = None) -> None:
        """Count and report a record that never became a resource to load (malformed JSON,
        an entry that cannot be imported); it counts as read and rejected."""
        self.summary.read += 1
        self._reject(resource, origin, issues)

    def count_existing(self, resource_type: str) -> None:
        """Count a record satisfied by a resource already stored (a conditional create that
        matched): read and unchanged, nothing written."""
        self.summary.read += 1
        self.summary.unchanged += 1
        self.summary.by_type[resource_type] += 1

    def take_summary(self) -> LoadSummary:
        """The counts since the last call (or the start), and start counting afresh; the
        keys already loaded are still remembered (a writer process answers each batch)."""
        summary, self.summary = self.summary, LoadSummary()
        return summary

    @property
    def pending(self) -> int:
        """Resources queued and not yet written."""
        in_workers = sum(len(batch) for batch, _future in self._in_workers)
        return len(self._batch) + len(self._unchecked) + in_workers

    def _reject(
        self, resource: object, origin: Origin, issues: list[Issue], *, counted: bool = True
    ) -> None:
        if counted:
            self.summary.rejected += 1
        type_ = resource.get("resourceType") if isinstance(resource, dict) else None
        id_ = resource.get("id") if isinstance(resource, dict) else None
        if self._on_rejected is not None:
            self._on_rejected(
                Rejected(
                    origin,
                    issues,
                    type_ if isinstance(type_, str) else None,
                    id_ if isinstance(id_, str) else None,
                )
            )


def tune_for_ingest() -> None:
    """Load the definitions now and make the garbage collector suit ingest (a server, an
    import writer process).

    Ingest builds and drops large JSON trees; with CPython's default thresholds the cyclic
    collector runs every 700 allocations and rescans long-lived objects (the R4 definitions,
    compiled indexing plans), which cost about 30% of Bundle ingest time. Objects alive at
    start are frozen out of collection, and the young generation is collected less often;
    reference counting still frees acyclic garbage at once.
    """
    get_definitions()
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def check(resource: object) -> list[Issue]:
    """Validation errors of `resource` (warnings dropped), or that it lacks an id."""
    issues = [
        issue for issue in validate_resource(resource) if issue.severity in ("error", "fatal")
    ]
    if not issues and isinstance(resource, dict) and not isinstance(resource.get("id"), str):
        issues.append(
            Issue(
                "error",
                "required",
                "a resource to load needs an id",
                [str(resource.get("resourceType", "")) + ".id"],
            )
        )
    return issues
