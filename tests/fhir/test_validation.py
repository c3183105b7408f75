"""Tests for resource validation (carebase.fhir.validation) on official, Synthea and bad data."""

from __future__ import annotations

import copy
import gzip
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from carebase.errors import InvalidResource
from carebase.fhir.validation import check_resource, validate_resource

DATA = Path(__file__).resolve().parents[1] / "data"

#: official R4 examples that break the R4 rules themselves, with the expected complaint
KNOWN_INVALID: dict[tuple[str, str], str] = {
    ("ActivityDefinition", "blood-tubes-supply"): "text.div: '<div xmlns=",  # empty narrative
    ("ActivityDefinition", "heart-valve-replacement"): "has no text content",
    ("EventDefinition", "example"): "has no text content",
    ("Questionnaire", "zika-virus-exposure-assessment"): "has no text content",
    # reference targets the R4 definitions do not allow
    ("DeviceMetric", "example"): "a reference to DeviceDefinition is not allowed",
    ("DeviceUseStatement", "example"): "a reference to Procedure is not allowed",
    ("MedicationRequest", "medrx0301"): "a reference to Practitioner is not allowed",
    ("Observation", "clinical-gender"): "a reference to Encounter is not allowed",
    # Questionnaire.item.linkId is 1..1
    ("Questionnaire", "qs1"): "Questionnaire.item[0].item[0].linkId: is required but missing",
    # extension SearchParameters shipped without their required `base`
    **{
        ("SearchParameter", f"{kind}-extensions-{kind2}-{name}"): "SearchParameter.base: is req"
        for kind, kind2 in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
        for name in ("author", "effective", "end", "keyword", "workflow")
    },
    # an id longer than 64 characters
    ("SearchParameter", "questionnaireresponse-extensions-QuestionnaireResponse-item-subject"): (
        "is not a valid id"
    ),
}


def examples() -> Iterator[dict[str, Any]]:
    with gzip.open(DATA / "r4-examples.ndjson.gz") as lines:
        for line in lines:
            yield orjson.loads(line)


def errors(resource: object, **kwargs: Any) -> list[str]:
    return [i.diagnostics for i in validate_resource(resource, **kwargs) if i.severity == "error"]


def test_official_examples_are_accepted() -> None:
    accepted = 0
    rejected: dict[tuple[str, str], list[str]] = {}
    for resource in examples():
        found = errors(resource)
        if found:
            rejected[(resource["resourceType"], resource.get("id", ""))] = found
        else:
            accepted += 1
    unexpected = {key: found for key, found in rejected.items() if key not in KNOWN_INVALID}
    assert not unexpected
    assert set(rejected) == set(KNOWN_INVALID)
    for key, found in rejected.items():
        assert any(KNOWN_INVALID[key] in message for message in found), (key, found)
    assert accepted > 790
    print(f"{accepted} official examples accepted, {len(rejected)} rejected as known invalid")


def synthea_resources(tar_path: Path) -> Iterator[dict[str, Any]]:
    with tarfile.open(tar_path) as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None and member.name.endswith(".json"):
                bundle = orjson.loads(extracted.read())
                yield bundle
                for entry in bundle["entry"]:
                    yield entry["resource"]


@pytest.mark.slow
def test_synthea_resources_are_valid(synthea_tar: Path) -> None:
    count = 0
    for resource in synthea_resources(synthea_tar):
        assert errors(resource) == [], resource.get("id")
        count += 1
    assert count > 38970  # 38,970 entries plus their bundles


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
    "gender": "male",
    "birthDate": "1974-12-25",
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"},
    "valueQuantity": {"value": 72, "unit": "/min"},
}


def with_(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` with `value` set at a dotted path (`name.0.given`); ... deletes."""
    out = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return out


def test_valid_minimal_resources() -> None:
    assert errors(PATIENT) == []
    assert errors(OBSERVATION) == []
    assert errors({"resourceType": "Basic", "code": {"text": "x"}}) == []
    check_resource(PATIENT, expected_type="Patient")


def test_primitive_extensions_and_null_alignment() -> None:
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    assert errors(with_(PATIENT, "_birthDate", ext)) == []
    assert errors({"resourceType": "Patient", "_birthDate": ext}) == []
    aligned = with_(PATIENT, "name.0.given", ["Peter", None])
    aligned["name"][0]["_given"] = [None, ext]
    assert errors(aligned) == []
    misaligned = with_(PATIENT, "name.0.given", ["Peter", None])
    assert errors(misaligned) == ["Patient.name[0].given[1]: null is not allowed here"]


def test_contained_and_local_references() -> None:
    resource = with_(OBSERVATION, "subject", {"reference": "#pat"})
    resource["contained"] = [{"resourceType": "Patient", "id": "pat", "gender": "female"}]
    assert errors(resource) == []
    resource["subject"] = {"reference": "#other"}
    assert errors(resource) == [
        "Observation.subject.reference: '#other': no contained resource has this id"
    ]


CASES: list[tuple[str, object, str]] = [
    # (what, resource, expected message)
    ("not an object", [PATIENT], "a resource must be a JSON object"),
    ("no resourceType", {"id": "x"}, "resourceType is missing"),
    ("unknown type", {"resourceType": "Patients"}, "unknown resourceType 'Patients'"),
    ("abstract type", {"resourceType": "DomainResource"}, "unknown resourceType"),
    ("unknown element", with_(PATIENT, "colour", "red"), "Patient.colour: is not a known element"),
    (
        "wrong choice suffix",
        with_(OBSERVATION, "valueFoo", 1),
        "Observation.valueFoo: is not an allowed type for value[x] (expected one of valueQuantity",
    ),
    (
        "two choice variants",
        with_(OBSERVATION, "valueString", "x"),
        "Observation.valueString: only one of value[x] is allowed, found valueQuantity",
    ),
    (
        "array expected",
        with_(PATIENT, "name", {"family": "x"}),
        "Patient.name: must be a JSON array",
    ),
    (
        "single expected",
        with_(PATIENT, "gender", ["male"]),
        "Patient.gender: must be a single value, not an array",
    ),
    ("string expected", with_(PATIENT, "gender", 1), "Patient.gender: 1 must be a JSON string"),
    (
        "boolean expected",
        with_(PATIENT, "active", "true"),
        "Patient.active: 'true' must be a JSON boolean",
    ),
    (
        "object expected",
        with_(PATIENT, "name.0", "Peter"),
        "Patient.name[0]: 'Peter' is not a JSON object (HumanName)",
    ),
    ("null", with_(PATIENT, "gender", None), "Patient.gender: null is not allowed"),
    ("empty string", with_(PATIENT, "name.0.family", ""), "Patient.name[0].family: '' is empty"),
    ("empty array", with_(PATIENT, "name.0.given", []), "Patient.name[0].given: empty arrays"),
    (
        "empty object",
        with_(PATIENT, "name.0", {}),
        "Patient.name[0]: empty objects are not allowed",
    ),
    ("control char", with_(PATIENT, "name.0.family", "a\x01"), "control character U+0001"),
    ("required missing", with_(OBSERVATION, "status", ...), "Observation.status: is required"),
    ("required missing 2", with_(OBSERVATION, "code", ...), "Observation.code: is required"),
    (
        "required choice missing",
        {
            "resourceType": "Questionnaire",
            "status": "draft",
            "item": [
                {
                    "linkId": "1",
                    "type": "string",
                    "enableWhen": [{"question": "0", "operator": "exists"}],
                }
            ],
        },
        "Questionnaire.item[0].enableWhen[0].answer[x]: is required (one of answerBoolean,",
    ),
    (
        "bad date",
        with_(PATIENT, "birthDate", "1970-13-01"),
        "Patient.birthDate: '1970-13-01' is not a valid date "
        "(expected YYYY, YYYY-MM or YYYY-MM-DD)",
    ),
    ("impossible date", with_(PATIENT, "birthDate", "2019-02-29"), "not a day of the calendar"),
    (
        "dateTime without zone",
        with_(OBSERVATION, "effectiveDateTime", "2020-01-01T10:00:00"),
        "Observation.effectiveDateTime: '2020-01-01T10:00:00' is not a valid dateTime",
    ),
    (
        "bad instant",
        with_(OBSERVATION, "issued", "2020-01-01"),
        "Observation.issued: '2020-01-01' is not a valid instant",
    ),
    ("bad id", with_(PATIENT, "id", "a b"), "Patient.id: 'a b' is not a valid id"),
    ("long id", with_(PATIENT, "id", "x" * 65), "is not a valid id"),
    (
        "bad uri",
        with_(PATIENT, "implicitRules", "http://a b"),
        "Patient.implicitRules: 'http://a b' is not a valid URI",
    ),
    (
        "bad code",
        with_(PATIENT, "language", " en"),
        "Patient.language: ' en' is not a valid code",
    ),
    (
        "decimal as string",
        with_(OBSERVATION, "valueQuantity.value", "72"),
        "Observation.valueQuantity.value: '72' must be a JSON number",
    ),
    (
        "integer with fraction",
        {"resourceType": "Patient", "multipleBirthInteger": 1.5},
        "Patient.multipleBirthInteger: 1.5 must be a JSON number without a fraction",
    ),
    (
        "positiveInt zero",
        {
            "resourceType": "ImmunizationRecommendation",
            "patient": {"reference": "Patient/1"},
            "date": "2020",
            "recommendation": [
                {
                    "forecastStatus": {"text": "x"},
                    "targetDisease": {"text": "x"},
                    "doseNumberPositiveInt": 0,
                }
            ],
        },
        "ImmunizationRecommendation.recommendation[0].doseNumberPositiveInt: 0 is not a positive",
    ),
    (
        "bad base64",
        {"resourceType": "Binary", "contentType": "text/plain", "data": "abc"},
        "Binary.data: 'abc' is not valid base64",
    ),
    (
        "required binding on code",
        with_(PATIENT, "gender", "M"),
        "Patient.gender: 'M' is not in the required value set (expected one of: female, male",
    ),
    (
        "required binding on CodeableConcept",
        {
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": "Patient/1"},
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": "gone",
                    }
                ]
            },
        },
        "AllergyIntolerance.clinicalStatus.coding[0].code: 'gone' is not in the required",
    ),
    (
        "bad reference format",
        with_(OBSERVATION, "subject.reference", "Patient 1"),
        "Observation.subject.reference: 'Patient 1' is not a valid reference",
    ),
    (
        "reference to unknown type",
        with_(OBSERVATION, "subject.reference", "Patientx/1"),
        "'Patientx/1': Patientx is not a resource type",
    ),
    (
        "reference to wrong type",
        with_(OBSERVATION, "subject.reference", "Medication/1"),
        "'Medication/1': a reference to Medication is not allowed here (expected Device, Group",
    ),
    (
        "bad urn:uuid",
        with_(OBSERVATION, "subject.reference", "urn:uuid:XYZ"),
        "'urn:uuid:XYZ' is not a valid uuid",
    ),
    (
        "extension without url",
        with_(PATIENT, "extension", [{"valueString": "x"}]),
        "Patient.extension[0].url: is required but missing",
    ),
    (
        "extension with value and children",
        with_(
            PATIENT,
            "extension",
            [
                {
                    "url": "http://x",
                    "valueString": "x",
                    "extension": [{"url": "y", "valueCode": "z"}],
                }
            ],
        ),
        "Patient.extension[0]: an extension must have either a value[x] or nested extensions",
    ),
    (
        "extension with neither",
        with_(PATIENT, "modifierExtension", [{"url": "http://x"}]),
        "Patient.modifierExtension[0]: an extension must have a value[x] or nested extensions",
    ),
    (
        "contained with versionId",
        with_(
            PATIENT,
            "contained",
            [{"resourceType": "Organization", "id": "o", "meta": {"versionId": "1"}, "name": "x"}],
        ),
        "Patient.contained[0].meta.versionId: a contained resource must not have meta.versionId",
    ),
    (
        "nested contained",
        with_(
            PATIENT,
            "contained",
            [
                {
                    "resourceType": "Organization",
                    "id": "o",
                    "contained": [{"resourceType": "Organization", "id": "p", "name": "x"}],
                }
            ],
        ),
        "Patient.contained[0]: a contained resource must not contain resources",
    ),
    (
        "invalid contained content",
        with_(PATIENT, "contained", [{"resourceType": "Organization", "id": "o", "active": 1}]),
        "Patient.contained[0].active: 1 must be a JSON boolean",
    ),
    (
        "wrong expected type",
        PATIENT,
        "resourceType is 'Patient', expected 'Observation'",
    ),
    (
        "bad _primitive",
        with_(PATIENT, "_birthDate", "x"),
        "Patient._birthDate: must be a non-empty JSON object",
    ),
    (
        "bundle entry resource",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": with_(PATIENT, "birthDate", "1970-1-1")}],
        },
        "Bundle.entry[0].resource.birthDate: '1970-1-1' is not a valid date",
    ),
]


@pytest.mark.parametrize(("what", "resource", "message"), CASES, ids=[c[0] for c in CASES])
def test_invalid_resources(what: str, resource: object, message: str) -> None:
    expected_type = "Observation" if what == "wrong expected type" else None
    found = errors(resource, expected_type=expected_type)
    assert any(message in m for m in found), found
    with pytest.raises(InvalidResource) as caught:
        check_resource(resource, expected_type=expected_type)
    assert caught.value.issues and caught.value.status == 400


def test_issue_locations() -> None:
    [issue] = validate_resource(with_(PATIENT, "name.0.given.1", 7))
    assert issue.expression == ["Patient.name[0].given[1]"]
    assert issue.severity == "error" and issue.code == "value"
    [issue] = validate_resource(with_(OBSERVATION, "valueQuantity.value", True))
    assert issue.expression == ["Observation.valueQuantity.value"]


def narrative(div: str) -> dict[str, Any]:
    return with_(PATIENT, "text", {"status": "generated", "div": div})


XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


@pytest.mark.parametrize(
    "div",
    [
        f"<div {XHTML}>Peter</div>",
        f'<div {XHTML}><p>A &amp; B&nbsp;<b>bold</b></p><table class="x"><tr><td>1</td></tr>'
        '</table><a href="http://example.org">l</a></div>',
        f'<div {XHTML}><img src="#a" alt="x"/></div>',
        f'<div {XHTML} xml:lang="en" lang="en"><span style="color: red">x</span></div>',
    ],
)
def test_valid_narratives(div: str) -> None:
    assert errors(narrative(div)) == []


@pytest.mark.parametrize(
    ("div", "message"),
    [
        ("<div>x</div>", "must have a root <div> in the XHTML namespace"),
        (f"<p {XHTML}>x</p>", "must have a root <div>"),
        (f"<div {XHTML}>x", "is not well-formed XHTML"),
        (f"<div {XHTML}>  </div>", "has no text content"),
        (f"<div {XHTML}><script>alert(1)</script>x</div>", "must not contain <script>"),
        (f"<div {XHTML}><style>p{{}}</style>x</div>", "must not contain <style>"),
        (f"<div {XHTML}><iframe src='x'/>x</div>", "must not contain <iframe>"),
        (f"<div {XHTML}><object/>x</div>", "must not contain <object>"),
        (f"<div {XHTML}><form><input/></form>x</div>", "must not contain <form>"),
        (f"<div {XHTML}><marquee>x</marquee></div>", "must not contain <marquee>"),
        (f'<div {XHTML}><p onclick="x()">x</p></div>', "event attribute onclick"),
        (f'<div {XHTML}><a href=" javascript:x()">x</a></div>', "script URL in href"),
        (f"<!DOCTYPE x><div {XHTML}>x</div>", "DOCTYPE"),
        (f"<?xml-stylesheet href='x'?><div {XHTML}>x</div>", "processing instructions"),
        (f"<div {XHTML}>&bogus;</div>", "is not well-formed XHTML"),
    ],
)
def test_invalid_narratives(div: str, message: str) -> None:
    found = errors(narrative(div))
    assert len(found) == 1 and found[0].startswith("Patient.text.div: "), found
    assert message in found[0]


def test_codes_and_uris_follow_the_spec_regexes() -> None:
    assert errors(with_(PATIENT, "language", "en\tGB")) == []  # one whitespace char is fine
    assert errors(with_(PATIENT, "implicitRules", "http://example.org/\u00e9")) == []
    assert errors(with_(PATIENT, "implicitRules", "http://a\tb")) != []


def test_absurd_nesting_is_an_error_not_a_crash() -> None:
    depth = 500
    text = (
        '{"resourceType":"Patient","extension":['
        + '{"url":"x","extension":[' * depth
        + '{"url":"x","valueString":"y"}'
        + "]}" * depth
        + "]}"
    )
    [issue] = validate_resource(orjson.loads(text))
    assert issue.severity == "error" and "nested too deeply" in issue.diagnostics


def test_narrative_with_characters_xml_forbids_is_rejected() -> None:
    for char in ("\x00", "\x07", "\ufffe"):
        resource = {
            "resourceType": "Patient",
            "text": {
                "status": "generated",
                "div": f'<div xmlns="http://www.w3.org/1999/xhtml">a{char}b</div>',
            },
        }
        found = errors(resource)
        assert found and "XML does not allow" in found[0], (char, found)
