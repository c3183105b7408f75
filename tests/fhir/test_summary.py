"""`_summary` and `_elements` against what R4 marks as summary and mandatory."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from carebase.errors import BadRequest
from carebase.fhir.definitions.loader import get_definitions
from carebase.fhir.summary import SUBSETTED, select_elements, summarize


@pytest.fixture
def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"versionId": "3", "tag": [{"system": "urn:t", "code": "keep-me"}]},
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">P</div>'},
        "extension": [{"url": "urn:race", "valueString": "x"}],
        "identifier": [{"system": "urn:mrn", "value": "1"}],
        "active": True,
        "name": [
            {
                "use": "official",
                "family": "Chalmers",
                "given": ["Peter"],
                "extension": [{"url": "urn:n", "valueString": "y"}],
            }
        ],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "urn:time", "valueTime": "14:35:45"}]},
        "deceasedBoolean": False,
        "maritalStatus": {"text": "married"},
        "photo": [{"contentType": "image/png", "data": "AAAA"}],
        "contact": [{"name": {"family": "Du Marché"}}],
        "communication": [{"language": {"text": "French"}}],
        "managingOrganization": {"reference": "Organization/1"},
    }


@pytest.fixture
def observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">O</div>'},
        "status": "final",
        "category": [{"text": "vital-signs"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2020-01-01",
        "valueQuantity": {
            "value": 1,
            "unit": "x",
            "extension": [{"url": "urn:q", "valueString": "z"}],
        },
        "interpretation": [{"text": "high"}],
        "note": [{"text": "a note"}],
        "referenceRange": [{"text": "normal"}],
        "component": [
            {
                "code": {"text": "systolic"},
                "valueQuantity": {"value": 120},
                "interpretation": [{"text": "high"}],
            }
        ],
    }


def _tags(resource: dict[str, Any]) -> list[dict[str, Any]]:
    tags: list[dict[str, Any]] = resource.get("meta", {}).get("tag", [])
    return tags


def test_patient_summary_true_keeps_only_summary_elements(patient: dict[str, Any]) -> None:
    before = copy.deepcopy(patient)
    out = summarize(patient, "true")
    assert patient == before
    assert list(out) == [
        "resourceType", "id", "meta", "identifier", "active", "name", "gender", "birthDate",
        "deceasedBoolean", "managingOrganization",
    ]  # fmt: skip
    # HumanName.extension is not a summary element of HumanName; the primitive extension of
    # birthDate is not either.
    assert out["name"] == [{"use": "official", "family": "Chalmers", "given": ["Peter"]}]
    assert _tags(out) == [{"system": "urn:t", "code": "keep-me"}, SUBSETTED]


def test_patient_top_level_summary_matches_the_definitions(patient: dict[str, Any]) -> None:
    elements = get_definitions().elements("Patient")
    summary = {path.split(".")[1].removesuffix("[x]") for path, e in elements.items()
               if e.summary and path.count(".") == 1}  # fmt: skip
    kept = {key.removesuffix("Boolean") for key in summarize(patient, "true")} - {"resourceType"}
    present = {key.removesuffix("Boolean") for key in patient}
    assert kept == summary & present


def test_observation_summary_true(observation: dict[str, Any]) -> None:
    out = summarize(observation, "true")
    for kept in ("status", "code", "subject", "effectiveDateTime", "valueQuantity", "component"):
        assert kept in out
    for dropped in ("text", "category", "interpretation", "note", "referenceRange"):
        assert dropped not in out
    assert out["valueQuantity"] == {"value": 1, "unit": "x"}
    # Backbone elements are cut by their own flags: component.interpretation is not summary.
    assert out["component"] == [{"code": {"text": "systolic"}, "valueQuantity": {"value": 120}}]
    assert _tags(out) == [SUBSETTED]
    assert list(out)[:3] == ["resourceType", "id", "meta"]


def test_summary_text_keeps_text_id_meta_and_mandatory(observation: dict[str, Any]) -> None:
    out = summarize(observation, "text")
    assert set(out) == {"resourceType", "id", "meta", "text", "status", "code"}
    assert out["code"] == observation["code"]
    assert _tags(out) == [SUBSETTED]


def test_summary_data_drops_only_text(patient: dict[str, Any]) -> None:
    out = summarize(patient, "data")
    assert "text" not in out
    assert {k: v for k, v in out.items() if k != "meta"} == {
        k: v for k, v in patient.items() if k not in ("text", "meta")
    }
    assert SUBSETTED in _tags(out)
    del patient["text"]
    assert summarize(patient, "data") == patient  # nothing removed: no tag


def test_summary_false_is_an_independent_copy(patient: dict[str, Any]) -> None:
    out = summarize(patient, "false")
    assert out == patient
    out["name"][0]["family"] = "changed"
    assert patient["name"][0]["family"] == "Chalmers"


def test_no_tag_when_nothing_was_removed() -> None:
    small = {"resourceType": "Patient", "id": "x", "birthDate": "2000-01-01", "active": True}
    assert summarize(small, "true") == small
    assert select_elements(small, ["birthDate", "active"]) == small


def test_subsetted_tag_is_not_duplicated(patient: dict[str, Any]) -> None:
    once = summarize(patient, "true")
    twice = summarize(once | {"photo": patient["photo"]}, "true")
    assert _tags(twice).count(SUBSETTED) == 1


def test_output_shares_nothing_with_input(patient: dict[str, Any]) -> None:
    out = summarize(patient, "text")
    out["meta"]["tag"].clear()
    out["text"]["status"] = "empty"
    assert patient["meta"]["tag"] == [{"system": "urn:t", "code": "keep-me"}]
    assert patient["text"]["status"] == "generated"


@pytest.mark.parametrize("mode", ["count", "TRUE", "yes", ""])
def test_bad_modes_are_400_naming_summary(patient: dict[str, Any], mode: str) -> None:
    with pytest.raises(BadRequest, match="_summary") as caught:
        summarize(patient, mode)
    assert caught.value.issues[0].expression == ["_summary"]


def test_nested_resources_are_summarised_with_their_own_definitions(
    patient: dict[str, Any],
) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient}]}
    inner = summarize(bundle, "true")["entry"][0]["resource"]
    assert inner["resourceType"] == "Patient"
    assert "photo" not in inner
    assert inner["birthDate"] == "1974-12-25"


def test_unknown_resource_type_is_left_alone() -> None:
    odd = {"resourceType": "NotAType", "x": 1}
    assert summarize(odd, "true") == odd
    assert select_elements(odd, ["y"]) == odd


# --- _elements -------------------------------------------------------------------------------


def test_elements_keeps_listed_and_mandatory(observation: dict[str, Any]) -> None:
    before = copy.deepcopy(observation)
    out = select_elements(observation, ["subject", "bogus", "Observation.note"])
    assert observation == before
    # status and code are 1..1 in Observation: kept although not asked for.
    assert set(out) == {"resourceType", "id", "meta", "status", "code", "subject", "note"}
    assert _tags(out) == [SUBSETTED]


def test_elements_choice_name_keeps_the_typed_form(observation: dict[str, Any]) -> None:
    out = select_elements(observation, ["value", "effective"])
    assert out["valueQuantity"] == observation["valueQuantity"]
    assert out["effectiveDateTime"] == "2020-01-01"
    assert "component" not in out


def test_elements_keeps_primitive_extensions_and_nested_names(patient: dict[str, Any]) -> None:
    out = select_elements(patient, ["birthDate", "name.family"])
    assert set(out) == {"resourceType", "id", "meta", "birthDate", "_birthDate", "name"}
    assert out["name"] == patient["name"]  # nested names keep their whole top-level element
