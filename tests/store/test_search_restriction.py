"""Restrictions (`store.search_restriction`) inside the SQL of searches, counts, history,
includes and conditional matches, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from carebase.errors import Forbidden
from carebase.store.base import Store
from carebase.store.search_restriction import Restriction, Visibility


def _put(store: Store, *resources: dict[str, Any]) -> None:
    with store.transaction() as tx:
        for resource in resources:
            tx.update(resource["resourceType"], resource["id"], resource)


def _obs(id_: str, subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": subject},
        **extra,
    }


@pytest.fixture
def world(store: Store) -> Store:
    _put(
        store,
        {"resourceType": "Organization", "id": "o1"},
        {
            "resourceType": "Patient",
            "id": "A",
            "managingOrganization": {"reference": "Organization/o1"},
        },
        {"resourceType": "Patient", "id": "B"},
        {"resourceType": "Practitioner", "id": "doc"},
        *(_obs(f"a{i}", "Patient/A") for i in range(5)),
        _obs("b1", "Patient/B", performer=[{"reference": "Practitioner/doc"}]),
        _obs("ab", "Patient/A", performer=[{"reference": "Patient/B"}]),
    )
    return store


def _ids(page: Any) -> list[str]:
    return sorted(f"{s.type}/{s.id}" for s in page.entries)


PATIENT_A = Restriction(
    {
        "Patient": Visibility(patient="A"),
        "Observation": Visibility(patient="A"),
        "Practitioner": Visibility(),
    }
)
ORG_1 = Restriction(
    {"Patient": Visibility(organization="o1"), "Observation": Visibility(organization="o1")}
)


def test_patient_restriction_pages_and_counts_only_visible(world: Store) -> None:
    first = world.search("Observation", [], count=3, restriction=PATIENT_A)
    assert first.total == 6 and len(first.entries) == 3
    second = world.search(
        "Observation", [], count=3, cursor=first.next_cursor, restriction=PATIENT_A
    )
    assert len(second.entries) == 3 and second.next_cursor is None
    assert "Observation/b1" not in _ids(first) + _ids(second)
    assert _ids(world.search("Patient", [], restriction=PATIENT_A)) == ["Patient/A"]


def test_organization_restriction(world: Store) -> None:
    assert _ids(world.search("Patient", [], restriction=ORG_1)) == ["Patient/A"]
    assert world.search("Observation", [], restriction=ORG_1).total == 6


def test_system_search_covers_only_permitted_types(world: Store) -> None:
    found = _ids(world.search(None, [], count=100, restriction=PATIENT_A))
    assert "Organization/o1" not in found and "Practitioner/doc" in found
    assert "Patient/B" not in found and "Observation/b1" not in found


def test_exclusive_refuses_resources_of_other_patients_too(world: Store) -> None:
    with world.transaction() as tx:
        assert tx.search_ids("Observation", [("_id", "ab")], restriction=PATIENT_A) == ["ab"]
        assert (
            tx.search_ids("Observation", [("_id", "ab")], restriction=PATIENT_A.exclusive()) == []
        )
        assert tx.search_ids("Observation", [("_id", "a1")], restriction=PATIENT_A.exclusive()) == [
            "a1"
        ]


def test_visible_history_and_includes(world: Store) -> None:
    assert world.visible("Observation", "a1", PATIENT_A)
    assert not world.visible("Observation", "b1", PATIENT_A)
    assert not world.visible("Organization", "o1", PATIENT_A)  # type not permitted
    history = world.history(None, None, count=100, restriction=PATIENT_A)
    assert {f"{s.type}/{s.id}" for s in history.entries} >= {"Patient/A", "Observation/a1"}
    assert not {"Patient/B", "Observation/b1"} & {f"{s.type}/{s.id}" for s in history.entries}
    assert history.total == len(history.entries)
    page = world.search(
        "Observation",
        [("_id", "ab"), ("_include", "Observation:performer")],
        restriction=PATIENT_A,
        include_restriction=PATIENT_A,
    )
    assert page.included == []  # Patient/B is the performer: not readable


def test_chains_and_has_into_unpermitted_types_are_403(world: Store) -> None:
    with pytest.raises(Forbidden):
        world.search("Observation", [("performer:Organization.name", "x")], restriction=PATIENT_A)
    with pytest.raises(Forbidden):
        world.search("Patient", [("_has:Condition:subject:code", "x")], restriction=PATIENT_A)
    # an untyped chain only goes where the caller may look
    hits = world.search("Observation", [("performer._id", "B")], restriction=PATIENT_A)
    assert hits.entries == []


def test_granular_criteria(world: Store) -> None:
    only_a1 = Restriction(
        {"Observation": Visibility(criteria=((("_id", "a1"),), (("_id", "b1"),)))}
    )
    assert _ids(world.search("Observation", [], restriction=only_a1)) == [
        "Observation/a1",
        "Observation/b1",
    ]
