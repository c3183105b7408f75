"""Transaction.read_many and create(prepared=...) on both databases."""

from __future__ import annotations

from carebase.store.base import Store
from carebase.store.prepared_index import prepare_index


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
