"""The audit log's hash chain: linking entries, and verifying a stored chain (pure functions).

Each entry's hash is SHA-256 over the previous entry's hash, the entry's position (`seq`)
and its canonical bytes (every stored column, the entry's detail included, from which the
AuditEvent a reader sees is rendered: `auth/audit_detail.py`). Changing,
removing, inserting or moving any entry therefore breaks the chain at or right after that
entry, unless every later hash is recomputed - and the head hash an auditor noted earlier
(`carebase audit verify` prints it) then no longer matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from carebase.store.audit_records import GENESIS_HASH, AuditRecord, indexed_entities

#: Interactions the trail writes about itself (not accesses): start-up checks and shutdown.
SHUTDOWN = "shutdown"
UNCLEAN_SHUTDOWN = "unclean-shutdown"


def canonical_bytes(record: AuditRecord) -> bytes:
    """The bytes an entry's hash covers: its columns (not seq or the hashes) as a JSON array,
    a newline, then the stored event bytes (the compact detail, or an AuditEvent's JSON in
    rows of earlier versions).

    Unambiguous (orjson writes no raw newline, so the array ends at the first one) and
    always written the same way for the same row.
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


def entry_hash(prev_hash: str, seq: int, record: AuditRecord) -> str:
    """SHA-256 (hex) over the previous hash, the position and the canonical bytes."""
    digest = hashlib.sha256(bytes.fromhex(prev_hash))
    digest.update(seq.to_bytes(8, "big", signed=True))
    digest.update(canonical_bytes(record))
    return digest.hexdigest()


def link(record: AuditRecord, seq: int, prev_hash: str) -> AuditRecord:
    """`record` placed at `seq` after an entry whose hash is `prev_hash`, with its own hash
    (set on `record` itself: this runs for every entry written, and a record is linked
    again, wherever the chain's head then is, if writing it failed)."""
    record.seq, record.prev_hash = seq, prev_hash
    record.hash = entry_hash(prev_hash, seq, record)
    return record


def link_all(records: Iterable[AuditRecord], after_seq: int, after_hash: str) -> list[AuditRecord]:
    """`records` chained one after another onto the entry (`after_seq`, `after_hash`)."""
    linked: list[AuditRecord] = []
    seq, prev = after_seq, after_hash
    for record in records:
        seq += 1
        placed = link(record, seq, prev)
        linked.append(placed)
        prev = placed.hash
    return linked


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of verifying a chain.

    `intact` is True when every entry links to its predecessor and matches its hash;
    otherwise `broken_seq`/`broken_id` name the first entry where the chain breaks and
    `reason` says what is wrong there. `count` is how many entries were checked (up to and
    including the broken one); `head` the last good hash; `unclean_restarts` the number of
    entries saying the server had stopped without a clean shutdown (possible loss of the
    last few milliseconds of entries before each).
    """

    intact: bool
    count: int
    head: str
    broken_seq: int | None = None
    broken_id: str | None = None
    reason: str | None = None
    unclean_restarts: int = 0


def _problem(record: AuditRecord, expected_seq: int, prev_hash: str) -> str | None:
    """What is wrong with `record` as the entry after one with hash `prev_hash`, or None."""
    if record.seq > expected_seq:
        missing = (
            f"entry {expected_seq} is missing"
            if record.seq == expected_seq + 1
            else f"entries {expected_seq} to {record.seq - 1} are missing"
        )
        return f"{missing} (deleted), the chain jumps from seq {expected_seq - 1} to {record.seq}"
    if record.seq < expected_seq:
        return f"seq {record.seq} is out of order after seq {expected_seq - 1} (reordered)"
    if record.hash != entry_hash(record.prev_hash, record.seq, record):
        return (
            "its content does not match its hash: the entry was edited, or moved here from "
            "another position"
        )
    if record.prev_hash != prev_hash:
        before = "the chain's start" if expected_seq == 1 else f"entry {expected_seq - 1}"
        return (
            f"its link (prev_hash) does not match the hash of {before}: an entry before it "
            "was deleted, inserted, replaced or reordered"
        )
    if record.indexed_patients is not None and record.indexed_patients != tuple(
        sorted(set(record.patients))
    ):
        return "the patient search index (audit_patient) disagrees with the entry's patients"
    if record.indexed_entities is not None and record.indexed_entities not in (
        tuple(sorted(indexed_entities(record))),
        tuple(sorted(set(record.entities))),  # logs written before patients were left out
    ):
        return "the entity search index (audit_entity) disagrees with the entry's entities"
    return None


def verify(
    records: Iterable[AuditRecord], progress: Callable[[int], None] | None = None
) -> VerifyResult:
    """Check a chain read in seq order; stops at the first broken entry.

    `progress` is called with the number of entries checked so far, every 1,000 entries.
    """
    prev_hash, expected, checked, unclean = GENESIS_HASH, 1, 0, 0
    for record in records:
        checked += 1
        problem = _problem(record, expected, prev_hash)
        if problem is not None:
            return VerifyResult(False, checked, prev_hash, record.seq, record.id, problem, unclean)
        if record.interaction == UNCLEAN_SHUTDOWN:
            unclean += 1
        prev_hash, expected = record.hash, record.seq + 1
        if progress is not None and checked % 1000 == 0:
            progress(checked)
    if progress is not None:
        progress(checked)
    return VerifyResult(True, checked, prev_hash, unclean_restarts=unclean)
