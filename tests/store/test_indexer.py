"""Index rows: value conversions (dates, decimals, strings, references) and whole resources."""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from carebase.store.index_rows import IndexRows
from carebase.store.index_values import (
    composite_key,
    date_range,
    decimal_range,
    normalize_string,
    parse_reference,
    token_key,
)
from carebase.store.indexer import Indexer, index_resource

BASE = "https://ehr.example.org/fhir"
TYPES = frozenset({"Patient", "Observation", "Encounter"})


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


# ----------------------------------------------------------------------- value conversions


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2015", "2015-01-01T00:00:00", "2015-12-31T23:59:59.999"),
        ("2016-02", "2016-02-01T00:00:00", "2016-02-29T23:59:59.999"),
        ("2015-12", "2015-12-01T00:00:00", "2015-12-31T23:59:59.999"),
        ("2015-02-07", "2015-02-07T00:00:00", "2015-02-07T23:59:59.999"),
        ("2015-02-07T13:28:17Z", "2015-02-07T13:28:17", "2015-02-07T13:28:17.999"),
        ("2015-02-07T13:28:17+02:00", "2015-02-07T11:28:17", "2015-02-07T11:28:17.999"),
        ("2015-02-07T13:28:17-05:00", "2015-02-07T18:28:17", "2015-02-07T18:28:17.999"),
        ("2015-02-07T13:28:17.5Z", "2015-02-07T13:28:17.500", "2015-02-07T13:28:17.599"),
        ("2015-02-07T13:28:17.239Z", "2015-02-07T13:28:17.239", "2015-02-07T13:28:17.239"),
        ("2015-02-07T13:28:17.2391Z", "2015-02-07T13:28:17.239", "2015-02-07T13:28:17.239"),
        ("2015-02-07T13:28:17", "2015-02-07T13:28:17", "2015-02-07T13:28:17.999"),  # no tz: UTC
        ("1900-01-01", "1900-01-01T00:00:00", "1900-01-01T23:59:59.999"),
    ],
)
def test_date_ranges_follow_precision(value: str, low: str, high: str) -> None:
    assert date_range(value) == (ms(low), ms(high))


@pytest.mark.parametrize("bad", ["", "20x5", "2015-13", "2015-02-30", "yesterday"])
def test_unreadable_dates_give_none(bad: str) -> None:
    assert date_range(bad) is None


def test_decimal_ranges_come_from_significant_digits() -> None:
    assert decimal_range(1.5) == pytest.approx((1.45, 1.55))
    assert decimal_range(0.001) == pytest.approx((0.0005, 0.0015))
    assert decimal_range(120) == (119.5, 120.5)  # a JSON integer in a decimal element
    assert decimal_range(120, exact_integers=True) == (120.0, 120.0)
    assert decimal_range(1e-05) == pytest.approx((0.5e-05, 1.5e-05))
    # orjson reads 100.00 as 100.0: trailing zeros beyond one are lost before we see them
    assert decimal_range(100.0) == pytest.approx((99.95, 100.05))


def test_strings_normalise_case_accents_and_spacing() -> None:
    assert normalize_string("  Ångström\t de  la  PEÑA ") == "angstrom de la pena"
    assert normalize_string("O'Brien") == "o'brien"
    assert normalize_string("ﬁne") == "fine"  # compatibility decomposition (NFKD)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Patient/123", ("Patient", "123", None, None)),
        ("Patient/123/_history/4", ("Patient", "123", "4", None)),
        (f"{BASE}/Patient/123", ("Patient", "123", None, None)),
        (f"{BASE}/Patient/123/_history/4", ("Patient", "123", "4", None)),
        ("http://other.org/fhir/Patient/9", (None, None, None, "http://other.org/fhir/Patient/9")),
        ("urn:uuid:8c1e2f", (None, None, None, "urn:uuid:8c1e2f")),
        ("Unknown/1", (None, None, None, "Unknown/1")),
        ("#contained-1", (None, None, None, "#contained-1")),
    ],
)
def test_references_parse_by_form(ref: str, expected: Any) -> None:
    assert parse_reference(ref, BASE, TYPES) == expected


def test_composite_keys_escape_separators() -> None:
    assert token_key("http://loinc.org", "8480-6") == "http://loinc.org|8480-6"
    assert token_key(None, "8480-6") == "|8480-6"
    assert token_key("s", "a$b", with_system=False) == "a\\$b"
    assert composite_key(["|a", "b\\|c"]) == "|a$b\\|c"


# ----------------------------------------------------------------------- whole resources


def rows_of(resource: dict[str, Any]) -> IndexRows:
    return Indexer(BASE).index(resource)


def test_patient_rows() -> None:
    rows = rows_of(
        {
            "resourceType": "Patient",
            "id": "p1",
            "meta": {
                "tag": [{"system": "urn:t", "code": "vip"}],
                "security": [{"system": "urn:s", "code": "R"}],
                "profile": ["http://example.org/StructureDefinition/p"],
                "source": "urn:src",
                "lastUpdated": "2020-01-01T00:00:00Z",
            },
            "identifier": [{"system": "urn:mrn", "value": "42", "type": {"text": "MRN"}}],
            "name": [{"family": "Peña", "given": ["José", "Luis"], "prefix": ["Dr."]}],
            "telecom": [{"system": "email", "value": "J@x.org"}],
            "gender": "male",
            "birthDate": "1970-03",
            "address": [{"line": ["1 Main St"], "city": "Boston", "postalCode": "02101"}],
            "generalPractitioner": [
                {"reference": "Patient/p2"},
                {"identifier": {"system": "urn:npi", "value": "77"}},
            ],
        }
    )
    assert ("_tag", "urn:t", "vip", None) in rows.token
    assert ("_security", "urn:s", "R", None) in rows.token
    assert ("_profile", "http://example.org/StructureDefinition/p") in rows.uri
    assert ("_source", "urn:src") in rows.uri
    assert ("identifier", "urn:mrn", "42", "MRN") in rows.token
    assert ("email", "email", "J@x.org", None) in rows.token
    assert ("telecom", "email", "J@x.org", None) in rows.token
    assert ("gender", "http://hl7.org/fhir/administrative-gender", "male", None) in rows.token
    assert ("family", "pena", "Peña") in rows.string
    assert {r for r in rows.string if r[0] == "name"} == {
        ("name", "pena", "Peña"),
        ("name", "jose", "José"),
        ("name", "luis", "Luis"),
        ("name", "dr.", "Dr."),
    }
    assert ("address-city", "boston", "Boston") in rows.string
    assert ("address-postalcode", "02101", "02101") in rows.string
    assert rows.date == [("birthdate", ms("1970-03-01T00:00:00"), ms("1970-03-31T23:59:59.999"))]
    assert ("general-practitioner", "Patient", "p2", None, None) in rows.reference
    assert ("general-practitioner:identifier", "urn:npi", "77", None) in rows.token
    # _id and _lastUpdated are resource-table columns, not index rows
    indexed = {r[0] for r in rows.token} | {r[0] for r in rows.date}
    assert not indexed & {"_id", "_lastUpdated"}


def test_observation_rows_and_composites() -> None:
    loinc = {"system": "http://loinc.org", "code": "8480-6", "display": "Systolic"}
    rows = rows_of(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [loinc], "text": "SBP"},
            "subject": {"reference": f"{BASE}/Patient/p1"},
            "effectivePeriod": {"start": "2020-05-01T10:00:00Z"},
            "valueQuantity": {
                "value": 120.5,
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
                "unit": "mmHg",
            },
        }
    )
    assert ("code", "http://loinc.org", "8480-6", "Systolic") in rows.token
    assert ("code", None, None, "SBP") in rows.token
    assert ("patient", "Patient", "p1", None, None) in rows.reference
    assert ("subject", "Patient", "p1", None, None) in rows.reference
    assert ("date", ms("2020-05-01T10:00:00"), None) in rows.date  # open-ended period
    quantity = ("http://unitsofmeasure.org", "mm[Hg]", "mmHg", 120.5)
    assert ("value-quantity", *quantity, 120.45, 120.55) in [
        (*r[:5], round(r[5], 6), round(r[6], 6)) for r in rows.quantity
    ]
    params = {r[0] for r in rows.quantity}
    # the last composite component is a quantity: quantity rows under "code$<token>" params
    assert "code-value-quantity$http://loinc.org|8480-6" in params
    assert "code-value-quantity$8480-6" in params
    assert "combo-code-value-quantity$8480-6" in params
    assert not any(p.startswith("component-") for p in params)
    assert rows.composite == []


def test_token_composites_write_composite_keys() -> None:
    rows = rows_of(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "883-9"}]},
            "valueCodeableConcept": {
                "coding": [{"system": "http://snomed.info/sct", "code": "112144000"}]
            },
        }
    )
    keys = {key for param, key in rows.composite if param == "code-value-concept"}
    assert keys == {
        "http://loinc.org|883-9$http://snomed.info/sct|112144000",
        "http://loinc.org|883-9$112144000",
        "883-9$http://snomed.info/sct|112144000",
        "883-9$112144000",
    }


def test_periods_timings_money_and_extensions() -> None:
    enc = rows_of(
        {"resourceType": "Encounter", "status": "finished", "period": {"end": "2020-01-02"}}
    )
    assert enc.date == [("date", None, ms("2020-01-02T23:59:59.999"))]
    req = rows_of(
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/1"},
            "medicationCodeableConcept": {"text": "aspirin"},
            "dosageInstruction": [{"timing": {"event": ["2020-01-03", "2020-01-01"]}}],
        }
    )
    assert ("code", None, None, "aspirin") in req.token
    assert not any(r[0] == "medication" for r in req.reference)  # a concept, not a Reference
    claim = rows_of(
        {
            "resourceType": "ChargeItem",
            "status": "billable",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/1"},
            "priceOverride": {"value": 12.5, "currency": "USD"},
            "occurrenceTiming": {"event": ["2020-01-03", "2020-01-01"]},
        }
    )
    assert ("price-override", "urn:iso:std:iso:4217", "USD", "USD", 12.5, 12.45, 12.55) in [
        (*r[:5], round(r[5], 6), round(r[6], 6)) for r in claim.quantity
    ]
    assert ("occurrence", ms("2020-01-01T00:00:00"), ms("2020-01-03T23:59:59.999")) in claim.date


def test_duplicate_rows_are_removed() -> None:
    coding = {"system": "http://loinc.org", "code": "1"}
    rows = rows_of(
        {"resourceType": "Observation", "status": "final", "code": {"coding": [coding, coding]}}
    )
    assert rows.token.count(("code", "http://loinc.org", "1", None)) == 1


def test_default_indexer_indexes_urn_uuid_as_url() -> None:
    rows = index_resource(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "urn:uuid:1f2e"},
        }
    )
    assert ("subject", None, None, None, "urn:uuid:1f2e") in rows.reference
    assert not any(r[0] == "patient" for r in rows.reference)


@pytest.mark.slow
def test_every_synthea_resource_indexes(synthea_tar: Path) -> None:
    indexer = Indexer(BASE)
    counts: dict[str, int] = {}
    with tarfile.open(synthea_tar) as tar:
        for member in list(tar)[:10]:
            if not member.name.endswith(".json"):
                continue
            data = tar.extractfile(member)
            assert data is not None
            for entry in orjson.loads(data.read()).get("entry", ()):
                resource = entry["resource"]
                rows = indexer.index(resource)
                counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
                if resource["resourceType"] == "Observation":
                    assert any(r[0] == "code" for r in rows.token)
                    assert rows.date
    assert counts.get("Observation", 0) > 100


# ----------------------------------------------------------------------- :of-type rows

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def test_identifier_of_type_rows() -> None:
    rows = rows_of(
        {
            "resourceType": "Patient",
            "identifier": [
                {
                    "system": "urn:mrn",
                    "value": "42",
                    "type": {
                        "coding": [{"system": V2_0203, "code": "MR"}, {"code": "local"}],
                        "text": "MRN",
                    },
                },
                {"system": "urn:x", "type": {"coding": [{"system": V2_0203, "code": "SS"}]}},
                {"value": "7", "type": {"text": "no codings"}},
                {"value": "8", "type": {"coding": [{"system": V2_0203, "display": "no code"}]}},
            ],
            "generalPractitioner": [
                {"identifier": {"value": "77", "type": {"coding": [{"code": "NPI"}]}}}
            ],
        }
    )
    # (param, type coding's system, identifier value, type coding's code)
    assert [r for r in rows.token if r[0].endswith(":of-type")] == [
        ("identifier:of-type", V2_0203, "42", "MR"),
        ("identifier:of-type", None, "42", "local"),
    ]
    assert ("identifier", "urn:mrn", "42", "MRN") in rows.token  # the plain rows stay as they were
    assert ("identifier", None, "7", "no codings") in rows.token


def test_synthea_patients_get_of_type_rows(synthea_tar: Path) -> None:
    indexer = Indexer(BASE)
    checked = 0
    with tarfile.open(synthea_tar) as tar:
        for member in list(tar)[:5]:
            if not member.name.endswith(".json"):
                continue
            data = tar.extractfile(member)
            assert data is not None
            for entry in orjson.loads(data.read()).get("entry", ()):
                patient = entry["resource"]
                if patient["resourceType"] != "Patient":
                    continue
                expected = {
                    ("identifier:of-type", c.get("system"), ident["value"], c["code"])
                    for ident in patient["identifier"]
                    if "value" in ident
                    for c in ident.get("type", {}).get("coding", ())
                }
                kinds = {row[3] for row in expected}
                assert {"MR", "SS"} <= kinds  # Synthea types its identifiers (MR, SS, DL, PPN)
                rows = indexer.index(patient)
                assert {r for r in rows.token if r[0] == "identifier:of-type"} == expected
                checked += 1
    assert checked > 0
