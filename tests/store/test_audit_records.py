"""The audit tables: append and read back exactly, search, and UPDATE/DELETE refused by the DB."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from carebase.auth.audit_chain import link_all, verify
from carebase.errors import StorageError
from carebase.store import audit_records
from carebase.store.audit_records import AuditQuery, AuditRecord, ChainHead
from carebase.store.sql_store import SqlStore

DAY = 86_400_000
T0 = 1_780_000_000_000  # 2026-05-28


def record(n: int, *, patients: tuple[str, ...] = (), agent: str = "Practitioner/1") -> AuditRecord:
    return AuditRecord(
        seq=0,
        id=f"ev-{n}",
        recorded=T0 + n * DAY,
        interaction="read" if n % 2 else "search-type",
        action="R",
        outcome="0" if n % 3 else "4",
        agent=agent,
        agent_name="dr.grey" if agent == "Practitioner/1" else "lab-feed",
        patients=patients,
        entities=(*tuple(f"Patient/{p}" for p in patients), f"Observation/o{n}"),
        break_glass=False,
        event=b'{"resourceType":"AuditEvent","id":"ev-%d"}' % n,
        prev_hash="",
        hash="",
    )


def append(store: SqlStore, records: list[AuditRecord]) -> list[AuditRecord]:
    return audit_records.append(store, lambda head: link_all(records, head.seq, head.hash))


def raw(store: SqlStore, sql: str) -> None:
    with store.writing() as cur:
        cur.execute(sql)


def test_append_and_read_back(store: SqlStore) -> None:
    assert audit_records.head(store) == ChainHead(0, audit_records.GENESIS_HASH, None)
    first = append(store, [record(1, patients=("a",)), record(2, patients=("a", "b"))])
    second = append(store, [record(3)])
    assert [r.seq for r in first + second] == [1, 2, 3]
    assert second[0].prev_hash == first[-1].hash  # the second batch links onto the first
    stored = list(audit_records.iter_records(store, batch=2))
    assert [r.id for r in stored] == ["ev-1", "ev-2", "ev-3"]
    assert stored[1].patients == ("a", "b") and stored[1].indexed_patients == ("a", "b")
    assert stored[1].event == first[1].event
    assert verify(stored).intact
    assert audit_records.count(store) == 3
    assert [r.seq for r in audit_records.tail(store, 2)] == [2, 3]
    found = audit_records.by_id(store, "ev-2")
    assert found is not None and found.hash == first[1].hash
    assert audit_records.by_id(store, "nope") is None
    assert audit_records.head(store).seq == 3


def test_search(store: SqlStore) -> None:
    append(store, [record(n, patients=(f"p{n % 2}",)) for n in range(1, 7)])
    append(store, [record(7, agent="lab", patients=("p1",))])

    def ids(query: AuditQuery, **kw: Any) -> list[str]:
        return [r.id for r in audit_records.search(store, query, **kw)]

    assert ids(AuditQuery()) == [f"ev-{n}" for n in range(7, 0, -1)]  # newest first
    assert ids(AuditQuery(patients=("p0",))) == ["ev-6", "ev-4", "ev-2"]
    assert ids(AuditQuery(agents=("lab-feed",))) == ["ev-7"]
    assert ids(AuditQuery(agents=("lab",))) == ["ev-7"]
    assert ids(AuditQuery(actions=("R",), outcomes=("4",))) == ["ev-6", "ev-3"]
    assert ids(AuditQuery(subtypes=("read",), patients=("p1",))) == ["ev-7", "ev-5", "ev-3", "ev-1"]
    assert ids(AuditQuery(entities=("Observation/o4",))) == ["ev-4"]
    # a patient's own reference is indexed as a patient, and found as an entity all the same
    assert ids(AuditQuery(entities=("Patient/p0", "Observation/o5"))) == [
        "ev-6", "ev-5", "ev-4", "ev-2",
    ]  # fmt: skip
    assert ids(AuditQuery(dates=("ge2026-05-31", "lt2026-06-02"))) == ["ev-4", "ev-3"]
    assert ids(AuditQuery(dates=("2026-05-30",))) == ["ev-2"]
    assert ids(AuditQuery(patients=("p1", "p0"), required_patient="p0")) == ["ev-6", "ev-4", "ev-2"]
    assert ids(AuditQuery(), before=5, limit=2) == ["ev-4", "ev-3"]


def test_update_and_delete_are_refused_by_the_database(store: SqlStore) -> None:
    append(store, [record(1, patients=("a",))])
    refused = (sqlite3.DatabaseError, StorageError)  # psycopg errors arrive translated
    for sql in (
        "UPDATE audit_log SET outcome = '0'",
        "DELETE FROM audit_log",
        "UPDATE audit_patient SET patient = 'b'",
        "DELETE FROM audit_patient",
        "DELETE FROM audit_entity",
    ):
        with pytest.raises(refused, match="append-only"):
            raw(store, sql)
    if store.dialect == "postgresql":
        with pytest.raises(refused, match="append-only"):
            raw(store, "TRUNCATE audit_log")
    stored = list(audit_records.iter_records(store))
    assert len(stored) == 1 and verify(stored).intact


def test_a_failed_build_appends_nothing(store: SqlStore) -> None:
    def broken(head: ChainHead) -> list[AuditRecord]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        audit_records.append(store, broken)
    assert audit_records.count(store) == 0
