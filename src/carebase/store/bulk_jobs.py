"""Bulk Data jobs' SQL: create, claim under a lease, report progress, finish, expire.

A job row (migration 7) is the whole durable state of a `$export` or `$import`: a server
restart or a dead worker loses nothing but the work since the last progress report, because
any worker may claim a job whose lease lapsed and run it again. On PostgreSQL several worker
processes share the queue with `SELECT ... FOR UPDATE SKIP LOCKED` (each claim takes a job
no other transaction holds); on SQLite the database write lock serialises claimers.
Also the fast export scan: current bodies of one type, in id order, without parsing them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from carebase.store.clock import datetime_to_ms
from carebase.store.sql_rows import row_to_stored
from carebase.store.sql_store import SqlStore

BULK_TABLES = ("bulk_job",)
#: Statuses a job can be in; the first two are "not done yet".
PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, EXPIRED = (
    "pending",
    "running",
    "completed",
    "failed",
    "cancelled",
    "expired",
)
_COLUMNS = (
    "id, kind, status, owner_subject, owner_client, request, progress, manifest, error,"
    " created, updated, expires, lease_owner, lease_until"
)


def now_ms() -> int:
    """The current time as epoch milliseconds (the unit of every time column here)."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class BulkJob:
    """One job row; `request`, `manifest` and `error` are parsed JSON (None when unset)."""

    id: str
    kind: str
    status: str
    owner_subject: str
    owner_client: str | None
    request: dict[str, Any]
    progress: str | None
    manifest: dict[str, Any] | None
    error: dict[str, Any] | None
    created: int
    updated: int
    expires: int | None
    lease_owner: str | None
    lease_until: int | None


def _job(row: Any) -> BulkJob:
    def parsed(value: Any) -> Any:
        return None if value is None else orjson.loads(value)

    return BulkJob(
        id=row[0],
        kind=row[1],
        status=row[2],
        owner_subject=row[3],
        owner_client=row[4],
        request=orjson.loads(row[5]),
        progress=row[6],
        manifest=parsed(row[7]),
        error=parsed(row[8]),
        created=int(row[9]),
        updated=int(row[10]),
        expires=None if row[11] is None else int(row[11]),
        lease_owner=row[12],
        lease_until=None if row[13] is None else int(row[13]),
    )


def create(
    store: SqlStore,
    id_: str,
    kind: str,
    owner_subject: str,
    owner_client: str | None,
    request: dict[str, Any],
) -> BulkJob:
    """Queue a new pending job."""
    at = now_ms()
    with store.writing() as cur:
        cur.execute(
            store.q(
                "INSERT INTO bulk_job (id, kind, status, owner_subject, owner_client, request,"
                " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (id_, kind, PENDING, owner_subject, owner_client, _text(request), at, at),
        )
    found = get(store, id_)
    assert found is not None
    return found


def get(store: SqlStore, id_: str) -> BulkJob | None:
    """The job `id_`, or None."""
    with store.reading() as cur:
        row = cur.execute(
            store.q(f"SELECT {_COLUMNS} FROM bulk_job WHERE id = ?"), (id_,)
        ).fetchone()
    return _job(row) if row else None


def claim(store: SqlStore, worker: str, lease_ms: int) -> BulkJob | None:
    """Take the oldest pending job, or a running one whose lease lapsed (its worker died),
    leasing it to `worker` for `lease_ms`; None when there is nothing to do."""
    at = now_ms()
    ready = f"status = '{PENDING}' OR (status = '{RUNNING}' AND lease_until < ?)"
    with store.writing() as cur:
        if store.dialect == "postgresql":
            row = cur.execute(
                store.q(
                    f"SELECT id FROM bulk_job WHERE {ready} ORDER BY created, id LIMIT 1"
                    " FOR UPDATE SKIP LOCKED"
                ),
                (at,),
            ).fetchone()
        else:  # BEGIN IMMEDIATE already holds the database write lock
            row = cur.execute(
                store.q(f"SELECT id FROM bulk_job WHERE {ready} ORDER BY created, id LIMIT 1"),
                (at,),
            ).fetchone()
        if row is None:
            return None
        cur.execute(
            store.q(
                "UPDATE bulk_job SET status = ?, lease_owner = ?, lease_until = ?, updated = ?"
                " WHERE id = ?"
            ),
            (RUNNING, worker, at + lease_ms, at, row[0]),
        )
        job_id = row[0]
    return get(store, job_id)


def report(store: SqlStore, id_: str, worker: str, progress: str, lease_ms: int) -> bool:
    """Record progress and renew the lease; False when the job is no longer this worker's
    to run (cancelled, or reclaimed after the lease lapsed): the worker must stop."""
    at = now_ms()
    with store.writing() as cur:
        done = cur.execute(
            store.q(
                "UPDATE bulk_job SET progress = ?, lease_until = ?, updated = ?"
                " WHERE id = ? AND status = ? AND lease_owner = ?"
            ),
            (progress, at + lease_ms, at, id_, RUNNING, worker),
        )
        return bool(done.rowcount)


def finish(
    store: SqlStore,
    id_: str,
    worker: str,
    *,
    manifest: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    expires: int | None = None,
) -> bool:
    """Complete the job with its manifest (or fail it with an OperationOutcome `error`);
    False when it was no longer this worker's (cancelled meanwhile)."""
    status = FAILED if error is not None else COMPLETED
    with store.writing() as cur:
        done = cur.execute(
            store.q(
                "UPDATE bulk_job SET status = ?, manifest = ?, error = ?, expires = ?,"
                " updated = ?, lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND status = ? AND lease_owner = ?"
            ),
            (
                status,
                None if manifest is None else _text(manifest),
                None if error is None else _text(error),
                expires,
                now_ms(),
                id_,
                RUNNING,
                worker,
            ),
        )
        return bool(done.rowcount)


def set_status(store: SqlStore, id_: str, status: str) -> None:
    """Mark the job `status` (cancelled, expired) and drop its lease."""
    with store.writing() as cur:
        cur.execute(
            store.q(
                "UPDATE bulk_job SET status = ?, updated = ?, lease_owner = NULL,"
                " lease_until = NULL WHERE id = ?"
            ),
            (status, now_ms(), id_),
        )


def expired(store: SqlStore, at: int | None = None) -> list[str]:
    """Ids of finished jobs whose files' time is up (their files are to be deleted)."""
    with store.reading() as cur:
        rows = cur.execute(
            store.q(
                "SELECT id FROM bulk_job WHERE status IN (?, ?) AND expires IS NOT NULL"
                " AND expires < ?"
            ),
            (COMPLETED, FAILED, now_ms() if at is None else at),
        ).fetchall()
    return [row[0] for row in rows]


def _text(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()


def present_types(store: SqlStore) -> set[str]:
    """The resource types with at least one stored row (an export skips the rest).

    A loose index scan of the (type, id) index: one probe per distinct type, where `SELECT
    DISTINCT type` reads every row, and a probe per requested type with a bound parameter
    got a generic plan on PostgreSQL that scanned the whole table for absent types.
    """
    sql = (
        "WITH RECURSIVE present(type) AS ("
        " SELECT MIN(type) FROM resource"
        " UNION ALL"
        " SELECT (SELECT MIN(type) FROM resource WHERE type > present.type) FROM present"
        " WHERE present.type IS NOT NULL)"
        " SELECT type FROM present WHERE type IS NOT NULL"
    )
    with store.reading() as cur:
        return {row[0] for row in cur.execute(sql).fetchall()}


def scan_bodies(
    store: SqlStore, type_: str, since: datetime | None = None, batch: int = 5000
) -> Iterator[list[bytes]]:
    """The current bodies of every `type_` resource (last updated at or after `since`), in
    id order, batch by batch: the stored bytes, never parsed (export's fast path).

    Keyset paging on the unique (type, id) index: each batch is one index range scan, where
    paging by row id made both databases sort every row of the type for each batch.
    """
    last = ""
    since_ms = None if since is None else datetime_to_ms(since)
    sql = (
        "SELECT type, id, version, last_updated, deleted, body FROM resource"
        " WHERE type = ? AND id > ? AND deleted = 0"
    )
    if since_ms is not None:
        sql += " AND last_updated >= ?"
    # the limit inline: a bound one makes PostgreSQL's generic plan guess at the row count
    sql = store.q(f"{sql} ORDER BY type, id LIMIT {int(batch)}")
    cipher = store.cipher
    while True:
        args: list[Any] = [type_, last] if since_ms is None else [type_, last, since_ms]
        with store.reading() as cur:
            rows = cur.execute(sql, args).fetchall()
        if not rows:
            return
        bodies = []
        for row in rows:
            body = row[5]
            if cipher is not None or bytes(body[:1]) == b"\x00":
                body = row_to_stored(row, cipher).body
            bodies.append(bytes(body))
        yield bodies
        last = rows[-1][1]
