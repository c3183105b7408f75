"""Tests for the generated R4 definitions and their loader (carebase.fhir.definitions)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from carebase.fhir.definitions.loader import get_definitions

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path("/work/r4pkg/package")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_definitions", REPO / "tools/generate_definitions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_definitions"] = module
    spec.loader.exec_module(module)
    return module


def test_type_sets() -> None:
    d = get_definitions()
    assert len(d.resource_types) == 147  # R4's 146 and SQL on FHIR's ViewDefinition
    assert "ViewDefinition" in d.resource_types
    assert {"Patient", "Observation", "Bundle", "Parameters", "Binary"} <= d.resource_types
    assert "Resource" not in d.resource_types and "DomainResource" not in d.resource_types
    assert {"string", "code", "dateTime", "xhtml", "positiveInt"} <= d.primitive_types
    assert {"Quantity", "Duration", "Age", "SimpleQuantity", "Extension", "Narrative"} <= (
        d.complex_types
    )
    assert get_definitions() is d  # cached singleton


def test_elements_of_a_resource() -> None:
    patient = get_definitions().elements("Patient")
    assert patient["Patient.id"].types == ("id",)
    assert patient["Patient.birthDate"].types == ("date",) and patient["Patient.birthDate"].summary
    assert patient["Patient.name"].max == "*" and patient["Patient.name"].min == 0
    assert patient["Patient.deceased[x]"].types == ("boolean", "dateTime")
    assert patient["Patient.gender"].binding == {"male", "female", "other", "unknown"}
    assert patient["Patient.link.other"].min == 1
    assert set(patient["Patient.generalPractitioner"].target_profiles) == {
        "Organization",
        "Practitioner",
        "PractitionerRole",
    }


def test_elements_of_data_types_and_aliases() -> None:
    d = get_definitions()
    assert d.elements("string")["string.value"].types == ("string",)
    assert d.elements("Extension")["Extension.url"].types == ("uri",)
    assert d.elements("SimpleQuantity") is d.elements("Quantity")
    assert "Duration.comparator" in d.elements("Duration")
    item = d.elements("Questionnaire")["Questionnaire.item.item"]
    assert item.content_reference == "#Questionnaire.item" and item.types == ()
    assert d.elements("NoSuchType") == {}


def test_bindings() -> None:
    d = get_definitions()
    status = d.elements("Observation")["Observation.status"]
    assert status.binding is not None and "final" in status.binding
    assert status.binding_url == "http://hl7.org/fhir/ValueSet/observation-status"
    # grammar-based / external value sets are recorded but not expanded ("don't check")
    content_type = d.elements("Attachment")["Attachment.contentType"]
    assert content_type.binding_url == "http://hl7.org/fhir/ValueSet/mimetypes"
    assert content_type.binding is None
    # hierarchical code systems contribute nested codes
    kind = d.elements("Coverage")["Coverage.status"]
    assert kind.binding == {"active", "cancelled", "draft", "entered-in-error"}
    assert "http://hl7.org/fhir/fm-status" in kind.binding_systems


def test_search_params_include_resource_level_ones() -> None:
    d = get_definitions()
    params = d.search_params("Patient")
    for code in ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_text"):
        assert code in params, code
    assert params["_id"].expression == "Patient.id" and params["_id"].base == "Patient"
    assert params["_text"].expression is None
    assert "_text" not in d.search_params("Bundle")  # Bundle is not a DomainResource
    assert "_id" in d.search_params("Bundle")
    birthdate = params["birthdate"]
    assert (birthdate.type, birthdate.expression) == ("date", "Patient.birthDate")
    assert "ge" in birthdate.comparators


def test_search_param_expression_is_cut_to_base() -> None:
    d = get_definitions()
    patient = d.search_param("Observation", "patient")
    assert patient is not None
    assert patient.expression == "Observation.subject.where(resolve() is Patient)"
    assert patient.targets == ("Group", "Patient")
    date = d.search_param("Procedure", "date")
    assert date is not None and date.expression == "Procedure.performed"
    value = d.search_param("ActivityDefinition", "context-quantity")
    assert value is not None
    assert value.expression == (
        "(ActivityDefinition.useContext.value as Quantity) | "
        "(ActivityDefinition.useContext.value as Range)"
    )


def test_composite_search_params() -> None:
    param = get_definitions().search_param("Observation", "code-value-quantity")
    assert param is not None and param.type == "composite"
    assert param.components == (("code", "code"), ("value-quantity", "value.as(Quantity)"))


def test_unknown_types_and_codes() -> None:
    d = get_definitions()
    assert d.search_params("NoSuchType") == {}
    assert d.search_param("Patient", "no-such-param") is None


def test_counts_match_the_official_package() -> None:
    d = get_definitions()
    urls = {p.url for t in d.resource_types for p in d.search_params(t).values()}
    core = {u for u in urls if u.startswith("http://hl7.org/fhir/")}
    assert len(core) == 1375  # every core SearchParameter in Bundle-searchParams.json
    assert len(urls - core) == 4  # ViewDefinition's name, url, status, resource


def test_patient_compartment() -> None:
    compartment = get_definitions().patient_compartment
    assert compartment["Observation"] == ("subject", "performer")
    assert compartment["Patient"] == ("link",)
    assert "ValueSet" not in compartment


def test_split_union() -> None:
    gen = _generator()
    assert gen.split_union("A.b | (A.c as X) | A.d.where(e | f)") == [
        "A.b",
        "(A.c as X)",
        "A.d.where(e | f)",
    ]
    assert gen.split_union("A.b.where(x = 'a|b') | B.c") == ["A.b.where(x = 'a|b')", "B.c"]
    assert gen.leading_identifier("(Observation.value as Quantity)") == "Observation"


@pytest.mark.skipif(not PACKAGE.is_dir(), reason="R4 package not unpacked at /work/r4pkg")
def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    gen = _generator()
    assert gen.main([str(PACKAGE), "--out", str(tmp_path)]) == 0
    committed = REPO / "src/carebase/fhir/definitions"
    for path in sorted(tmp_path.glob("*.json.gz")):
        assert path.read_bytes() == (committed / path.name).read_bytes(), path.name
