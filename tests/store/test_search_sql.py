"""Basic search on both databases: each parameter type, modifiers, prefixes, and refusals."""

from __future__ import annotations

import pytest

from carebase.config import Settings
from carebase.errors import BadRequest, TooCostly
from carebase.store.base import Store, every_match
from carebase.store.factory import open_store


@pytest.fixture
def loaded(store: Store) -> Store:
    with store.transaction() as tx:
        tx.update(
            "Patient",
            "p1",
            {
                "resourceType": "Patient",
                "gender": "female",
                "birthDate": "1980-05-17",
                "name": [{"family": "Müller", "given": ["Anna"]}],
                "identifier": [{"system": "http://mrn", "value": "123"}],
            },
        )
        tx.update(
            "Patient",
            "p2",
            {
                "resourceType": "Patient",
                "gender": "male",
                "birthDate": "1999",
                "name": [{"family": "Miller"}],
            },
        )
        tx.update(
            "Observation",
            "o1",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": "8867-4"}],
                    "text": "Heart rate",
                },
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2015-02-07T13:28:17Z",
                "valueQuantity": {
                    "value": 72.5,
                    "system": "http://unitsofmeasure.org",
                    "code": "/min",
                    "unit": "beats/min",
                },
            },
        )
    return store


def ids(store: Store, type_: str, params: list[tuple[str, str]]) -> list[str]:
    return sorted(e.id for e in store.search(type_, params, count=100).entries)


@pytest.mark.parametrize(
    ("type_", "params", "expected"),
    [
        ("Patient", [("family", "mul")], ["p1"]),  # accent-insensitive prefix
        ("Patient", [("family:exact", "Müller")], ["p1"]),
        ("Patient", [("family:contains", "ll")], ["p1", "p2"]),
        ("Patient", [("gender", "female,male")], ["p1", "p2"]),
        ("Patient", [("gender:not", "female")], ["p2"]),
        ("Patient", [("identifier", "http://mrn|123")], ["p1"]),
        ("Patient", [("identifier", "http://other|123")], []),
        ("Patient", [("birthdate", "1980")], ["p1"]),
        ("Patient", [("birthdate", "ge1990")], ["p2"]),
        ("Patient", [("birthdate", "lt1990-01-01")], ["p1"]),
        ("Patient", [("birthdate:missing", "true")], []),
        ("Patient", [("_id", "p2,nope")], ["p2"]),
        ("Observation", [("code", "http://loinc.org|8867-4")], ["o1"]),
        ("Observation", [("code:text", "heart")], ["o1"]),
        ("Observation", [("subject", "Patient/p1")], ["o1"]),
        ("Observation", [("patient", "p1")], ["o1"]),
        ("Observation", [("subject:Patient", "p1")], ["o1"]),
        ("Observation", [("date", "2015-02-07")], ["o1"]),
        ("Observation", [("date", "gt2015-02-07T13:28:17Z")], []),
        ("Observation", [("value-quantity", "72.5|http://unitsofmeasure.org|/min")], ["o1"]),
        ("Observation", [("value-quantity", "gt70")], ["o1"]),
        ("Observation", [("value-quantity", "lt70")], []),
    ],
)
def test_basic_search(
    loaded: Store, type_: str, params: list[tuple[str, str]], expected: list[str]
) -> None:
    assert ids(loaded, type_, params) == expected


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ([("nonsense", "x")], "nonsense"),
        ([("gender:foo", "x")], "gender:foo"),
        ([("birthdate", "1980-13")], "birthdate"),
        ([("birthdate", "xx1980")], "birthdate"),
        ([("general-practitioner.nonsense", "x")], "general-practitioner.nonsense"),
        ([("general-practitioner:Patient.name", "x")], "general-practitioner:Patient.name"),
        ([("_query", "x")], "_query"),
        ([("_sort", "no-such-key")], "no-such-key"),
        ([("_include", "Patient:no-such-param")], "no-such-param"),
    ],
)
def test_refusals_name_the_parameter(
    loaded: Store, params: list[tuple[str, str]], named: str
) -> None:
    with pytest.raises(BadRequest) as info:
        loaded.search("Patient", params)
    assert named in str(info.value)


def test_result_parameters_are_not_criteria(loaded: Store) -> None:
    params = [("_sort", "birthdate"), ("_include", "Patient:organization"), ("_count", "1")]
    assert ids(loaded, "Patient", params) == ["p1", "p2"]


def test_too_many_parameters_are_refused(loaded: Store) -> None:
    with pytest.raises(BadRequest) as info:
        loaded.search("Patient", [("birthdate", "ge2000")] * 21)
    assert "at most 20" in str(info.value)


def test_statement_timeout_gives_too_costly(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(2000):
            tx.create("Patient", {"resourceType": "Patient", "birthDate": f"{1900 + i % 120}"})
    # PostgreSQL: planning twenty ANDed subqueries takes far longer than 20 ms (0 would mean
    # no limit there). SQLite: a 0 ms budget stops the scan at its first progress check.
    limit = 20 if store.dialect == "postgresql" else 0
    impatient = open_store(store.url, Settings(statement_timeout_ms=limit))
    try:
        with pytest.raises(TooCostly) as info:
            impatient.search("Patient", [("birthdate", "ge2000")] * 20)
        assert "CAREBASE_STATEMENT_TIMEOUT_MS" in str(info.value)
    finally:
        impatient.close()


def test_missing_counts_a_reference_to_a_contained_resource_as_present(store: Store) -> None:
    with store.transaction() as tx:
        tx.update("Observation", "with-contained", {
            "resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "contained": [{"resourceType": "Patient", "id": "p"}],
            "subject": {"reference": "#p"},
        })  # fmt: skip
    assert ids(store, "Observation", [("subject:missing", "false")]) == ["with-contained"]
    assert ids(store, "Observation", [("subject:missing", "true")]) == []


def test_total_estimate_is_a_row_estimate(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(300):
            gender = "female" if i % 3 else "male"
            tx.create("Patient", {"resourceType": "Patient", "gender": gender})
    # the store's own per-table ANALYZE: a database-wide one reaches other test processes'
    # schemas and can deadlock with their DDL
    store.refresh_statistics()
    accurate = store.search("Patient", [("gender", "female")], count=1).total
    estimate = store.search("Patient", [("gender", "female")], count=1, total="estimate").total
    assert accurate == 200
    assert estimate is not None and 100 <= estimate <= 400  # the planner's guess, not 1
    if store.dialect == "sqlite":
        assert estimate == accurate  # SQLite has no estimate: it counts


def test_every_match_pages_through_all_of_them(store: Store) -> None:
    with store.transaction() as tx:
        made = {tx.create("Patient", {"resourceType": "Patient", "gender": "other"}).id
                for _ in range(7)}  # fmt: skip
        tx.create("Patient", {"resourceType": "Patient", "gender": "male"})
    found = [r.id for r in every_match(store, "Patient", [("gender", "other")], page_size=3)]
    assert sorted(found) == sorted(made)  # each once, over three pages
