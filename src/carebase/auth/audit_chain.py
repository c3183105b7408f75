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
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from carebase.store.audit_records import (
    GENESIS_HASH,
    ID_LENGTH,
    ID_SEQ_DIGITS,
    AuditRecord,
    canonical_bytes,
    entry_id,
    indexed_entities,
)

__all__ = [
    "VerifyResult",
    "canonical_bytes",
    "chain_hash",
    "entry_hash",
    "id_suffix",
    "link",
    "link_all",
    "verify",
]

#: Interactions the trail writes about itself (not accesses): start-up checks and shutdown.
SHUTDOWN = "shutdown"
UNCLEAN_SHUTDOWN = "unclean-shutdown"


def entry_hash(prev_hash: str, seq: int, record: AuditRecord) -> str:
    """SHA-256 (hex) over the previous hash, the position and the canonical bytes."""
    return chain_hash(prev_hash, seq, canonical_bytes(record))


#: An empty SHA-256 state to copy: constructing one looks the algorithm up every time
_SHA256 = hashlib.sha256()


def chain_hash(prev_hash: str, seq: int, canonical: bytes) -> str:
    """SHA-256 (hex) over the previous hash, the position and an entry's canonical bytes."""
    digest = _SHA256.copy()
    digest.update(bytes.fromhex(prev_hash) + seq.to_bytes(8, "big", signed=True) + canonical)
    return digest.hexdigest()


#: Random id suffixes (16 hex digits each), drawn from the OS in bulk rather than per entry.
_suffixes: list[str] = []


def id_suffix() -> str:
    """16 random hex digits, for an entry id (`audit_records.entry_id`)."""
    try:
        return _suffixes.pop()
    except IndexError:
        pool = os.urandom(8 * 512).hex()
        _suffixes.extend(pool[i : i + 16] for i in range(0, len(pool), 16))
        return _suffixes.pop()


def link(record: AuditRecord, seq: int, prev_hash: str) -> AuditRecord:
    """`record` placed at `seq` after an entry whose hash is `prev_hash`, with its own hash
    (set on `record` itself: this runs for every entry written, and a record is linked
    again, wherever the chain's head then is, if writing it failed).

    A record without an id gets one naming its seq (`audit_records.entry_id`), renumbered
    if it is linked again elsewhere; `packed` keeps the canonical bytes for the store.
    """
    id_ = record.id
    if not id_:
        record.id = entry_id(seq, id_suffix())
    elif record.seq and len(id_) == ID_LENGTH and id_.startswith(f"{record.seq:012x}"):
        record.id = entry_id(seq, id_[ID_SEQ_DIGITS:])  # linked before, at another seq
    record.seq, record.prev_hash = seq, prev_hash
    packed = record.packed = canonical_bytes(record)
    record.hash = chain_hash(prev_hash, seq, packed)
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
    if record.damage is not None and not record.id:
        return record.damage  # its block cannot be read from here on
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
    if record.missing_keys:
        return (
            f"the search index (audit_key) lacks {', '.join(record.missing_keys)} for its "
            "block: searches would not find the entry"
        )
    return record.damage


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
