"""Search criteria beyond single parameters, on both databases: chaining, `_has`, `_type`,
compartments, `_list`, composites, `ap`, Resource-level parameters, and the strict/lenient
handling of what the server does not know."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carebase.errors import BadRequest
from carebase.store.base import Store
from carebase.store.search_sql import UnknownParameter, build_search

LOINC = "http://loinc.org"
PROFILE = "http://example.org/fhir/StructureDefinition/my-patient"


def _obs(subject: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        **extra,
    }


def _quantity(value: float) -> dict[str, Any]:
    return {"value": value, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}


@pytest.fixture
def world(store: Store) -> Store:
    recent = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%d")
    resources: list[tuple[str, str, dict[str, Any]]] = [
        ("Organization", "org1", {"resourceType": "Organization", "name": "Good Health Clinic"}),
        ("Organization", "org2", {"resourceType": "Organization", "name": "Other Place"}),
        ("Practitioner", "dr1", {"resourceType": "Practitioner", "name": [{"family": "Who"}]}),
        ("Patient", "p1", {
            "resourceType": "Patient", "name": [{"family": "Peters", "given": ["Peter"]}],
            "birthDate": "1985-04-01", "generalPractitioner": [{"reference": "Practitioner/dr1"}],
            "managingOrganization": {"reference": "Organization/org1"},
            "meta": {"tag": [{"system": "http://tags", "code": "vip"}],
                     "profile": [PROFILE],
                     "security": [{"system": "http://sec", "code": "R"}],
                     "source": "http://source.example/a"},
        }),
        ("Patient", "p2", {
            "resourceType": "Patient", "name": [{"family": "Smith"}], "birthDate": "1970",
            "link": [{"other": {"reference": "Patient/p1"}, "type": "seealso"}],
        }),
        ("Patient", "gone", {"resourceType": "Patient", "name": [{"family": "Peters"}]}),
        ("Encounter", "e1", {
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": "Patient/p1"},
            "serviceProvider": {"reference": "Organization/org1"},
        }),
        ("Observation", "bp1", _obs("Patient/p1", "85354-9", effectiveDateTime=recent,
            encounter={"reference": "Encounter/e1"},
            component=[
                {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                 "valueQuantity": _quantity(120)},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                 "valueQuantity": _quantity(80)},
            ])),
        ("Observation", "hr1", _obs("Patient/p2", "8867-4", effectiveDateTime="2001-06-01",
            valueQuantity=_quantity(72), performer=[{"reference": "Practitioner/dr1"}])),
        ("Observation", "smoke", _obs("Patient/p1", "72166-2", effectiveDateTime="2014-01-01",
            valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct",
                                              "code": "449868002"}]})),
        ("Observation", "orphan", _obs("Patient/gone", "8867-4", valueQuantity=_quantity(60))),
        ("Observation", "dated", _obs("Patient/nobody", "11111-1", valueDateTime="2001-06-01")),
        ("List", "list1", {"resourceType": "List", "status": "current", "mode": "working",
            "entry": [{"item": {"reference": "Patient/p2"}},
                      {"item": {"reference": "Observation/hr1"}}]}),
        ("AuditEvent", "audit1", {
            "resourceType": "AuditEvent", "type": {"code": "rest"},
            "recorded": "2020-01-01T00:00:00Z",
            "agent": [{"who": {"reference": "Practitioner/dr1"}, "requestor": True}],
            "source": {"observer": {"reference": "Practitioner/dr1"}},
            "entity": [{"what": {"reference": "Observation/bp1"}}],
        }),
    ]  # fmt: skip
    with store.transaction() as tx:
        for type_, id_, body in resources:
            tx.update(type_, id_, body)
        tx.delete("Patient", "gone")
    return store


def ids(store: Store, type_: str | None, params: list[tuple[str, str]], **kw: Any) -> list[str]:
    criteria = build_search(type_, params, dialect=store.dialect, **kw)  # type: ignore[arg-type]
    sql = f"SELECT id FROM resource WHERE {' AND '.join(criteria.where)} ORDER BY id"
    with store._reading() as cur:  # type: ignore[attr-defined]
        return [r[0] for r in cur.execute(store.q(sql), criteria.args).fetchall()]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("type_", "params", "expected"),
    [
        # chaining
        ("Observation", [("subject.name", "peter")], ["bp1", "smoke"]),
        ("Observation", [("subject:Patient.name", "smi")], ["hr1"]),
        ("Observation", [("subject.name:exact", "Peters")], ["bp1", "smoke"]),
        ("Observation", [("subject.name:exact", "peters")], []),
        ("Observation", [("subject:Patient.birthdate", "ge1980")], ["bp1", "smoke"]),
        ("Observation", [("subject._id", "p2")], ["hr1"]),
        ("Observation", [("subject._tag", "http://tags|vip")], ["bp1", "smoke"]),
        ("Observation", [("subject:Patient.general-practitioner.name", "who")], ["bp1", "smoke"]),
        ("Observation", [("encounter.service-provider.name", "good")], ["bp1"]),
        ("Observation", [("subject.name", "peter"), ("code", "72166-2")], ["smoke"]),
        ("Observation", [("subject.name", "peter,smith")], ["bp1", "hr1", "smoke"]),
        ("Encounter", [("subject:Patient.organization", "Organization/org1")], ["e1"]),
        # reverse chaining
        ("Patient", [("_has:Observation:patient:code", "8867-4")], ["p2"]),
        ("Patient", [("_has:Observation:subject:code", f"{LOINC}|72166-2")], ["p1"]),
        ("Patient", [("_has:Observation:patient:code:not", "8867-4")], ["p1"]),
        ("Patient", [("_has:Encounter:subject:service-provider.name", "good")], ["p1"]),
        (
            "Patient",
            [("_has:Observation:patient:_has:AuditEvent:entity:agent", "Practitioner/dr1")],
            ["p1"],
        ),
        ("Practitioner", [("_has:Patient:general-practitioner:name", "peter")], ["dr1"]),
        # _list, Resource-level parameters
        ("Patient", [("_list", "list1")], ["p2"]),
        ("Observation", [("_list", "list1,nope")], ["hr1"]),
        (None, [("_list", "list1")], ["hr1", "p2"]),
        ("Patient", [("_tag", "vip")], ["p1"]),
        ("Patient", [("_tag:not", "vip")], ["p2"]),
        (
            "Patient",
            [("_profile", "http://example.org/fhir/StructureDefinition/my-patient")],
            ["p1"],
        ),
        ("Patient", [("_security", "http://sec|R")], ["p1"]),
        ("Patient", [("_source", "http://source.example/a")], ["p1"]),
        (None, [("_tag", "http://tags|vip")], ["p1"]),
        # system level
        (None, [("_type", "Patient,Organization")], ["org1", "org2", "p1", "p2"]),
        (None, [("_type", "Patient,Organization"), ("name", "good,smi")], ["org1", "p2"]),
        (None, [("_type", "Patient"), ("_id", "p2,org1")], ["p2"]),
        (None, [("_id", "p2,org1")], ["org1", "p2"]),
        # composites
        ("Observation", [("component-code-value-quantity", f"{LOINC}|8480-6$gt100")], ["bp1"]),
        ("Observation", [("component-code-value-quantity", "8480-6$lt100")], []),
        ("Observation", [("component-code-value-quantity", "8462-4$lt100")], ["bp1"]),
        (
            "Observation",
            [("code-value-quantity", "8867-4$72|http://unitsofmeasure.org|mm[Hg]")],
            ["hr1"],
        ),
        ("Observation", [("combo-code-value-quantity", "8480-6$120,8867-4$60")], ["bp1", "orphan"]),
        (
            "Observation",
            [("code-value-concept", "72166-2$http://snomed.info/sct|449868002")],
            ["smoke"],
        ),
        ("Observation", [("code-value-concept", "72166-2$449868002")], ["smoke"]),
        ("Observation", [("code-value-concept", "72166-2$|449868002")], []),
        ("Observation", [("code-value-date", "11111-1$2001")], ["dated"]),
        ("Observation", [("code-value-date", "11111-1$gt2001")], []),
        ("Observation", [("code-value-quantity:missing", "false")], ["hr1", "orphan"]),
        (
            "Observation",
            [("code-value-concept:missing", "true")],
            ["bp1", "dated", "hr1", "orphan"],
        ),
        ("Observation", [("component-code-value-quantity:missing", "false")], ["bp1"]),
        # ap
        ("Observation", [("value-quantity", "ap66")], ["hr1", "orphan"]),
        ("Observation", [("value-quantity", "ap72")], ["hr1"]),
        ("Patient", [("birthdate", "ap1984")], ["p1"]),
        ("Patient", [("birthdate", "ap2000")], []),
        # escapes
        ("Patient", [("name", "nobody\\,peter")], []),
        # reference :identifier and :[type]
        ("Observation", [("subject:Patient", "p2")], ["hr1"]),
        ("Observation", [("performer:Practitioner", "dr1")], ["hr1"]),
    ],
)
def test_criteria(
    world: Store, type_: str | None, params: list[tuple[str, str]], expected: list[str]
) -> None:
    assert ids(world, type_, params) == expected


def test_ap_date_widens_with_distance_from_now(world: Store) -> None:
    last_month = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m")
    assert "bp1" in ids(world, "Observation", [("date", f"ap{last_month}")])
    ten_years = datetime.now(UTC).year - 10
    # 10% of ~10 years is ~1 year: 2014 is within reach of ap(ten years ago) when close
    got = ids(world, "Observation", [("date", f"ap{ten_years}-06")])
    assert ("smoke" in got) == (abs(ten_years - 2014) <= 1)


def test_identifier_modifier(store: Store) -> None:
    with store.transaction() as tx:
        tx.update("Observation", "o", _obs("Patient/x", "1") | {
            "subject": {"identifier": {"system": "http://mrn", "value": "42"}}})  # fmt: skip
    assert ids(store, "Observation", [("subject:identifier", "http://mrn|42")]) == ["o"]
    assert ids(store, "Observation", [("subject:identifier", "http://mrn|43")]) == []


@pytest.mark.parametrize(
    ("type_", "compartment", "expected"),
    [
        ("Observation", ("Patient", "p1"), ["bp1", "smoke"]),
        ("Encounter", ("Patient", "p1"), ["e1"]),
        ("Patient", ("Patient", "p1"), ["p1", "p2"]),  # p2 links to p1
        ("Patient", ("Patient", "p2"), ["p2"]),
        (None, ("Patient", "p2"), ["hr1", "p2"]),
    ],
)
def test_compartment(
    world: Store, type_: str | None, compartment: tuple[str, str], expected: list[str]
) -> None:
    assert ids(world, type_, [], compartment=compartment) == expected


def test_compartment_refusals(world: Store) -> None:
    with pytest.raises(BadRequest, match="Organization"):
        build_search("Organization", [], compartment=("Patient", "p1"))
    with pytest.raises(BadRequest, match="Encounter"):
        build_search("Observation", [], compartment=("Encounter", "e1"))


def test_deleted_targets_do_not_chain(world: Store) -> None:
    assert ids(world, "Observation", [("subject.name", "peters")]) == ["bp1", "smoke"]
    assert ids(world, "Observation", [("subject._id", "gone")]) == []


#: (type, parameters, the name the error must mention) refused strictly, dropped leniently
UNKNOWN = [
    ("Patient", [("nonsense", "x")], "nonsense"),
    ("Patient", [("gender:exact", "x")], "gender:exact"),
    ("Patient", [("birthdate:contains", "x")], "birthdate:contains"),
    ("Patient", [("general-practitioner:Patient", "x")], "general-practitioner:Patient"),
    ("Patient", [("_query", "x")], "_query"),
    ("Patient", [("_filter", "x")], "_filter"),
    ("Patient", [("_id:exact", "x")], "_id:exact"),
    ("Patient", [("name.family", "x")], "name.family"),
    ("Observation", [("subject.nonsense", "x")], "subject.nonsense"),
    ("Observation", [("subject:Organization.name", "x")], "subject:Organization.name"),
    ("Observation", [("subject:Patient.name:foo", "x")], "subject:Patient.name:foo"),
    ("Patient", [("_has:Nope:patient:code", "x")], "_has:Nope:patient:code"),
    ("Patient", [("_has:Observation:code:code", "x")], "_has:Observation:code:code"),
    ("Patient", [("_has:Observation:patient:nonsense", "x")], "_has:Observation:patient:nonsense"),
    ("Organization", [("_has:Observation:patient:code", "x")], "_has:Observation:patient:code"),
    (None, [("name", "x")], "name"),
    (None, [("_type", "Patient,Organization"), ("birthdate", "2000")], "birthdate"),
    ("Patient", [("_type", "Patient")], "_type"),
]


@pytest.mark.parametrize(("type_", "params", "named"), UNKNOWN)
def test_unknown_is_refused_strictly(
    type_: str | None, params: list[tuple[str, str]], named: str
) -> None:
    with pytest.raises(UnknownParameter) as info:
        build_search(type_, params)
    assert named in str(info.value)
    assert info.value.status == 400


@pytest.mark.parametrize(("type_", "params", "named"), UNKNOWN)
def test_unknown_is_ignored_leniently(
    type_: str | None, params: list[tuple[str, str]], named: str
) -> None:
    criteria = build_search(type_, [*params, ("_id", "a")], lenient=True)
    assert criteria.ignored == (named,)
    assert any("id IN" in w for w in criteria.where)


MALFORMED = [
    ("Patient", "birthdate", "1980-13-01"),
    ("Patient", "birthdate", "xx1980"),
    ("Observation", "value-quantity", "abc"),
    ("Observation", "value-quantity", "5|a|b|c"),
    ("RiskAssessment", "probability", "gt1.2.3"),
    ("Patient", "identifier", "a|b|c"),
    ("Patient", "gender:missing", "maybe"),
    ("Patient", "name", "a,,b"),
    ("Observation", "code-value-quantity", "8867-4"),
    ("Observation", "code-value-quantity", "8867-4$x"),
    ("Observation", "subject.birthdate", "1980-99"),
    ("Patient", "_has:Observation", "x"),
    ("Patient", "_has:Observation:patient", "x"),
    ("Patient", "_lastUpdated", "yesterday"),
]


@pytest.mark.parametrize(("type_", "name", "value"), MALFORMED)
@pytest.mark.parametrize("lenient", [False, True])
def test_malformed_values_are_refused_in_both_modes(
    type_: str, name: str, value: str, lenient: bool
) -> None:
    with pytest.raises(BadRequest) as info:
        build_search(type_, [(name, value)], lenient=lenient)
    assert not isinstance(info.value, UnknownParameter)
    assert name in str(info.value)
    assert info.value.status == 400


def test_type_names_are_validated() -> None:
    with pytest.raises(BadRequest, match="Nope"):
        build_search(None, [("_type", "Patient,Nope")])


def test_chain_and_has_levels_count_against_the_limit() -> None:
    deep = "subject:Patient.general-practitioner:Practitioner._has:PractitionerRole:practitioner"
    with pytest.raises(BadRequest, match="at most 20"):
        build_search("Observation", [(f"{deep}:_id", "x")] * 6)


def test_query_shape_uses_one_driver(world: Store) -> None:
    criteria = build_search(
        "Observation", [("date", "ge2015"), ("code", f"{LOINC}|8867-4")], dialect=world.dialect
    )
    tail = criteria.where[-1]
    assert tail.index("rid IN (SELECT rid FROM idx_token") < tail.index(
        "EXISTS (SELECT 1 FROM idx_date"
    )
    if world.dialect == "sqlite":
        with world._reading() as cur:  # type: ignore[attr-defined]
            plan = cur.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM resource WHERE " + " AND ".join(criteria.where),
                criteria.args,
            ).fetchall()
        text = "\n".join(str(row[-1]) for row in plan)
        assert "idx_token_lookup" in text and "idx_date_rid" in text, text
        assert "LIST SUBQUERY" in text and "CORRELATED SCALAR SUBQUERY" in text, text
        assert "MATERIALIZE" not in text, text


def test_string_prefix_is_a_range_on_sqlite() -> None:
    where = build_search("Patient", [("name", "pet")], dialect="sqlite").where[-1]
    assert "norm >= ? AND norm < ?" in where and "LIKE" not in where
    where = build_search("Patient", [("name", "pet")], dialect="postgresql").where[-1]
    assert "norm LIKE ?" in where
