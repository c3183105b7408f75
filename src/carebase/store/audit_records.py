"""The audit log's SQL: append a chained batch under a lock, read it back in order, search it.

Rows are written only by `append` and never changed: the tables refuse UPDATE and DELETE in
the database (migration 6). Hashing is not done here (`auth/audit_chain.py` does it); this
module stores what it is given and reads it back exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from carebase.store.search_values import parse_date, range_condition
from carebase.store.sql_store import Cursor, SqlStore

#: Arbitrary constant key of the PostgreSQL advisory lock that serialises appends (every
#: worker process takes it, so the chain stays one chain).
APPEND_LOCK = 0x41554449
#: The hash a chain's first entry points back to.
GENESIS_HASH = "0" * 64

_COLUMNS = (
    "seq, id, recorded, interaction, action, outcome, agent, agent_name, patients, entities,"
    " break_glass, event, prev_hash, hash"
)


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
# which made building one (for every entry written) cost more than its SHA-256.
@dataclass(slots=True)
class AuditRecord:
    """One stored audit log row: the event bytes, what searches select on, and its links.

    `event` is the entry's compact detail (rendered to an AuditEvent when read, by
    `auth/audit_detail.py`) or, in rows of earlier versions, the AuditEvent JSON itself.
    `recorded` is epoch milliseconds; `agent` is who acted (a FHIR reference such as
    `Practitioner/7`, else the user name or client id), `agent_name` the user name or client
    id; `patients` and `entities` are the Patient ids and `Type/id` references the event is
    about. `indexed_patients`/`indexed_entities` are what the search tables hold for it (read
    back by `iter_records`, so verification can check them against the hashed columns).
    """

    seq: int
    id: str
    recorded: int
    interaction: str
    action: str
    outcome: str
    agent: str | None
    agent_name: str | None
    patients: tuple[str, ...]
    entities: tuple[str, ...]
    break_glass: bool
    event: bytes
    prev_hash: str
    hash: str
    indexed_patients: tuple[str, ...] | None = None
    indexed_entities: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last stored entry's position and hash (where the next entry links on)."""

    seq: int
    hash: str
    interaction: str | None


#: Builds the records to append, given the head of the chain read under the append lock.
Builder = Callable[[ChainHead], list[AuditRecord]]


def _row(record: AuditRecord) -> tuple[Any, ...]:
    return (
        record.seq,
        record.id,
        record.recorded,
        record.interaction,
        record.action,
        record.outcome,
        record.agent,
        record.agent_name,
        orjson.dumps(record.patients).decode(),
        orjson.dumps(record.entities).decode(),
        1 if record.break_glass else 0,
        record.event,
        record.prev_hash,
        record.hash,
    )


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        seq=int(row[0]),
        id=row[1],
        recorded=int(row[2]),
        interaction=row[3],
        action=row[4],
        outcome=row[5],
        agent=row[6],
        agent_name=row[7],
        patients=tuple(orjson.loads(row[8])),
        entities=tuple(orjson.loads(row[9])),
        break_glass=bool(row[10]),
        event=bytes(row[11]),
        prev_hash=row[12],
        hash=row[13],
    )


def _head(cur: Cursor) -> ChainHead:
    row = cur.execute(
        "SELECT seq, hash, interaction FROM audit_log ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return ChainHead(0, GENESIS_HASH, None)
    return ChainHead(int(row[0]), row[1], row[2])


def head(store: SqlStore) -> ChainHead:
    """The last entry of the chain (seq 0 and the genesis hash when the log is empty)."""
    with store.reading() as cur:
        return _head(cur)


def append(store: SqlStore, build: Builder) -> list[AuditRecord]:
    """Append the records `build` makes from the chain's head, in one transaction.

    The head is read inside the transaction after taking the append lock (PostgreSQL: an
    advisory transaction lock; SQLite: the database write lock its transactions hold), so
    concurrent appenders - threads or worker processes - extend one chain in turn.
    """
    with store.writing() as cur:
        if store.dialect == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
        records = build(_head(cur))
        _insert(store, cur, "audit_log", _COLUMNS, [_row(r) for r in records])
        patients = [(r.seq, p) for r in records for p in dict.fromkeys(r.patients)]
        _insert(store, cur, "audit_patient", "seq, patient", patients)
        entities = [(r.seq, e) for r in records for e in indexed_entities(r)]
        _insert(store, cur, "audit_entity", "seq, reference", entities)
        return records


def indexed_entities(record: AuditRecord) -> tuple[str, ...]:
    """The entity references `audit_entity` holds for `record`: its entities except its
    patients' own `Patient/id` (`audit_patient` finds those: `search` looks in both), which
    spares most reads a second random-order index insert. Logs written before this hold
    those references too; `audit_chain.verify` accepts either."""
    own = {f"Patient/{p}" for p in record.patients}
    return tuple(e for e in dict.fromkeys(record.entities) if e not in own)


def _insert(
    store: SqlStore, cur: Cursor, table: str, columns: str, rows: list[tuple[Any, ...]]
) -> None:
    """Insert `rows`: one COPY stream on PostgreSQL (an INSERT each cost 10 times as much),
    executemany on SQLite (in-process, already cheap)."""
    if not rows:
        return
    if store.dialect == "postgresql":
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for row in rows:
                copy.write_row(row)
    else:
        marks = _marks(len(rows[0]))
        cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def count(store: SqlStore) -> int:
    """How many entries the log holds."""
    with store.reading() as cur:
        return int(cur.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])


def has_log(store: SqlStore) -> bool:
    """Whether the database has the audit log tables (schema at migration 6 or later)."""
    with store.reading() as cur:
        return bool(store._has_table(cur, "audit_log"))


def iter_records(store: SqlStore, batch: int = 2000) -> Iterator[AuditRecord]:
    """Every entry in seq order, with what the search tables hold for each, batch by batch."""
    last = -1
    while True:
        with store.reading() as cur:
            rows = cur.execute(
                store.q(f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?"),
                (last, batch),
            ).fetchall()
            if not rows:
                return
            lo, hi = int(rows[0][0]), int(rows[-1][0])
            patients = _grouped(cur, store, "audit_patient", "patient", lo, hi)
            entities = _grouped(cur, store, "audit_entity", "reference", lo, hi)
        for row in rows:
            record = _record(row)
            yield _with_index(record, patients, entities)
        last = hi


def _with_index(
    record: AuditRecord, patients: dict[int, list[str]], entities: dict[int, list[str]]
) -> AuditRecord:
    from dataclasses import replace

    return replace(
        record,
        indexed_patients=tuple(sorted(patients.get(record.seq, ()))),
        indexed_entities=tuple(sorted(entities.get(record.seq, ()))),
    )


def _grouped(
    cur: Cursor, store: SqlStore, table: str, column: str, lo: int, hi: int
) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    rows = cur.execute(
        store.q(f"SELECT seq, {column} FROM {table} WHERE seq >= ? AND seq <= ?"), (lo, hi)
    ).fetchall()
    for seq, value in rows:
        out.setdefault(int(seq), []).append(value)
    return out


def tail(store: SqlStore, n: int) -> list[AuditRecord]:
    """The last `n` entries, oldest first."""
    with store.reading() as cur:
        rows = cur.execute(
            store.q(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT ?"), (n,)
        ).fetchall()
    return [_record(row) for row in reversed(rows)]


def by_id(store: SqlStore, id_: str) -> AuditRecord | None:
    """The entry with AuditEvent id `id_`, or None."""
    with store.reading() as cur:
        row = cur.execute(
            store.q(f"SELECT {_COLUMNS} FROM audit_log WHERE id = ?"), (id_,)
        ).fetchone()
    return _record(row) if row else None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """What an audit search selects on (each list: any of its values; lists combine with AND).

    `dates` are FHIR date search values with their prefixes (`ge2026-01-01`), each one a
    condition; `agents` match the agent reference or the user name / client id;
    `required_patient` restricts the result to one patient's entries whatever else is asked.
    """

    patients: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    subtypes: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    required_patient: str | None = None


def search(
    store: SqlStore, query: AuditQuery, *, before: int | None = None, limit: int = 20
) -> list[AuditRecord]:
    """Entries matching `query`, newest first, with seq below `before` (the paging cursor);
    at most `limit`. Malformed dates raise BadRequest naming the `date` parameter."""
    where: list[str] = []
    args: list[Any] = []

    def any_of(column: str, values: tuple[str, ...]) -> None:
        if values:
            where.append(f"{column} IN ({_marks(len(values))})")
            args.extend(values)

    for patients in (query.patients, (query.required_patient,) if query.required_patient else ()):
        if patients:
            marks = _marks(len(patients))
            where.append(f"seq IN (SELECT seq FROM audit_patient WHERE patient IN ({marks}))")
            args.extend(patients)
    if query.entities:
        marks = _marks(len(query.entities))
        patients = tuple(e[len("Patient/") :] for e in query.entities if e.startswith("Patient/"))
        condition = f"seq IN (SELECT seq FROM audit_entity WHERE reference IN ({marks}))"
        args.extend(query.entities)
        if patients:  # their own Patient references are indexed as patients (see above)
            condition += (
                f" OR seq IN (SELECT seq FROM audit_patient WHERE patient IN"
                f" ({_marks(len(patients))}))"
            )
            args.extend(patients)
        where.append(f"({condition})")
    if query.agents:
        marks = _marks(len(query.agents))
        where.append(f"(agent IN ({marks}) OR agent_name IN ({marks}))")
        args.extend([*query.agents, *query.agents])
    any_of("action", query.actions)
    any_of("outcome", query.outcomes)
    any_of("interaction", query.subtypes)
    for value in query.dates:
        prefix, lo, hi = parse_date("date", value)
        condition, values = range_condition(prefix, lo, hi, "recorded", "recorded")
        where.append(condition)
        args.extend(values)
    if before is not None:
        where.append("seq < ?")
        args.append(before)
    sql = f"SELECT {_COLUMNS} FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"
    with store.reading() as cur:
        rows = cur.execute(store.q(sql), (*args, limit)).fetchall()
    return [_record(row) for row in rows]
