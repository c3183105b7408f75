"""ResourceLoader: batches, idempotence, rejection without losing neighbours."""

from __future__ import annotations

import psycopg
import pytest

from carebase.data.loader import (
    STATISTICS_AFTER,
    LoadSummary,
    Origin,
    Rejected,
    ResourceLoader,
    refresh_after_load,
)
from carebase.store.base import Store


def _patient(id_: str, family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": id_, "name": [{"family": family}]}


def test_loads_rejects_and_counts_add_up(store: Store) -> None:
    rejected: list[Rejected] = []
    records = [
        (_patient("a", "Ng"), Origin("p.ndjson", "line 1")),
        (
            {"resourceType": "Patient", "id": "b", "birthDate": "not-a-date"},
            Origin("p.ndjson", "line 2"),
        ),
        ({"resourceType": "Patient", "name": [{"family": "NoId"}]}, Origin("p.ndjson", "line 3")),
        (_patient("c", "Li"), Origin("p.ndjson", "line 4")),
    ]
    summary = ResourceLoader(store, batch_size=2, on_rejected=rejected.append).add_all(records)
    assert (summary.read, summary.created, summary.rejected) == (4, 2, 2)
    assert [r.origin.location for r in rejected] == ["line 2", "line 3"]
    assert "birthDate" in rejected[0].issues[0].expression[0]
    assert store.read("Patient", "a") is not None and store.read("Patient", "b") is None


def test_second_load_changes_nothing_and_changed_content_updates(store: Store) -> None:
    first = ResourceLoader(store).add_all([(_patient("a", "Ng"), Origin("x", ""))])
    again = ResourceLoader(store).add_all([(_patient("a", "Ng"), Origin("x", ""))])
    changed = ResourceLoader(store).add_all([(_patient("a", "Ngu"), Origin("x", ""))])
    assert (first.created, again.unchanged, changed.updated) == (1, 1, 1)
    stored = store.read("Patient", "a")
    assert stored is not None and stored.version == 2


def test_a_repeated_id_keeps_its_first_content_so_reloading_changes_nothing(
    store: Store,
) -> None:
    records = [
        (_patient("a", "First"), Origin("x", "line 1")),
        (_patient("b", "Other"), Origin("x", "line 2")),
        (_patient("a", "Second"), Origin("x", "line 3")),  # same batch as the first
        (_patient("a", "Third"), Origin("x", "line 4")),  # a later batch
    ]
    first = ResourceLoader(store, batch_size=3).add_all([(dict(r), o) for r, o in records])
    again = ResourceLoader(store, batch_size=3).add_all([(dict(r), o) for r, o in records])
    assert (first.created, first.unchanged, first.repeated) == (2, 2, 2)
    assert (again.created, again.updated, again.unchanged, again.repeated) == (0, 0, 4, 2)
    stored = store.read("Patient", "a")
    assert stored is not None and stored.version == 1 and b"First" in (stored.body or b"")


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_validate_and_index_in_order_with_the_same_counts(
    store: Store, workers: int
) -> None:
    rejected: list[Rejected] = []
    records: list[tuple[object, Origin]] = [
        (_patient(f"p{i}", f"Family{i}"), Origin("x", f"line {i}")) for i in range(25)
    ]
    records[7] = ({"resourceType": "Patient", "id": "bad", "gender": 1}, Origin("x", "line 7"))
    records.append((_patient("p3", "Repeated"), Origin("x", "line 25")))
    with ResourceLoader(
        store, batch_size=4, on_rejected=rejected.append, workers=workers
    ) as loader:
        for resource, origin in records:
            loader.add(resource, origin)
    summary = loader.summary
    assert (summary.read, summary.created, summary.rejected, summary.repeated) == (26, 24, 1, 1)
    assert [r.origin.location for r in rejected] == ["line 7"]
    found = store.search("Patient", [("family", "family12")]).entries
    assert [e.id for e in found] == ["p12"]  # indexed by the workers' rows
    stored = store.read("Patient", "p3")
    assert stored is not None and b"Family3" in (stored.body or b"")


def _analyze_count(store: Store) -> int:
    """How many times PostgreSQL has analyzed this schema's resource table."""
    with psycopg.connect(store.url) as conn:
        row = conn.execute(
            "SELECT analyze_count FROM pg_stat_user_tables"
            " WHERE relname = 'resource' AND schemaname = current_schema()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_large_load_refreshes_the_planner_statistics(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("SQLite plans without statistics by design")
    before = _analyze_count(store)
    small = ResourceLoader(store).add_all([(_patient("a", "Ng"), Origin("x", ""))])
    assert small.created == 1 and _analyze_count(store) == before
    many = [(_patient(f"p{n}", "Ng"), Origin("x", "")) for n in range(STATISTICS_AFTER)]
    assert ResourceLoader(store).add_all(many).created == STATISTICS_AFTER
    assert _analyze_count(store) == before + 1
    refresh_after_load(store, LoadSummary(updated=STATISTICS_AFTER - 1))
    assert _analyze_count(store) == before + 1
