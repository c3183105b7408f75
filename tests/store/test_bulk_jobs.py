"""The bulk job queue: claims under leases, reclaiming dead workers' jobs, sharing on PostgreSQL,
and the export scan of stored bodies."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from carebase.store import bulk_jobs
from carebase.store.base import Store
from carebase.store.sql_store import SqlStore


def _sql(store: Store) -> SqlStore:
    assert isinstance(store, SqlStore)
    return store


def test_claim_report_finish(store: Store) -> None:
    sql = _sql(store)
    job = bulk_jobs.create(sql, "j1", "export", "alice", "app", {"x": [1]})
    assert (job.status, job.request, job.owner_client) == ("pending", {"x": [1]}, "app")
    claimed = bulk_jobs.claim(sql, "w1", 60_000)
    assert claimed is not None and claimed.id == "j1" and claimed.lease_owner == "w1"
    assert bulk_jobs.claim(sql, "w2", 60_000) is None  # leased: nobody else takes it
    assert bulk_jobs.report(sql, "j1", "w1", "half", 60_000)
    assert not bulk_jobs.report(sql, "j1", "w2", "not mine", 60_000)
    assert bulk_jobs.finish(sql, "j1", "w1", manifest={"output": []}, expires=5)
    done = bulk_jobs.get(sql, "j1")
    assert done is not None and done.status == "completed" and done.manifest == {"output": []}
    assert done.progress == "half" and done.lease_owner is None
    assert bulk_jobs.expired(sql, at=10) == ["j1"] and bulk_jobs.expired(sql, at=1) == []


def test_a_lapsed_lease_is_reclaimed(store: Store) -> None:
    sql = _sql(store)
    bulk_jobs.create(sql, "j1", "import", "alice", None, {})
    assert bulk_jobs.claim(sql, "dead", -1) is not None  # its lease is already over
    again = bulk_jobs.claim(sql, "alive", 60_000)
    assert again is not None and again.id == "j1" and again.lease_owner == "alive"
    # the dead worker, should it wake up, may no longer report or finish
    assert not bulk_jobs.report(sql, "j1", "dead", "x", 60_000)
    assert not bulk_jobs.finish(sql, "j1", "dead", manifest={})


def test_a_cancelled_job_stops_its_worker(store: Store) -> None:
    sql = _sql(store)
    bulk_jobs.create(sql, "j1", "export", "alice", None, {})
    assert bulk_jobs.claim(sql, "w1", 60_000) is not None
    bulk_jobs.set_status(sql, "j1", bulk_jobs.CANCELLED)
    assert not bulk_jobs.report(sql, "j1", "w1", "x", 60_000)
    assert bulk_jobs.claim(sql, "w2", 60_000) is None


def test_claims_are_oldest_first(store: Store) -> None:
    sql = _sql(store)
    for name in ("a", "b", "c"):
        bulk_jobs.create(sql, name, "export", "alice", None, {})
    claimed = [bulk_jobs.claim(sql, "w", 60_000) for _ in range(4)]
    assert [j.id if j else None for j in claimed] == ["a", "b", "c", None]


def test_concurrent_claimers_get_distinct_jobs(store: Store) -> None:
    """Several workers claiming at once (SKIP LOCKED on PostgreSQL, the write lock on
    SQLite) never get the same job."""
    sql = _sql(store)
    for i in range(8):
        bulk_jobs.create(sql, f"job{i}", "export", "alice", None, {})
    start = threading.Barrier(4)
    got: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        start.wait()
        while (job := bulk_jobs.claim(sql, name, 60_000)) is not None:
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [f"job{i}" for i in range(8)]


def test_skip_locked_passes_over_a_job_another_transaction_holds(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite has one writer at a time")
    sql = _sql(store)
    bulk_jobs.create(sql, "held", "export", "alice", None, {})
    bulk_jobs.create(sql, "free", "export", "alice", None, {})
    with sql.writing() as cur:  # another worker is in the middle of claiming "held"
        cur.execute("SELECT id FROM bulk_job WHERE id = 'held' FOR UPDATE")
        claimed = bulk_jobs.claim(sql, "w2", 60_000)
        assert claimed is not None and claimed.id == "free"


def test_scan_bodies_streams_stored_bytes(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(7):
            tx.create("Patient", {"resourceType": "Patient", "gender": "male"}, f"p{i}")
        tx.create("Observation", {"resourceType": "Observation", "status": "final",
                                  "code": {"text": "x"}})  # fmt: skip
        tx.delete("Patient", "p3")
    batches = list(bulk_jobs.scan_bodies(_sql(store), "Patient", batch=3))
    assert [len(b) for b in batches] == [3, 3]
    bodies = [body for batch in batches for body in batch]
    assert all(body == store.read("Patient", body.split(b'"id":"')[1].split(b'"')[0].decode())
               .body for body in bodies)  # fmt: skip
    future = datetime.now(UTC) + timedelta(days=1)
    assert list(bulk_jobs.scan_bodies(_sql(store), "Patient", future)) == []
    past = datetime.now(UTC) - timedelta(days=1)
    assert sum(len(b) for b in bulk_jobs.scan_bodies(_sql(store), "Patient", past)) == 6


def test_scan_bodies_opens_sealed_bodies(store: Store) -> None:
    from carebase.store.body_cipher import BodyCipher, new_key

    sql = _sql(store)
    sql.cipher = BodyCipher([new_key()])
    try:
        with store.transaction() as tx:
            tx.create("Patient", {"resourceType": "Patient", "gender": "male"}, "sealed")
        with sql.reading() as cur:
            raw = cur.execute("SELECT body FROM resource").fetchone()[0]
        assert bytes(raw)[:1] == b"\x00"  # stored sealed
        [[body]] = list(bulk_jobs.scan_bodies(sql, "Patient"))
        assert (
            body.startswith(b'{"resourceType":"Patient"')
            and body == store.read("Patient", "sealed").body
        )
    finally:
        sql.cipher = None


def test_present_types(store: Store) -> None:
    assert bulk_jobs.present_types(_sql(store)) == set()
    with store.transaction() as tx:
        tx.create("Patient", {"resourceType": "Patient"}, "a")
        tx.create("Patient", {"resourceType": "Patient"}, "b")
        tx.create("Group", {"resourceType": "Group", "type": "person", "actual": True}, "g")
    assert bulk_jobs.present_types(_sql(store)) == {"Patient", "Group"}
