"""The audit tables: append and read back exactly, search, and UPDATE/DELETE refused by the DB."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any

import orjson
import pytest

from carebase.auth.audit_chain import link_all, verify
from carebase.auth.audit_detail import pack_entries
from carebase.errors import StorageError
from carebase.store import audit_records
from carebase.store.audit_records import AuditQuery, AuditRecord, ChainHead
from carebase.store.search_values import range_condition, range_matches
from carebase.store.sql_store import SqlStore

DAY = 86_400_000
T0 = 1_780_000_000_000  # 2026-05-28


def record(n: int, *, patients: tuple[str, ...] = (), agent: str = "Practitioner/1") -> AuditRecord:
    return AuditRecord(
        seq=0,
        id="",  # link names it after its seq
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


def append_rows(store: SqlStore, records: list[AuditRecord]) -> list[AuditRecord]:
    """Append as the log did before migration 10: one audit_log row per entry, with its
    audit_patient and audit_entity rows (ids and canonical bytes as they were)."""
    linked = link_all(records, audit_records.head(store).seq, audit_records.head(store).hash)
    with store.writing() as cur:
        for r in linked:
            cur.execute(
                store.q(
                    f"INSERT INTO audit_log ({audit_records._COLUMNS}) VALUES"
                    f" ({', '.join('?' * 14)})"
                ),
                (r.seq, r.id, r.recorded, r.interaction, r.action, r.outcome, r.agent,
                 r.agent_name, orjson.dumps(r.patients).decode(),
                 orjson.dumps(r.entities).decode(), int(r.break_glass), r.event, r.prev_hash,
                 r.hash),
            )  # fmt: skip
            for p in dict.fromkeys(r.patients):
                cur.execute(store.q("INSERT INTO audit_patient VALUES (?, ?)"), (r.seq, p))
            for e in dict.fromkeys(r.entities):  # the oldest logs indexed every entity
                cur.execute(store.q("INSERT INTO audit_entity VALUES (?, ?)"), (r.seq, e))
    return linked


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
    assert [r.id for r in stored] == [r.id for r in first + second]
    assert [r.id[:12] for r in stored] == ["000000000001", "000000000002", "000000000003"]
    assert stored[1].patients == ("a", "b") and stored[1].block == 1
    assert [r.missing_keys for r in stored] == [(), (), ()]  # every search key is indexed
    assert stored[1].event == first[1].event
    assert verify(stored).intact
    assert audit_records.count(store) == 3
    assert [r.seq for r in audit_records.tail(store, 2)] == [2, 3]
    found = audit_records.by_id(store, first[1].id)
    assert found is not None and found.hash == first[1].hash and found.seq == 2
    assert audit_records.by_id(store, "nope") is None
    assert audit_records.head(store).seq == 3


def test_search(store: SqlStore) -> None:
    append(store, [record(n, patients=(f"p{n % 2}",)) for n in range(1, 7)])
    append(store, [record(7, agent="lab", patients=("p1",))])

    def ids(query: AuditQuery, **kw: Any) -> list[str]:
        # record n is entry n (one entry per record, in order)
        return [f"ev-{r.seq}" for r in audit_records.search(store, query, **kw)]

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
    append_rows(store, [record(1, patients=("a",)) for _ in range(1)])
    append(store, [record(2, patients=("a",))])
    refused = (sqlite3.DatabaseError, StorageError)  # psycopg errors arrive translated
    for sql in (
        "UPDATE audit_log SET outcome = '0'",
        "DELETE FROM audit_log",
        "UPDATE audit_patient SET patient = 'b'",
        "DELETE FROM audit_patient",
        "DELETE FROM audit_entity",
        "UPDATE audit_block SET hash = 'x'",
        "DELETE FROM audit_block",
        "UPDATE audit_key SET key = 'p:b'",
        "DELETE FROM audit_key",
    ):
        with pytest.raises(refused, match="append-only"):
            raw(store, sql)
    if store.dialect == "postgresql":
        with pytest.raises(refused, match="append-only"):
            raw(store, "TRUNCATE audit_log")
        with pytest.raises(refused, match="append-only"):
            raw(store, "TRUNCATE audit_block")
    stored = list(audit_records.iter_records(store))
    assert len(stored) == 2 and verify(stored).intact


def test_a_failed_build_appends_nothing(store: SqlStore) -> None:
    def broken(head: ChainHead) -> list[AuditRecord]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        audit_records.append(store, broken)
    assert audit_records.count(store) == 0


def test_a_log_of_rows_is_read_searched_and_verified_with_the_blocks_after_it(
    store: SqlStore,
) -> None:
    old = [record(n, patients=(f"p{n % 2}",)) for n in range(1, 4)]
    old[0].id = "legacy-id-1"  # ids of logs before migration 10 are any FHIR id
    rows = append_rows(store, old)
    blocks = append(store, [record(n, patients=(f"p{n % 2}",)) for n in range(4, 7)])
    assert [r.seq for r in blocks] == [4, 5, 6] and blocks[0].prev_hash == rows[-1].hash
    stored = list(audit_records.iter_records(store, batch=2))
    assert [r.seq for r in stored] == [1, 2, 3, 4, 5, 6]
    assert [r.block for r in stored] == [None, None, None, 4, 4, 4]
    assert verify(stored).intact and audit_records.count(store) == 6
    found = [r.seq for r in audit_records.search(store, AuditQuery(patients=("p1",)), limit=3)]
    assert found == [5, 3, 1]  # newest first, across blocks and rows
    assert [r.seq for r in audit_records.search(store, AuditQuery(), before=5, limit=3)] == [
        4, 3, 2,
    ]  # fmt: skip
    assert [r.seq for r in audit_records.tail(store, 4)] == [3, 4, 5, 6]
    row = audit_records.by_id(store, "legacy-id-1")
    assert row is not None and row.seq == 1
    entry = audit_records.by_id(store, blocks[1].id)
    assert entry is not None and entry.seq == 5 and entry.hash == blocks[1].hash
    assert audit_records.head(store) == ChainHead(6, blocks[-1].hash, "search-type")


def test_records_not_linked_onto_the_head_are_refused(store: SqlStore) -> None:
    append(store, [record(1)])
    stale = link_all([record(2)], 0, audit_records.GENESIS_HASH)  # linked onto another head
    with pytest.raises(ValueError, match="not linked"):
        audit_records.append(store, lambda head: stale)
    named = link_all([record(2)], 1, audit_records.head(store).hash)
    named[0].id = "chosen-by-hand"  # by_id could not find it in its block
    with pytest.raises(ValueError, match="not linked"):
        audit_records.append(store, lambda head: named)
    assert audit_records.count(store) == 1


def _tamper(store: SqlStore, sql: str, args: tuple[Any, ...]) -> None:
    """Run `sql` with the append-only triggers of audit_block and audit_key dropped."""
    with store.writing() as cur:
        for table in ("audit_block", "audit_key"):
            if store.dialect == "postgresql":
                cur.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            else:
                cur.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
                cur.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        cur.execute(store.q(sql), args)


def test_a_block_linked_onto_a_head_that_is_no_longer_the_last_is_refused(
    store: SqlStore,
) -> None:
    def block(head: tuple[int, str], n: int) -> audit_records.PackedBlock:
        values = ("read", "R", "0", 1_700_000_000_000 + n, (), (f"Observation/o{n}",),
                  None, None, None, None, None, None)  # fmt: skip
        return pack_entries([values], *head, "carebase", None)

    first = audit_records.append_packed(store, lambda h: block((h.seq, h.hash), 1))
    assert first is not None
    second = block((first.last_seq, first.hash), 2)
    assert audit_records.append_onto(store, second)  # onto the head: one statement
    assert not audit_records.append_onto(store, block((first.last_seq, first.hash), 3))
    third = block((second.last_seq, second.hash), 4)
    # the head goes back (the second block deleted): appending onto it would leave a gap
    _tamper(store, "DELETE FROM audit_block WHERE first_seq = ?", (second.first_seq,))
    assert not audit_records.append_onto(store, third)
    assert [r.seq for r in audit_records.iter_records(store)] == [1]


def test_verify_names_an_edited_entry_in_its_block(store: SqlStore) -> None:
    linked = append(store, [record(n, patients=("a",)) for n in range(1, 5)])
    edited = replace(linked[2], outcome="12", packed=None)  # its hash as it was
    packed = audit_records._pack([*linked[:2], edited, linked[3]])
    _tamper(store, "UPDATE audit_block SET entries = ? WHERE first_seq = 1", (packed,))
    result = verify(audit_records.iter_records(store))
    assert (result.intact, result.broken_seq, result.broken_id) == (False, 3, linked[2].id)
    assert "does not match its hash" in (result.reason or "")


def test_verify_names_a_damaged_block_and_a_block_summary_that_disagrees(
    store: SqlStore,
) -> None:
    append(store, [record(1), record(2)])
    append(store, [record(3)])
    _tamper(store, "UPDATE audit_block SET max_recorded = 0 WHERE first_seq = 1", ())
    result = verify(audit_records.iter_records(store))
    assert result.broken_seq == 2 and "summary" in (result.reason or "")
    _tamper(store, "UPDATE audit_block SET entries = ? WHERE first_seq = 3", (b"garbage",))
    records = list(audit_records.iter_records(store))
    assert "cannot be read" in (records[-1].damage or "")
    # searches and tail serve the entries that can be read
    assert ids_of(store, AuditQuery()) == [2, 1]
    assert [r.seq for r in audit_records.tail(store, 5)] == [1, 2]


def test_verify_finds_a_missing_search_key_once_the_block_is_indexed(store: SqlStore) -> None:
    append(store, [record(1, patients=("a",)), record(2, patients=("b",))])
    _tamper(store, "DELETE FROM audit_key WHERE key = 'p:b'", ())
    result = verify(audit_records.iter_records(store))
    assert result.broken_seq == 2 and "p:b" in (result.reason or "")


def test_blocks_not_indexed_yet_are_searched_in_full(store: SqlStore) -> None:
    append(store, [record(1, patients=("a",))])
    unindexed = audit_records.append(
        store,
        lambda head: link_all([record(2, patients=("b",))], head.seq, head.hash),
        index=False,
    )
    assert ids_of(store, AuditQuery(patients=("b",))) == [2]
    assert ids_of(store, AuditQuery(patients=("a",))) == [1]
    assert verify(audit_records.iter_records(store)).intact  # no keys expected for it yet
    append(store, [record(3, patients=("b",))])  # indexes both pending blocks
    with store.reading() as cur:
        keyed = cur.execute(
            store.q("SELECT first_seq FROM audit_key WHERE key = ? ORDER BY first_seq"), ("p:b",)
        ).fetchall()
    assert [int(k) for (k,) in keyed] == [unindexed[0].seq, 3]
    assert ids_of(store, AuditQuery(patients=("b",))) == [3, 2]


def ids_of(store: SqlStore, query: AuditQuery) -> list[int]:
    return [r.seq for r in audit_records.search(store, query, limit=50)]


def test_range_matches_agrees_with_range_condition() -> None:
    """The date check searches of blocks make per entry is the SQL row search's, in Python."""
    conn = sqlite3.connect(":memory:")
    lo, hi = T0, T0 + DAY - 1
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"):
        condition, values = range_condition(prefix, lo, hi, "v", "v")
        for at in (lo - DAY, lo - 1, lo, lo + 5, hi, hi + 1, hi + DAY):
            query = f"SELECT {condition} FROM (SELECT ? AS v)"
            (sql,) = conn.execute(query, (*values, at)).fetchone()
            assert range_matches(prefix, lo, hi, at, at) == bool(sql), (prefix, at)
