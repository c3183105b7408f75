"""The audit log's SQL: append a chained batch under a lock, read it back in order, search it.

Each append (one group commit of the trail) stores one `audit_block` row: its entries packed
in seq order, each with its own chain hash and canonical bytes, plus one `audit_key` row per
patient, agent and other resource its entries name (the search index). One row per entry
cost eight B-tree inserts (the row, four indexes, the patient index and its two), more than
everything else the trail does per entry. Logs written before migration 10 hold one
`audit_log` row per entry; they are read and verified as they are, and all their seqs come
before the first block's.

Rows are written only by `append` and never changed: the tables refuse UPDATE and DELETE in
the database (migrations 6 and 9). Hashing is not done here (`auth/audit_chain.py` does it);
this module stores what it is given and reads it back exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson

from carebase.store.search_values import parse_date, range_condition, range_matches
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
    #: the canonical bytes `audit_chain.link` hashed, which `append` stores (never read back)
    packed: bytes | None = None
    #: the first seq of the block the entry is stored in (None: a row of migration 6)
    block: int | None = None
    #: what `iter_records` found wrong with the stored block around the entry, if anything
    damage: str | None = None
    #: the search keys (`audit_key`) the entry needs and its block lacks (`iter_records`)
    missing_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last stored entry's position and hash (where the next entry links on)."""

    seq: int
    hash: str
    interaction: str | None


#: Builds the records to append, given the head of the chain read under the append lock.
Builder = Callable[[ChainHead], list[AuditRecord]]


@dataclass(slots=True)
class PackedBlock:
    """A block ready to store, packed straight from entries by the trail's writer
    (`audit_detail.pack_entries`) rather than from `AuditRecord`s: its entries (as `_pack`
    packs them), their search keys, seqs, time range and first and last links."""

    first_seq: int
    last_seq: int
    min_recorded: int
    max_recorded: int
    entries: bytes
    keys: list[str]
    prev_hash: str
    hash: str


#: Builds the packed block to append (None: nothing), given the chain's head.
PackedBuilder = Callable[[ChainHead], "PackedBlock | None"]


def canonical_bytes(record: AuditRecord) -> bytes:
    """The bytes an entry's hash covers: its columns (not seq or the hashes) as a JSON array,
    a newline, then the stored event bytes (the compact detail, or an AuditEvent's JSON in
    rows of earlier versions).

    Unambiguous (orjson writes no raw newline, so the array ends at the first one) and
    always written the same way for the same entry. A block stores exactly these bytes.
    """
    columns = orjson.dumps(
        [
            record.id,
            record.recorded,
            record.interaction,
            record.action,
            record.outcome,
            record.agent,
            record.agent_name,
            record.patients,
            record.entities,
            record.break_glass,
        ]
    )
    return columns + b"\n" + record.event


#: Entry ids in blocks: the seq (12 hex digits) then 64 random bits (16 hex digits), so a
#: read by id finds the entry's block through the primary key.
ID_SEQ_DIGITS, ID_LENGTH = 12, 28


def entry_id(seq: int, suffix: str) -> str:
    """The AuditEvent id of the entry at `seq` (`suffix`: 16 random hex digits)."""
    return f"{seq:012x}{suffix}"


def id_seq(id_: str) -> int | None:
    """The seq an entry id of a block names, or None for another id."""
    if len(id_) != ID_LENGTH:
        return None
    try:
        return int(id_[:ID_SEQ_DIGITS], 16)
    except ValueError:
        return None


# --- one row per entry (migration 6): read only -----------------------------------------------


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


# --- blocks (migration 10) -------------------------------------------------------------------

_BLOCK = "first_seq, last_seq, min_recorded, max_recorded, entries, prev_hash, hash"
#: The `audit_key` row marking the index complete up to its block (keys of entries start
#: with `p:`, `a:` or `e:`).
INDEXED = "~"
#: Each packed entry: its hash (64 hex digits), the length of its canonical bytes (4 bytes,
#: big-endian), the canonical bytes.
_HASH, _LENGTH = 64, 4


def _pack(records: list[AuditRecord]) -> bytes:
    parts: list[bytes] = []
    for r in records:
        parts += frame(r.hash, r.packed if r.packed is not None else canonical_bytes(r))
    return b"".join(parts)


def frame(hash_: str, canonical: bytes) -> tuple[bytes, bytes, bytes]:
    """The parts one entry is packed in, in a block's `entries`."""
    return hash_.encode(), len(canonical).to_bytes(_LENGTH, "big"), canonical


def _unpack(row: Any) -> list[AuditRecord]:
    """The entries of a block row; a damaged block yields one record saying so."""
    first, last, lo, hi, blob, prev, last_hash = row
    first, blob = int(first), bytes(blob)
    records: list[AuditRecord] = []
    pos, seq = 0, first
    try:
        while pos < len(blob):
            hash_ = blob[pos : pos + _HASH].decode("ascii")
            size = int.from_bytes(blob[pos + _HASH : pos + _HASH + _LENGTH], "big")
            body = blob[pos + _HASH + _LENGTH : pos + _HASH + _LENGTH + size]
            if len(hash_) != _HASH or len(body) != size:
                raise ValueError("truncated")
            pos += _HASH + _LENGTH + size
            columns, _, event = body.partition(b"\n")
            id_, recorded, interaction, action, outcome, agent, agent_name, patients, entities, \
                glass = orjson.loads(columns)  # fmt: skip
            records.append(
                AuditRecord(
                    seq,
                    id_,
                    recorded,
                    interaction,
                    action,
                    outcome,
                    agent,
                    agent_name,
                    tuple(patients),
                    tuple(entities),
                    glass,
                    event,
                    prev,
                    hash_,
                    block=first,
                )
            )
            prev, seq = hash_, seq + 1
    except (ValueError, TypeError, UnicodeDecodeError, orjson.JSONDecodeError):
        damaged = AuditRecord(seq, "", 0, "", "", "", None, None, (), (), False, b"", prev, "",
                              block=first, damage="its block's packed entries cannot be read "
                              "(the block row was edited)")  # fmt: skip
        return [*records, damaged]
    summary = (records[-1].seq, records[-1].hash) if records else (first - 1, prev)
    times = [r.recorded for r in records] or [int(lo)]
    if summary != (int(last), last_hash) or (min(times), max(times)) != (int(lo), int(hi)):
        records[-1].damage = (
            "its block's stored summary (last seq, head hash or time range) disagrees with the "
            "entries it holds (the block row was edited)"
        )
    return records


def _readable(row: Any) -> list[AuditRecord]:
    """The entries of a block row that can be read (`verify` reports the rest)."""
    return [r for r in _unpack(row) if r.id]


def entry_keys(record: AuditRecord) -> list[str]:
    """The search keys (`audit_key`) an entry needs: `p:` its patients, `a:` its agent and
    user name or client id, `e:` the other resources it names (`indexed_entities`)."""
    keys = ["p:" + p for p in record.patients]
    if record.agent is not None:
        keys.append("a:" + record.agent)
    if record.agent_name is not None:
        keys.append("a:" + record.agent_name)
    keys += ["e:" + e for e in indexed_entities(record)]
    return keys


def indexed_entities(record: AuditRecord) -> tuple[str, ...]:
    """The entity references the search index holds for `record`: its entities except its
    patients' own `Patient/id` (the patient keys find those: `search` looks in both), which
    spares most reads a second index entry. Logs written before this hold those references
    too; `audit_chain.verify` accepts either."""
    entities = record.entities
    if len(entities) == 1 and len(record.patients) == 1 and entities[0][8:] == record.patients[0]:
        return ()  # a read of a Patient: the common case, without building a set
    own = {f"Patient/{p}" for p in record.patients}
    return tuple(e for e in dict.fromkeys(entities) if e not in own)


def _head(cur: Cursor, store: SqlStore, interaction: bool = True, lock: bool = False) -> ChainHead:
    """The chain's head; with `lock` (PostgreSQL), after taking the append lock, in the same
    round trip (two statements: the second's snapshot is taken once the lock is held)."""
    columns = "last_seq, hash, entries" if interaction else "last_seq, hash"
    sql = f"SELECT {columns} FROM audit_block ORDER BY first_seq DESC LIMIT 1"
    if lock:
        cur.execute(f"SELECT pg_advisory_xact_lock({APPEND_LOCK}); {sql}")
        cur.nextset()  # type: ignore[attr-defined]  # a psycopg cursor
        row = cur.fetchone()
    else:
        row = cur.execute(sql).fetchone()
    if row is not None:
        last = _last_interaction(bytes(row[2])) if interaction else None
        return ChainHead(int(row[0]), row[1], last)
    row = cur.execute(
        "SELECT seq, hash, interaction FROM audit_log ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return ChainHead(0, GENESIS_HASH, None)
    return ChainHead(int(row[0]), row[1], row[2])


def _last_interaction(blob: bytes) -> str | None:
    pos, body = 0, b""
    while pos < len(blob):
        size = int.from_bytes(blob[pos + _HASH : pos + _HASH + _LENGTH], "big")
        body = blob[pos + _HASH + _LENGTH : pos + _HASH + _LENGTH + size]
        pos += _HASH + _LENGTH + size
    try:
        return str(orjson.loads(body.partition(b"\n")[0])[2])
    except (orjson.JSONDecodeError, IndexError, TypeError):
        return None


def head(store: SqlStore) -> ChainHead:
    """The last entry of the chain (seq 0 and the genesis hash when the log is empty)."""
    with store.reading() as cur:
        return _head(cur, store)


def append(
    store: SqlStore, build: Builder, *, interaction: bool = True, index: bool = True
) -> list[AuditRecord]:
    """Append the records `build` makes from the chain's head, in one transaction, as one
    block.

    The head is read inside the transaction after taking the append lock (PostgreSQL: an
    advisory transaction lock; SQLite: the database write lock its transactions hold), so
    concurrent appenders - threads or worker processes - extend one chain in turn. With
    `interaction` False the head's `interaction` is not read (it is None): the trail needs
    it once, at start-up. The records must be linked onto that head (`audit_chain.link_all`)
    with the ids `link` gives them; anything else is refused (ValueError), nothing written.

    The block's search keys go into `audit_key` when `index` is True, with those of every
    block appended since the last time: the trail indexes once a second, since keys land
    all over the index and each commit rewrites every index page it touched. `search`
    reads the blocks not indexed yet in full.
    """
    postgresql = store.dialect == "postgresql"
    with store.writing() as cur:
        chain = _head(cur, store, interaction, lock=postgresql)
        records = build(chain)
        if records:
            _check_linked(records, chain)
            times = [r.recorded for r in records]
            first, last = records[0], records[-1]
            keys: dict[str, None] = {}
            for r in records:
                for key in entry_keys(r):
                    keys[key] = None
            _insert_block(cur, store, PackedBlock(first.seq, last.seq, min(times), max(times),
                          _pack(records), list(keys), first.prev_hash, last.hash))  # fmt: skip
        if index:
            _index_pending(cur, store)
        return records


def append_packed(
    store: SqlStore, build: PackedBuilder, *, interaction: bool = True, index: bool = True
) -> PackedBlock | None:
    """`append` for a block the trail packed itself (`PackedBlock`); the same lock, checks
    and index."""
    with store.writing() as cur:
        chain = _head(cur, store, interaction, lock=store.dialect == "postgresql")
        block = build(chain)
        if block is not None:
            if block.first_seq != chain.seq + 1 or block.prev_hash != chain.hash:
                raise ValueError(
                    f"the audit block from seq {block.first_seq} is not linked onto seq {chain.seq}"
                )
            _insert_block(cur, store, block)
        if index:
            _index_pending(cur, store)
        return block


def _insert_block(cur: Cursor, store: SqlStore, block: PackedBlock) -> None:
    cur.execute(
        store.q(f"INSERT INTO audit_block ({_BLOCK_INSERT}) VALUES ({_marks(8)})"),
        _block_row(block),
    )


def _block_row(block: PackedBlock) -> tuple[Any, ...]:
    keys = orjson.dumps(block.keys).decode()
    return (block.first_seq, block.last_seq, block.min_recorded, block.max_recorded,
            block.entries, keys, block.prev_hash, block.hash)  # fmt: skip


def append_onto(store: SqlStore, block: PackedBlock) -> bool:
    """Append `block`, packed onto the head its writer last saw (`block.prev_hash`), in
    one statement - one round trip on PostgreSQL, against four for `append_packed` - if
    that is still the head; False (nothing written) if the head moved on, when the
    caller appends through `append_packed`, which reads the head under the lock.

    Safe beside other appenders: the statement takes the append lock (PostgreSQL); a
    block linked onto a head that is no longer the last starts where the block after
    that head starts, so the primary key refuses it (ON CONFLICT DO NOTHING) even where
    the head check ran on an older snapshot; the hash check catches a head that went
    back (blocks deleted), since a hash covers its entry's seq.
    """
    row = (*_block_row(block), block.prev_hash)
    return store.write_alone(_APPEND_ONTO[store.dialect], row) == 1


_BLOCK_INSERT = "first_seq, last_seq, min_recorded, max_recorded, entries, keys, prev_hash, hash"


def _indexed_upto(cur: Cursor, store: SqlStore) -> int:
    """The last block `audit_key` is complete for (0: none)."""
    row = cur.execute(
        store.q("SELECT MAX(first_seq) FROM audit_key WHERE key = ?"), (INDEXED,)
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _index_pending(cur: Cursor, store: SqlStore) -> None:
    """Add the search keys of the blocks appended since the last time, and mark them done."""
    done = _indexed_upto(cur, store)
    row = cur.execute("SELECT MAX(first_seq) FROM audit_block").fetchone()
    if row is None or row[0] is None or int(row[0]) <= done:
        return
    if store.dialect == "postgresql":
        elements = "FROM audit_block b, jsonb_array_elements_text(b.keys::jsonb) j(value)"
    else:
        elements = "FROM audit_block b, json_each(b.keys) j"
    cur.execute(
        store.q(
            f"INSERT INTO audit_key (key, first_seq) SELECT j.value, b.first_seq {elements}"
            " WHERE b.first_seq > ? ORDER BY j.value, b.first_seq ON CONFLICT DO NOTHING"
        ),
        (done,),
    )
    cur.execute(
        store.q("INSERT INTO audit_key (key, first_seq) VALUES (?, ?) ON CONFLICT DO NOTHING"),
        (INDEXED, int(row[0])),
    )


def _check_linked(records: list[AuditRecord], chain: ChainHead) -> None:
    prev_seq, prev_hash = chain.seq, chain.hash
    for r in records:
        if r.seq != prev_seq + 1 or r.prev_hash != prev_hash or id_seq(r.id) != r.seq:
            raise ValueError(
                f"audit entry {r.id!r} at seq {r.seq} is not linked onto seq {prev_seq} "
                "with an id of its seq (audit_chain.link_all)"
            )
        prev_seq, prev_hash = r.seq, r.hash


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_ONTO_HEAD = (
    " WHERE (SELECT hash FROM audit_block ORDER BY first_seq DESC LIMIT 1) = ?"
    " ON CONFLICT DO NOTHING"
)
#: `append_onto`'s statement per dialect (PostgreSQL takes the append lock first)
_APPEND_ONTO = {
    "sqlite": f"INSERT INTO audit_block ({_BLOCK_INSERT}) SELECT {_marks(8)}{_ONTO_HEAD}",
    "postgresql": (
        f"WITH lock AS (SELECT pg_advisory_xact_lock({APPEND_LOCK})) "
        f"INSERT INTO audit_block ({_BLOCK_INSERT}) SELECT {_marks(8)} FROM lock{_ONTO_HEAD}"
    ),
}


def count(store: SqlStore) -> int:
    """How many entries the log holds."""
    with store.reading() as cur:
        rows = int(cur.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])
        blocks = cur.execute("SELECT SUM(last_seq - first_seq + 1) FROM audit_block").fetchone()
        return rows + int(blocks[0] or 0)


def has_log(store: SqlStore) -> bool:
    """Whether the database has the audit log tables (schema at migration 10 or later)."""
    with store.reading() as cur:
        return bool(store._has_table(cur, "audit_block"))


def iter_records(store: SqlStore, batch: int = 2000) -> Iterator[AuditRecord]:
    """Every entry in seq order, with what the search index holds for each, batch by batch
    (rows of migration 6 first, then the blocks)."""
    last = -1
    while True:
        with store.reading() as cur:
            rows = cur.execute(
                store.q(f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?"),
                (last, batch),
            ).fetchall()
            if not rows:
                break
            lo, hi = int(rows[0][0]), int(rows[-1][0])
            patients = _grouped(cur, store, "audit_patient", "patient", lo, hi)
            entities = _grouped(cur, store, "audit_entity", "reference", lo, hi)
        for row in rows:
            record = _record(row)
            yield _with_index(record, patients, entities)
        last = hi
    while True:
        with store.reading() as cur:
            blocks = cur.execute(
                store.q(
                    f"SELECT {_BLOCK} FROM audit_block WHERE first_seq > ? ORDER BY first_seq"
                    " LIMIT ?"
                ),
                (last, max(1, batch // 64)),
            ).fetchall()
            if not blocks:
                return
            indexed = _indexed_upto(cur, store)
            entries = [(_unpack(block), int(block[0])) for block in blocks]
            for records, first in entries:
                if first <= indexed:  # later blocks are read in full by searches
                    _note_missing_keys(cur, store, records, first)
        for records, _ in entries:
            yield from records
        last = int(blocks[-1][0])


def _note_missing_keys(
    cur: Cursor, store: SqlStore, records: list[AuditRecord], first: int
) -> None:
    """Set `missing_keys` on each entry whose search keys its block's index rows lack."""
    wanted = {r.seq: tuple(dict.fromkeys(entry_keys(r))) for r in records if r.damage is None}
    keys = list(dict.fromkeys(k for ks in wanted.values() for k in ks))
    present: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        found = cur.execute(
            store.q(
                f"SELECT key FROM audit_key WHERE first_seq = ? AND key IN ({_marks(len(chunk))})"
            ),
            (first, *chunk),
        ).fetchall()
        present.update(k for (k,) in found)
    for r in records:
        r.missing_keys = tuple(k for k in wanted.get(r.seq, ()) if k not in present)


def _with_index(
    record: AuditRecord, patients: dict[int, list[str]], entities: dict[int, list[str]]
) -> AuditRecord:
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
    newest: list[AuditRecord] = []
    upper: int | None = None
    with store.reading() as cur:
        while len(newest) < n:
            sql = f"SELECT {_BLOCK} FROM audit_block"
            args: tuple[Any, ...] = ()
            if upper is not None:
                sql, args = sql + " WHERE first_seq < ?", (upper,)
            block = cur.execute(store.q(sql + " ORDER BY first_seq DESC LIMIT 1"), args).fetchone()
            if block is None:
                break
            newest += reversed(_readable(block))
            upper = int(block[0])
        if len(newest) < n:
            rows = cur.execute(
                store.q(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT ?"),
                (n - len(newest),),
            ).fetchall()
            newest += [_record(row) for row in rows]
    return list(reversed(newest[:n]))


def by_id(store: SqlStore, id_: str) -> AuditRecord | None:
    """The entry with AuditEvent id `id_`, or None."""
    seq = id_seq(id_)
    with store.reading() as cur:
        if seq is not None:
            block = cur.execute(
                store.q(
                    f"SELECT {_BLOCK} FROM audit_block WHERE first_seq <= ?"
                    " ORDER BY first_seq DESC LIMIT 1"
                ),
                (seq,),
            ).fetchone()
            if block is not None:
                for record in _unpack(block):
                    if record.id == id_:
                        return record
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


#: Blocks one search query reads at a time (newest first) before checking the entries.
_SEARCH_BLOCKS = 16


def search(
    store: SqlStore, query: AuditQuery, *, before: int | None = None, limit: int = 20
) -> list[AuditRecord]:
    """Entries matching `query`, newest first, with seq below `before` (the paging cursor);
    at most `limit`. Malformed dates raise BadRequest naming the `date` parameter.

    Blocks come first (their seqs follow every row of migration 6): the search keys and the
    blocks' time ranges select candidate blocks, and each of their entries is checked
    against the whole query.
    """
    dates = [parse_date("date", value) for value in query.dates]
    found: list[AuditRecord] = []
    upper = before
    with store.reading() as cur:
        where, args = _block_conditions(query, dates, _indexed_upto(cur, store))
        while len(found) < limit:
            conditions = list(where)
            if upper is not None:
                conditions.append("first_seq < ?")
            sql = f"SELECT {_BLOCK} FROM audit_block"
            if conditions:
                sql += " WHERE " + " AND ".join(conditions)
            sql += " ORDER BY first_seq DESC LIMIT ?"
            bound = () if upper is None else (upper,)
            blocks = cur.execute(store.q(sql), (*args, *bound, _SEARCH_BLOCKS)).fetchall()
            for block in blocks:
                for record in reversed(_readable(block)):
                    if (before is None or record.seq < before) and _matches(record, query, dates):
                        found.append(record)
            if len(blocks) < _SEARCH_BLOCKS:
                break
            upper = int(blocks[-1][0])
    if len(found) < limit:
        found += _search_rows(store, query, before, limit - len(found))
    return found[:limit]


def _block_conditions(
    query: AuditQuery, dates: list[tuple[str, int, int]], indexed: int
) -> tuple[list[str], list[Any]]:
    """SQL on `audit_block` selecting every block that may hold a matching entry (the blocks
    after `indexed`, whose keys are not in `audit_key` yet, all may)."""
    where: list[str] = []
    args: list[Any] = []

    def keyed(keys: Iterable[str]) -> None:
        values = list(dict.fromkeys(keys))
        where.append(
            "(first_seq > ? OR first_seq IN (SELECT first_seq FROM audit_key WHERE key IN"
            f" ({_marks(len(values))})))"
        )
        args.extend([indexed, *values])

    if query.patients:
        keyed("p:" + p for p in query.patients)
    if query.required_patient:
        keyed(["p:" + query.required_patient])
    if query.entities:
        keyed(
            [*("e:" + e for e in query.entities),
             *("p:" + e[8:] for e in query.entities if e.startswith("Patient/"))]
        )  # fmt: skip
    if query.agents:
        keyed("a:" + a for a in query.agents)
    for prefix, lo, hi in dates:
        # the entries' times lie in [min_recorded, max_recorded]: keep blocks where one may
        # match (`_matches` checks each entry)
        if prefix == "ap":
            condition, values = range_condition(prefix, lo, hi, "min_recorded", "max_recorded")
        elif prefix == "eq":
            condition, values = "(max_recorded >= ? AND min_recorded <= ?)", [lo, hi]
        elif prefix in ("gt", "sa"):
            condition, values = "max_recorded > ?", [hi]
        elif prefix in ("lt", "eb"):
            condition, values = "min_recorded < ?", [lo]
        elif prefix == "ge":  # above hi, or within [lo, hi]
            condition, values = "max_recorded >= ?", [lo]
        elif prefix == "le":
            condition, values = "min_recorded <= ?", [hi]
        else:  # ne: any block may hold a match
            continue
        where.append(condition)
        args.extend(values)
    return where, args


def _matches(record: AuditRecord, query: AuditQuery, dates: list[tuple[str, int, int]]) -> bool:
    """Whether one entry matches the whole query (what the row search asks in SQL)."""
    patients = record.patients
    if query.patients and not any(p in patients for p in query.patients):
        return False
    if query.required_patient and query.required_patient not in patients:
        return False
    if query.entities and not any(
        e in record.entities or (e.startswith("Patient/") and e[8:] in patients)
        for e in query.entities
    ):
        return False
    if query.agents and record.agent not in query.agents and record.agent_name not in query.agents:
        return False
    if query.actions and record.action not in query.actions:
        return False
    if query.outcomes and record.outcome not in query.outcomes:
        return False
    if query.subtypes and record.interaction not in query.subtypes:
        return False
    at = record.recorded
    return all(range_matches(prefix, lo, hi, at, at) for prefix, lo, hi in dates)


def _search_rows(
    store: SqlStore, query: AuditQuery, before: int | None, limit: int
) -> list[AuditRecord]:
    """The search among rows of migration 6."""
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
