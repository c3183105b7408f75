"""FHIRPath Patch: every operation type, path shapes, nested part values, and the errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from carebase.errors import BadRequest, Unprocessable
from carebase.fhir.patch import apply_fhirpath_patch


def op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """One `operation` parameter; str -> valueString, int -> valueInteger, tuple -> (key, v),
    list -> nested parts."""
    out: list[dict[str, Any]] = [
        {"name": "type", "valueCode": kind},
        {"name": "path", "valueString": path},
    ]
    for name, value in parts.items():
        if isinstance(value, tuple):
            out.append({"name": name, value[0]: value[1]})
        elif isinstance(value, list):
            out.append({"name": name, "part": value})
        elif isinstance(value, bool) or not isinstance(value, int):
            out.append({"name": name, "valueString": value})
        else:
            out.append({"name": name, "valueInteger": value})
    return {"name": "operation", "part": out}


def patch(resource: dict[str, Any], *ops: dict[str, Any]) -> dict[str, Any]:
    before = copy.deepcopy(resource)
    result = apply_fhirpath_patch(resource, {"resourceType": "Parameters", "parameter": list(ops)})
    assert resource == before  # the input is never mutated
    return result


@pytest.fixture
def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "active": True,
        "birthDate": "1970-03-04",
        "identifier": [
            {"system": "urn:mrn", "value": "111"},
            {"system": "urn:ssn", "value": "222"},
        ],
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
            {"use": "usual", "given": ["Jim"]},
        ],
        "extension": [{"url": "urn:ext:a", "valueString": "a"}],
    }


@pytest.fixture
def observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 70, "unit": "kg"},
    }


# --- add ---------------------------------------------------------------------------------------


def test_add_primitive_and_list_item(patient: dict[str, Any]) -> None:
    out = patch(
        patient,
        op("add", "Patient", name="gender", value=("valueCode", "male")),
        op("add", "Patient.name.where(use='usual')", name="given", value="Jimmy"),
    )
    assert out["gender"] == "male"
    assert out["name"][1]["given"] == ["Jim", "Jimmy"]


def test_add_creates_a_list_for_a_repeating_element(patient: dict[str, Any]) -> None:
    out = patch(patient, op("add", "Patient.name[1]", name="prefix", value="Dr"))
    assert out["name"][1]["prefix"] == ["Dr"]  # HumanName.prefix is 0..*, so a JSON array


def test_add_complex_value_from_parts(patient: dict[str, Any]) -> None:
    human_name = [
        {"name": "use", "valueCode": "nickname"},
        {"name": "family", "valueString": "Smith"},
        {"name": "given", "valueString": "Pete"},
        {"name": "period", "valuePeriod": {"start": "2020-01-01"}},
    ]
    out = patch(patient, op("add", "Patient", name="name", value=human_name))
    assert out["name"][2] == {
        "use": "nickname",
        "family": "Smith",
        "given": ["Pete"],
        "period": {"start": "2020-01-01"},
    }


def test_add_backbone_element_with_nested_parts(patient: dict[str, Any]) -> None:
    contact = [
        {"name": "name", "part": [{"name": "family", "valueString": "Doe"}]},
        {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "555"}},
        {"name": "telecom", "valueContactPoint": {"system": "email", "value": "d@x"}},
        {"name": "gender", "valueCode": "female"},
    ]
    out = patch(patient, op("add", "Patient", name="contact", value=contact))
    assert out["contact"] == [
        {
            "name": {"family": "Doe"},
            "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "d@x"}],
            "gender": "female",
        }
    ]


def test_add_choice_element_uses_the_value_type(observation: dict[str, Any]) -> None:
    del observation["valueQuantity"]
    out = patch(observation, op("add", "Observation", name="value", value=("valueBoolean", True)))
    assert out["valueBoolean"] is True
    assert "value" not in out


def test_add_choice_inside_parts() -> None:
    obs = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "bp"}}
    component = [
        {"name": "code", "valueCodeableConcept": {"text": "systolic"}},
        {"name": "value", "valueQuantity": {"value": 120}},
    ]
    out = patch(obs, op("add", "Observation", name="component", value=component))
    assert out["component"] == [{"code": {"text": "systolic"}, "valueQuantity": {"value": 120}}]


def test_add_extension_to_a_primitive(patient: dict[str, Any]) -> None:
    ext = [{"name": "url", "valueUri": "urn:ext:time"}, {"name": "value", "valueTime": "10:00:00"}]
    out = patch(patient, op("add", "Patient.birthDate", name="extension", value=ext))
    assert out["birthDate"] == "1970-03-04"
    assert out["_birthDate"] == {"extension": [{"url": "urn:ext:time", "valueTime": "10:00:00"}]}


def test_add_primitive_with_its_extension(patient: dict[str, Any]) -> None:
    value_part = {
        "name": "value",
        "valueString": "Pete",
        "_valueString": {"extension": [{"url": "urn:x", "valueBoolean": True}]},
    }
    parameter = op("add", "Patient.name[1]", name="given")
    parameter["part"].append(value_part)
    out = patch(patient, parameter)
    assert out["name"][1]["given"] == ["Jim", "Pete"]
    assert out["name"][1]["_given"] == [
        None,
        {"extension": [{"url": "urn:x", "valueBoolean": True}]},
    ]


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        (op("add", "Patient", name="birthDate", value=("valueDate", "1980")), "already has"),
        (op("add", "Patient.name", name="text", value="x"), "matches 2 elements"),
        (op("add", "Patient.contact", name="gender", value=("valueCode", "x")), "matches nothing"),
    ],
)
def test_add_errors(patient: dict[str, Any], parameter: dict[str, Any], message: str) -> None:
    with pytest.raises(Unprocessable, match=message):
        patch(patient, parameter)


def test_add_choice_errors(observation: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="already has"):
        patch(observation, op("add", "Observation", name="value", value="high"))
    del observation["valueQuantity"]
    with pytest.raises(Unprocessable, match="cannot hold a value of type Attachment"):
        patch(observation, op("add", "Observation", name="value", value=("valueAttachment", {})))
    with pytest.raises(Unprocessable, match="choice element"):
        patch(observation, op("add", "Observation", name="value", value=[{"name": "value"}]))


# --- insert ------------------------------------------------------------------------------------


def test_insert_at_start_and_end(patient: dict[str, Any]) -> None:
    first = ("valueIdentifier", {"system": "urn:new", "value": "0"})
    out = patch(
        patient,
        op("insert", "Patient.identifier", value=first, index=0),
        op("insert", "Patient.name[0].given", value="Last", index=2),
    )
    assert [i["value"] for i in out["identifier"]] == ["0", "111", "222"]
    assert out["name"][0]["given"] == ["Peter", "James", "Last"]


def test_insert_into_an_absent_list(patient: dict[str, Any]) -> None:
    out = patch(patient, op("insert", "Patient.name[1].suffix", value="Jr", index=0))
    assert out["name"][1]["suffix"] == ["Jr"]


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        (
            op("insert", "Patient.identifier", value=("valueIdentifier", {}), index=3),
            "past the end",
        ),
        (op("insert", "Patient.name.first()", value="x", index=0), "must end in a list"),
        (op("insert", "Patient.birthDate", value="x", index=0), "is not a list"),
    ],
)
def test_insert_errors(patient: dict[str, Any], parameter: dict[str, Any], message: str) -> None:
    with pytest.raises(Unprocessable, match=message):
        patch(patient, parameter)


# --- delete ------------------------------------------------------------------------------------


def test_delete_shapes(patient: dict[str, Any]) -> None:
    out = patch(
        patient,
        op("delete", "Patient.birthDate"),
        op("delete", "Patient.identifier.where(system='urn:ssn')"),
        op("delete", "Patient.name[0].given[1]"),
        op("delete", "Patient.extension('urn:ext:a')"),
    )
    assert "birthDate" not in out
    assert out["identifier"] == [{"system": "urn:mrn", "value": "111"}]
    assert out["name"][0]["given"] == ["Peter"]
    assert "extension" not in out  # an emptied list goes away


def test_delete_of_nothing_is_a_no_op(patient: dict[str, Any]) -> None:
    assert patch(patient, op("delete", "Patient.deceased")) == patient
    assert patch(patient, op("delete", "Patient.name.where(use='maiden')")) == patient


def test_delete_prunes_emptied_parents_and_primitive_extensions(patient: dict[str, Any]) -> None:
    patient["_birthDate"] = {"extension": [{"url": "urn:t", "valueTime": "01:00:00"}]}
    patient["name"][1]["_given"] = [{"id": "g"}]
    out = patch(patient, op("delete", "Patient.name[1].given"), op("delete", "Patient.name[1].use"))
    assert out["name"] == [patient["name"][0]]  # {} is not valid FHIR, so the name went too
    out = patch(patient, op("delete", "Patient.birthDate"))
    assert "_birthDate" not in out


def test_delete_choice_by_its_base_name(observation: dict[str, Any]) -> None:
    assert "valueQuantity" not in patch(observation, op("delete", "Observation.value"))


def test_delete_of_several_is_422(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match=r"operation 0 \(delete\).*matches 2"):
        patch(patient, op("delete", "Patient.identifier"))


# --- replace -----------------------------------------------------------------------------------


def test_replace_shapes(patient: dict[str, Any]) -> None:
    out = patch(
        patient,
        op("replace", "Patient.birthDate", value=("valueDate", "1971-01-01")),
        op("replace", "Patient.identifier.where(system='urn:mrn').value", value="999"),
        op("replace", "Patient.name.where(use='usual').given.first()", value="Jimbo"),
        op("replace", "Patient.active", value=("valueBoolean", False)),
    )
    assert out["birthDate"] == "1971-01-01"
    assert out["identifier"][0] == {"system": "urn:mrn", "value": "999"}
    assert out["name"][1]["given"] == ["Jimbo"]
    assert out["active"] is False


def test_replace_complex_value_with_parts(patient: dict[str, Any]) -> None:
    new_name = [{"name": "family", "valueString": "New"}, {"name": "given", "valueString": "A"}]
    out = patch(patient, op("replace", "Patient.name[0]", value=new_name))
    assert out["name"][0] == {"family": "New", "given": ["A"]}


def test_replace_choice_changes_type(observation: dict[str, Any]) -> None:
    out = patch(observation, op("replace", "Observation.value", value="heavy"))
    assert out["valueString"] == "heavy"
    assert "valueQuantity" not in out
    out = patch(
        observation,
        op("replace", "Observation.value.ofType(Quantity).value", value=("valueDecimal", 71.5)),
    )
    assert out["valueQuantity"] == {"value": 71.5, "unit": "kg"}


def test_replace_errors(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="matches nothing"):
        patch(patient, op("replace", "Patient.gender", value=("valueCode", "male")))
    with pytest.raises(Unprocessable, match="matches 2"):
        patch(patient, op("replace", "Patient.name.use", value=("valueCode", "old")))
    with pytest.raises(Unprocessable, match="'id' is not allowed"):
        patch(patient, op("replace", "Patient.id", value=("valueId", "other")))
    with pytest.raises(Unprocessable, match="cannot replace the whole"):
        patch(patient, op("replace", "Patient", value="x"))


# --- move --------------------------------------------------------------------------------------


def test_move_reorders_a_list_and_its_extensions(patient: dict[str, Any]) -> None:
    patient["name"][0]["_given"] = [{"id": "peter"}, None]
    out = patch(patient, op("move", "Patient.name[0].given", source=0, destination=1))
    assert out["name"][0]["given"] == ["James", "Peter"]
    assert out["name"][0]["_given"] == [None, {"id": "peter"}]
    out = patch(patient, op("move", "Patient.identifier", source=1, destination=0))
    assert [i["value"] for i in out["identifier"]] == ["222", "111"]


def test_move_errors(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="source 2 is outside"):
        patch(patient, op("move", "Patient.identifier", source=2, destination=0))
    with pytest.raises(Unprocessable, match="destination 5 is outside"):
        patch(patient, op("move", "Patient.identifier", source=0, destination=5))
    with pytest.raises(Unprocessable, match="is not a list"):
        patch(patient, op("move", "Patient.telecom", source=0, destination=0))


# --- malformed patch documents (400) and unsupported paths ------------------------------------


def _bare(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"name": "operation", "part": list(parts)}


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        ({"name": "op", "part": []}, "must be named 'operation'"),
        (_bare({"name": "path", "valueString": "Patient"}), "'type' must be one of"),
        (_bare({"name": "type", "valueCode": "upsert"}), "'type' must be one of"),
        (_bare({"name": "type", "valueCode": "delete"}), "part 'path' is required"),
        (op("add", "Patient", value="x"), "part 'name' is required"),
        (op("replace", "Patient.active"), "part 'value' is required"),
        (op("insert", "Patient.name", value="x"), "part 'index' is required"),
        (op("move", "Patient.name", source=0), "part 'destination' is required"),
        (op("insert", "Patient.name", value="x", index=-1), "non-negative valueInteger"),
        (op("insert", "Patient.name", value="x", index="1"), "non-negative valueInteger"),
        (op("replace", "Patient.active", value=[]), "needs a value"),
        (op("delete", "Patient.name.where(use='x'"), "unbalanced"),
        (op("delete", "Patient.name[x]"), "indexer"),
        (op("delete", "Patient..name"), "needs an element name"),
        (_bare({"name": "type", "valueCode": "delete"}, {"name": "type"}), "appears twice"),
    ],
)
def test_malformed_is_400_naming_the_operation(
    patient: dict[str, Any], parameter: dict[str, Any], message: str
) -> None:
    ok = op("delete", "Patient.active")
    with pytest.raises(BadRequest, match=message) as caught:
        patch(patient, ok, parameter)
    assert "operation 1" in caught.value.message
    assert caught.value.issues[0].expression == ["Parameters.parameter[1]"]


def test_body_must_be_parameters(patient: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match="Parameters resource"):
        apply_fhirpath_patch(patient, {"resourceType": "Bundle"})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("Observation.status", "is for Observation, not Patient"),
        ("Patient.name.select(given)", "patch paths support"),
    ],
)
def test_unsupported_paths_are_422(patient: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(Unprocessable, match=message):
        patch(patient, op("delete", path))


def test_nested_choice_without_a_type_is_400() -> None:
    obs = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"}}
    component = [
        {"name": "code", "valueCodeableConcept": {"text": "c"}},
        {"name": "value", "part": [{"name": "value", "valueDecimal": 1}]},
    ]
    with pytest.raises(BadRequest, match="choice element 'value' needs a value") as caught:
        patch(obs, op("add", "Observation", name="component", value=component))
    assert caught.value.issues[0].expression == ["Parameters.parameter[0]"]
