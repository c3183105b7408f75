"""The durable audit trail on SQLite and PostgreSQL: group commit, one chain under concurrency,
clean and unclean shutdown, and failing closed when the audit store fails."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import orjson
import psycopg
import pytest

from carebase.auth.audit_chain import SHUTDOWN, UNCLEAN_SHUTDOWN, verify
from carebase.auth.audit_detail import event_bytes
from carebase.auth.audit_entry import AuditEntry
from carebase.auth.audit_log import DatabaseAuditTrail
from carebase.auth.principal import Principal
from carebase.errors import Unavailable
from carebase.fhir.validation import validate_resource
from carebase.store import audit_records
from carebase.store.audit_records import APPEND_LOCK, AuditRecord
from carebase.store.factory import open_store
from carebase.store.sql_store import SqlStore
from carebase.store.sqlite import sqlite_path

NURSE = Principal(subject="u-2", username="nurse.joy", role="nurse", fhir_user="Practitioner/2")


def entry(n: int, patient: str = "p1") -> AuditEntry:
    return AuditEntry(
        "read", "R", principal=NURSE, entities=(f"Observation/o{n}",), patients=(patient,)
    )


def stored(store: SqlStore) -> list[AuditRecord]:
    records = list(audit_records.iter_records(store))
    result = verify(records)
    assert result.intact, result
    return records


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def trail(store: SqlStore) -> Iterator[DatabaseAuditTrail]:
    t = DatabaseAuditTrail(store, flush_ms=5, site="http://testserver/fhir")
    t.start()
    yield t
    with suppress(Unavailable):  # a test that broke the store on purpose
        t.close()


def test_group_commit_writes_many_entries_in_few_transactions(
    store: SqlStore, trail: DatabaseAuditTrail
) -> None:
    started = time.perf_counter()
    for n in range(500):
        trail.record(entry(n, patient=f"p{n % 3}"))
    took = time.perf_counter() - started
    trail.flush()
    assert trail.stats.written == 500
    assert trail.stats.transactions <= 50, trail.stats  # not one round trip per entry
    assert took < 1.0  # recording never waited for the database
    records = stored(store)
    assert len(records) == 500
    event = orjson.loads(event_bytes(records[7]))
    assert validate_resource(event) == []
    assert event["entity"][0]["what"]["reference"] == "Patient/p1"
    assert records[7].patients == ("p1",) and records[7].agent == "Practitioner/2"
    assert (
        len(audit_records.search(store, audit_records.AuditQuery(patients=("p0",)), limit=999))
        == 167
    )


def test_the_search_index_catches_up_on_its_schedule_and_searches_never_wait_for_it(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("carebase.auth.audit_log.INDEX_EVERY_S", 3600.0)
    monkeypatch.setattr("carebase.auth.audit_log.INDEX_AFTER_ENTRIES", 10)
    trail = DatabaseAuditTrail(store, flush_ms=0)
    trail.start()  # the start-up pass

    def indexed_upto() -> int:
        with store.reading() as cur:
            return audit_records._indexed_upto(cur, store)

    def found(patient: str) -> int:
        query = audit_records.AuditQuery(patients=(patient,))
        return len(audit_records.search(store, query, limit=999))

    before = indexed_upto()
    for n in range(4):
        trail.record(entry(n, patient="early"))
        trail.flush()
    assert indexed_upto() == before  # not due yet
    assert found("early") == 4  # the blocks not indexed yet are searched as they are
    for n in range(8):
        trail.record(entry(n, patient="late"))
        trail.flush()
    assert indexed_upto() > before  # ten entries since the last pass: indexed
    assert (found("early"), found("late")) == (4, 8)
    trail.close()
    stored(store)  # the index holds every key the entries need (verify checks it)


def test_close_flushes_every_entry_and_ends_with_a_shutdown_marker(store: SqlStore) -> None:
    trail = DatabaseAuditTrail(store, flush_ms=50)
    for n in range(300):
        trail.record(entry(n))
    trail.close()  # no flush before: close must not lose what was accepted
    records = stored(store)
    assert len(records) == 301
    assert records[-1].interaction == SHUTDOWN
    with pytest.raises(Unavailable, match="audit store unavailable"):
        trail.record(entry(1))


def test_concurrent_threads_keep_one_chain(store: SqlStore, trail: DatabaseAuditTrail) -> None:
    def work(k: int) -> None:
        for n in range(100):
            trail.record(entry(k * 1000 + n))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trail.flush()
    assert len(stored(store)) == 800


def test_two_trails_like_two_workers_keep_one_chain(store: SqlStore) -> None:
    # A second store object on the same database: its own connections, as a second worker
    # process would have (PostgreSQL: its own pool; SQLite: its own file handles).
    other = open_store(store.url)
    assert isinstance(other, SqlStore)
    trails = [DatabaseAuditTrail(s, flush_ms=1) for s in (store, other)]
    try:

        def work(t: DatabaseAuditTrail, k: int) -> None:
            for n in range(200):
                t.record(entry(k * 1000 + n))
                if n % 20 == 0:
                    time.sleep(0.002)  # spread the batches so they interleave

        threads = [threading.Thread(target=work, args=(t, k)) for k, t in enumerate(trails * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for t in trails:
            t.flush()
        records = stored(store)
        accesses = [r for r in records if r.interaction == "read"]
        assert len(accesses) == 800
        assert trails[0].stats.transactions > 1 and trails[1].stats.transactions > 1
    finally:
        for t in trails:
            t.close()
        other.close()


def test_appends_go_onto_the_known_head_in_one_statement_until_another_writer_appends(
    store: SqlStore,
) -> None:
    # PostgreSQL only: on SQLite every append takes the locked path (cheaper there)
    quick = int(store.dialect == "postgresql")
    other = open_store(store.url)
    assert isinstance(other, SqlStore)
    first, second = (DatabaseAuditTrail(s, flush_ms=0) for s in (store, other))
    try:

        def write(t: DatabaseAuditTrail, n: int) -> None:
            t.record(entry(n))
            t.flush()

        write(first, 1)  # reads the head (and indexes): the locked path
        assert first.stats.quick == 0
        write(first, 2)
        write(first, 3)
        assert first.stats.quick == 2 * quick  # onto its own last block, one statement each
        write(second, 4)  # the other worker moves the head on
        write(first, 5)  # its known head is stale: refused, appended under the lock
        assert first.stats.quick == 2 * quick and first.stats.transactions == 4
        write(first, 6)
        assert first.stats.quick == 3 * quick
        records = stored(store)  # one intact chain
        assert [orjson.loads(event_bytes(r))["entity"][1]["what"]["reference"]
                for r in records if r.interaction == "read"] == [
            f"Observation/o{n}" for n in range(1, 7)
        ]  # fmt: skip
    finally:
        first.close()
        second.close()
        other.close()


def test_a_one_statement_append_waits_for_the_append_lock(store: SqlStore) -> None:
    trail = DatabaseAuditTrail(store, flush_ms=0)
    try:
        for n in range(2):
            trail.record(entry(n))
            trail.flush()
        with _appends_blocked(store):
            trail.record(entry(2))
            time.sleep(0.3)
            assert trail.stats.written == 2  # held back by the lock another writer holds
        trail.flush()
        assert trail.stats.written == 3
        assert trail.stats.quick == (2 if store.dialect == "postgresql" else 0)
    finally:
        trail.close()
    assert len(stored(store)) == 4  # the three and the shutdown marker


def test_an_unclean_shutdown_is_noted_at_the_next_start(store: SqlStore) -> None:
    crashed = DatabaseAuditTrail(store)
    crashed.record(entry(1))
    crashed.flush()  # written, but the process "dies" here: no close, no shutdown marker
    again = DatabaseAuditTrail(store)
    again.start()
    records = stored(store)
    assert [r.interaction for r in records] == ["read", UNCLEAN_SHUTDOWN]
    assert records[-1].outcome == "4"
    assert b"did not shut down cleanly" in event_bytes(records[-1])
    again.close()
    clean = DatabaseAuditTrail(store)
    clean.start()  # the last entry is a shutdown marker: nothing to note
    clean.close()
    assert [r.interaction for r in stored(store)] == ["read", UNCLEAN_SHUTDOWN, SHUTDOWN, SHUTDOWN]
    assert verify(audit_records.iter_records(store)).unclean_restarts == 1


def _rename(store: SqlStore, old: str, new: str) -> None:
    with store.writing() as cur:
        cur.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_a_failing_audit_store_refuses_then_recovers(
    store: SqlStore, trail: DatabaseAuditTrail
) -> None:
    trail.record(entry(1))
    trail.flush()
    _rename(store, "audit_block", "audit_block_away")  # every append now fails in the database
    try:
        trail.record(entry(2))  # accepted: the trail does not know yet
        wait_for(lambda: not trail.healthy)
        with pytest.raises(Unavailable, match="audit store unavailable") as refused:
            trail.record(entry(3))
        assert refused.value.status == 503
        with pytest.raises(Unavailable):
            trail.flush(timeout=0.2)
    finally:
        _rename(store, "audit_block_away", "audit_block")
    wait_for(lambda: trail.healthy)
    trail.record(entry(4))
    trail.flush()
    records = stored(store)
    # entry 2 was kept and written on recovery; entry 3 was refused, never half-written
    assert [orjson.loads(event_bytes(r))["entity"][1]["what"]["reference"] for r in records] == [
        "Observation/o1",
        "Observation/o2",
        "Observation/o4",
    ]
    assert trail.stats.failures >= 1


@contextmanager
def _appends_blocked(store: SqlStore) -> Iterator[None]:
    """Hold what an append must take, from another connection (a stuck disk or lock)."""
    if store.dialect == "sqlite":
        conn = sqlite3.connect(sqlite_path(store.url), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    else:
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (APPEND_LOCK,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (APPEND_LOCK,))


def test_a_full_buffer_refuses_instead_of_growing(store: SqlStore) -> None:
    trail = DatabaseAuditTrail(store, max_buffer=5)
    trail.start()
    with _appends_blocked(store):
        for n in range(5):
            trail.record(entry(n))
        with pytest.raises(Unavailable, match="5 entries are waiting"):
            trail.record(entry(5))
    trail.close()
    assert len(stored(store)) == 6  # the five, then the shutdown marker


def test_a_store_failing_at_start_refuses_until_it_works(store: SqlStore) -> None:
    crashed = DatabaseAuditTrail(store)
    crashed.record(entry(1))
    crashed.flush()  # a previous run that ended without a shutdown marker
    _rename(store, "audit_block", "audit_block_away")
    trail = DatabaseAuditTrail(store)
    try:
        trail.start()
        assert not trail.healthy
        with pytest.raises(Unavailable, match="audit store unavailable"):
            trail.record(entry(2))
    finally:
        _rename(store, "audit_block_away", "audit_block")
    wait_for(lambda: trail.healthy)  # the writer kept retrying the start-up check
    trail.record(entry(3))
    trail.close()
    assert [r.interaction for r in stored(store)] == ["read", UNCLEAN_SHUTDOWN, "read", SHUTDOWN]
