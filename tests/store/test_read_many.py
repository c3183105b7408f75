"""Transaction.read_many and create(prepared=...) on both databases."""

from __future__ import annotations

import pytest

from carebase.store.base import Store
from carebase.store.prepared_index import prepare_index
from carebase.store.sql_store import SqlStore


def test_read_many_finds_current_versions_and_tombstones(store: Store) -> None:
    with store.transaction() as tx:
        tx.create("Patient", {"resourceType": "Patient", "active": True}, "a")
        tx.create("Patient", {"resourceType": "Patient"}, "gone")
        tx.create("Observation", {"resourceType": "Observation", "status": "final"}, "a")
    store_ids = [("Patient", f"x{i}") for i in range(600)]  # more than one query's chunk
    with store.transaction() as tx:
        tx.update("Patient", "a", {"resourceType": "Patient", "active": False})
        tx.delete("Patient", "gone")
        found = tx.read_many(
            [
                ("Patient", "a"),
                ("Patient", "gone"),
                ("Observation", "a"),
                ("Patient", "a"),
                *store_ids,
            ]
        )
    assert set(found) == {("Patient", "a"), ("Patient", "gone"), ("Observation", "a")}
    assert found[("Patient", "a")].version == 2  # sees this transaction's own update
    assert (
        found[("Patient", "a")].body is not None
        and b'"active":false' in found[("Patient", "a")].body
    )
    assert found[("Patient", "gone")].deleted and found[("Observation", "a")].version == 1


def test_create_with_prepared_index_rows_is_searchable(store: Store) -> None:
    resource = {"resourceType": "Patient", "name": [{"family": "Prepared"}], "gender": "other"}
    prepared = prepare_index(resource)
    with store.transaction() as tx:
        tx.create("Patient", resource, "p", prepared=prepared)
    assert [e.id for e in store.search("Patient", [("family", "prepared")]).entries] == ["p"]
    assert [e.id for e in store.search("Patient", [("_content", "prepared")]).entries] == ["p"]


@pytest.mark.parametrize("stale", [False, True], ids=["no statistics", "stale statistics"])
def test_postgres_reads_a_batch_by_index_probes_whatever_the_statistics(
    store: Store, stale: bool
) -> None:
    """Without statistics (a new database) `type = ? AND id IN (...)` was planned as a scan
    of every row of the type, once per batch of an import; and with statistics analysed before
    any row of the type existed, a probe by the (type, last_updated) index looked as cheap. The
    query must probe the (type, id) index once per id either way."""
    if not isinstance(store, SqlStore) or store.dialect != "postgresql":
        pytest.skip("PostgreSQL's query plan")
    from carebase.store.postgres import READ_BY_IDS

    if stale:  # statistics that know only Patients
        with store.transaction() as tx:
            for n in range(300):
                tx.create("Patient", {"resourceType": "Patient"}, f"p{n}")
        store.refresh_statistics()

    with store.transaction() as tx:
        for n in range(300):
            tx.create("Observation", {"resourceType": "Observation", "status": "final"}, f"o{n}")
    ids = [f"o{n}" for n in range(0, 300, 2)]
    with store.reading() as cur:
        plan = "\n".join(
            row[0]
            for row in cur.execute("EXPLAIN " + READ_BY_IDS, (["Observation"] * len(ids), ids))
        )
    assert "Index Scan using resource_type_id" in plan, plan
    assert "resource_type_updated" not in plan and "Seq Scan on resource" not in plan, plan
    with store.transaction() as tx:
        found = tx.read_many([("Observation", i) for i in [*ids, "missing"]])
    assert sorted(found) == sorted(("Observation", i) for i in ids)
