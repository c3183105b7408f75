"""The hash chain: a good chain verifies; every kind of tampering is found and named first."""

from __future__ import annotations

import itertools
from dataclasses import replace

from carebase.auth.audit_chain import UNCLEAN_SHUTDOWN, entry_hash, link, link_all, verify
from carebase.store.audit_records import GENESIS_HASH, AuditRecord, indexed_entities


def record(n: int, interaction: str = "read") -> AuditRecord:
    """An unchained entry about patient p<n>."""
    return AuditRecord(
        seq=0,
        id=f"ev-{n}",
        recorded=1_700_000_000_000 + n,
        interaction=interaction,
        action="R",
        outcome="0",
        agent="Practitioner/1",
        agent_name="dr",
        patients=(f"p{n}",),
        entities=(f"Patient/p{n}",),
        break_glass=False,
        event=b'{"resourceType":"AuditEvent","id":"ev-%d"}' % n,
        prev_hash="",
        hash="",
    )


def chain(n: int = 6) -> list[AuditRecord]:
    return link_all([record(i) for i in range(1, n + 1)], 0, GENESIS_HASH)


def test_a_fresh_chain_is_intact() -> None:
    records = chain()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    result = verify(records)
    assert result.intact and result.count == 6 and result.head == records[-1].hash
    assert result.broken_seq is None


def test_the_empty_chain_is_intact() -> None:
    assert verify([]).intact


def test_an_edited_entry_is_named() -> None:
    records = chain()
    records[2] = replace(records[2], outcome="4")  # entry 3 edited in place
    result = verify(records)
    assert not result.intact
    assert (result.broken_seq, result.broken_id) == (3, "ev-3")
    assert "does not match its hash" in (result.reason or "")


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    records = chain()
    edited = replace(records[2], patients=("someone-else",))
    records[2] = replace(edited, hash=entry_hash(edited.prev_hash, 3, edited))
    result = verify(records)
    assert (result.broken_seq, result.broken_id) == (4, "ev-4")
    assert "prev_hash" in (result.reason or "") and "entry 3" in (result.reason or "")


def test_a_deleted_entry_is_named_by_the_gap() -> None:
    records = chain()
    del records[3]  # entry 4
    result = verify(records)
    assert result.broken_seq == 5
    assert "entry 4 is missing" in (result.reason or "")


def test_deleting_the_first_entry_is_found() -> None:
    result = verify(chain()[1:])
    assert result.broken_seq == 2
    assert "entry 1 is missing" in (result.reason or "")


def test_an_inserted_entry_is_found() -> None:
    records = chain()
    # a forged entry slipped in after entry 2, the later ones renumbered to make room
    forged = link(record(99), 3, records[1].hash)
    renumbered = [replace(r, seq=r.seq + 1) for r in records[2:]]
    result = verify([*records[:2], forged, *renumbered])
    # the forgery itself is well formed; the first entry after it no longer fits
    assert (result.broken_seq, result.broken_id) == (4, "ev-3")
    assert "does not match its hash" in (result.reason or "")


def test_an_inserted_entry_without_renumbering_breaks_the_next_link() -> None:
    records = chain()
    forged = link(record(99), 3, records[1].hash)
    # the forger rebuilds the rest of the chain's seqs and hashes except one link
    rest = link_all([replace(r, seq=0) for r in records[2:]], 3, "ab" * 32)
    result = verify([*records[:2], forged, *rest])
    assert result.broken_seq == 4
    assert "prev_hash" in (result.reason or "")


def test_reordered_entries_are_found() -> None:
    records = chain()
    a, b = records[3], records[4]
    # rows 4 and 5 swap their positions (their seq values exchanged)
    records[3], records[4] = replace(b, seq=4), replace(a, seq=5)
    result = verify(records)
    assert (result.broken_seq, result.broken_id) == (4, "ev-5")


def test_search_index_rows_are_checked_against_the_hashed_columns() -> None:
    records = chain()
    indexed = [
        replace(r, indexed_patients=r.patients, indexed_entities=r.entities) for r in records
    ]
    assert verify(indexed).intact
    # as written now: a patient's own reference is indexed only as a patient
    trimmed = [replace(r, indexed_entities=tuple(sorted(indexed_entities(r)))) for r in indexed]
    assert trimmed[1].indexed_entities != indexed[1].indexed_entities
    assert verify(trimmed).intact
    extra = [*trimmed[:2], replace(trimmed[2], indexed_entities=("Observation/x",)), *trimmed[3:]]
    assert verify(extra).broken_seq == 3  # an index row for an entity the entry never named
    indexed[1] = replace(indexed[1], indexed_patients=())  # a patient index row removed
    result = verify(indexed)
    assert result.broken_seq == 2 and "audit_patient" in (result.reason or "")


def test_unclean_restarts_are_counted_and_progress_reported() -> None:
    records = link_all(
        [record(1), record(2, UNCLEAN_SHUTDOWN), record(3), record(4, UNCLEAN_SHUTDOWN)],
        0,
        GENESIS_HASH,
    )
    seen: list[int] = []
    result = verify(records, progress=seen.append)
    assert result.intact and result.unclean_restarts == 2
    assert seen[-1] == 4
