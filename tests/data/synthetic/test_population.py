"""The generated population: valid FHIR, deterministic, referentially whole, and
clinically coherent (the signals the ML tasks learn from exist and are not deterministic)."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from carebase.data.synthetic.codes import DRUGS, MEASURES, PROBLEMS
from carebase.data.synthetic.population import Population, write_ndjson
from carebase.fhir.validation import validate_resource

Records = dict[str, dict[str, list[dict[str, Any]]]]


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def _has_code(concept: dict[str, Any], code: str) -> bool:
    return any(c.get("code") == code for c in concept.get("coding", []))


def _values(by_type: dict[str, list[dict[str, Any]]], loinc: str) -> list[tuple[datetime, float]]:
    return sorted(
        (_when(o["effectiveDateTime"]), o["valueQuantity"]["value"])
        for o in by_type["Observation"]
        if _has_code(o["code"], loinc)
    )


def _systolic(by_type: dict[str, list[dict[str, Any]]]) -> list[float]:
    return [
        c["valueQuantity"]["value"]
        for o in by_type["Observation"]
        for c in o.get("component", [])
        if _has_code(c["code"], MEASURES["sbp"].loinc)
    ]


def _condition(by_type: dict[str, list[dict[str, Any]]], problem: str) -> dict[str, Any] | None:
    snomed = PROBLEMS[problem].snomed
    return next((c for c in by_type["Condition"] if _has_code(c["code"], snomed)), None)


def _references(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def test_every_resource_validates_and_every_reference_resolves(population: Population) -> None:
    resources = population.shared() + [r for _n, rs in population.patients(40) for r in rs]
    keys = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert len(keys) == len(resources), "ids are unique"
    errors = [
        (r["resourceType"], r["id"], issue.diagnostics, issue.expression)
        for r in resources
        for issue in validate_resource(r)
        if issue.severity in ("error", "fatal")
    ]
    assert errors == []
    dangling = [(key, ref) for r in resources for ref in _references(r) if ref not in keys
                for key in [r["resourceType"]]]  # fmt: skip
    assert dangling == []
    types = {r["resourceType"] for r in resources}
    assert types >= {
        "Patient", "Organization", "Practitioner", "Encounter", "Condition", "Observation",
        "MedicationRequest", "AllergyIntolerance", "Immunization", "Procedure",
        "DocumentReference",
    }  # fmt: skip


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    write_ndjson(Population(5), 12, tmp_path / "a")
    write_ndjson(Population(5), 12, tmp_path / "b")
    write_ndjson(Population(6), 12, tmp_path / "c")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "Patient.ndjson" in names and names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "Patient.ndjson").read_bytes() != (
        tmp_path / "c" / "Patient.ndjson"
    ).read_bytes()
    assert len((tmp_path / "a" / "Patient.ndjson").read_bytes().splitlines()) == 12


def test_a_patient_does_not_depend_on_the_others(population: Population) -> None:
    assert population.patient(7) == [r for n, rs in population.patients(3, first=6) for r in rs
                                     if n == 7]  # fmt: skip


def test_patients_carry_an_mrn_and_are_linked_to_their_clinic(records: Records) -> None:
    mrns = set()
    for by_type in records.values():
        patient = by_type["Patient"][0]
        (identifier,) = patient["identifier"]
        assert identifier["system"] == "urn:carebase:synthetic:mrn"
        mrns.add(identifier["value"])
        assert patient["managingOrganization"]["reference"].startswith("Organization/")
    assert len(mrns) == len(records)


def test_diabetics_get_metformin_and_hypertensives_an_antihypertensive(records: Records) -> None:
    diabetics = hypertensives = 0
    for by_type in records.values():
        drugs = {
            c["code"] for m in by_type["MedicationRequest"]
            for c in m["medicationCodeableConcept"]["coding"]
        }  # fmt: skip
        if _condition(by_type, "t2d"):
            diabetics += 1
            assert DRUGS["metformin"].rxnorm in drugs
        if _condition(by_type, "hypertension"):
            hypertensives += 1
            bp_drugs = {
                DRUGS[d].rxnorm for d in ("lisinopril", "amlodipine", "hydrochlorothiazide")
            }
            assert drugs & bp_drugs
    assert diabetics >= 20 and hypertensives >= 60


def test_hba1c_rises_before_a_type_2_diabetes_diagnosis(records: Records) -> None:
    rises, never_diabetic = [], []
    for by_type in records.values():
        hba1c = _values(by_type, MEASURES["hba1c"].loinc)
        condition = _condition(by_type, "t2d")
        if condition is None:
            never_diabetic.extend(v for _t, v in hba1c)
            continue
        diagnosed = _when(condition["recordedDate"])
        before = [v for t, v in hba1c if t < diagnosed - timedelta(days=1)]
        if len(before) >= 2:
            rises.append(before[-1] - before[0])
    assert len(rises) >= 8
    assert statistics.mean(rises) > 0.2
    # The label is a random draw, not a threshold: some rise little, and diabetes comes
    # from the same HbA1c range in which others stay non-diabetic.
    assert min(rises) < 0.2
    assert max(never_diabetic) >= 6.0


def test_blood_pressure_and_kidney_function_follow_the_diagnoses(records: Records) -> None:
    sbp = {True: [], False: []}  # type: dict[bool, list[float]]
    egfr = {True: [], False: []}  # type: dict[bool, list[float]]
    for by_type in records.values():
        sbp[_condition(by_type, "hypertension") is not None].extend(_systolic(by_type))
        values = [v for _t, v in _values(by_type, MEASURES["egfr"].loinc)]
        egfr[_condition(by_type, "ckd") is not None].extend(values)
    assert statistics.mean(sbp[True]) > statistics.mean(sbp[False]) + 10
    assert statistics.mean(egfr[True]) < statistics.mean(egfr[False]) - 20


def test_readmissions_within_30_days_happen_at_a_plausible_rate(records: Records) -> None:
    admissions = readmitted = 0
    for by_type in records.values():
        stays = sorted(
            (_when(e["period"]["start"]), _when(e["period"]["end"]))
            for e in by_type["Encounter"]
            if e["class"]["code"] == "IMP"
        )
        for i, (_start, end) in enumerate(stays):
            admissions += 1
            readmitted += any(end < s <= end + timedelta(days=30) for s, _e in stays[i + 1 :])
    assert admissions >= 100
    assert 0.05 <= readmitted / admissions <= 0.30


EVENT_TIMES = ("effectiveDateTime", "onsetDateTime", "authoredOn", "occurrenceDateTime", "date",
               "recordedDate", "abatementDateTime")  # fmt: skip


def _event_times(resource: dict[str, Any]) -> Iterator[datetime]:
    for key in EVENT_TIMES:
        if key in resource and "T" in resource[key]:
            yield _when(resource[key])
    for key in ("period", "performedPeriod"):
        if key in resource:
            yield from (_when(resource[key][k]) for k in ("start", "end") if k in resource[key])


def test_nothing_happens_before_birth_or_after_death(records: Records) -> None:
    deaths = 0
    for by_type in records.values():
        patient = by_type["Patient"][0]
        birth = datetime.fromisoformat(patient["birthDate"])
        death = _when(patient["deceasedDateTime"]) if "deceasedDateTime" in patient else None
        deaths += death is not None
        for resources in by_type.values():
            for resource in resources:
                for moment in _event_times(resource):
                    assert moment >= birth + timedelta(days=365 * 18)
                    assert death is None or moment <= death, (resource["resourceType"], moment)
    assert 0.05 * len(records) <= deaths <= 0.35 * len(records)


def test_notes_are_readable_text(records: Records) -> None:
    import base64

    note = next(iter(records.values()))["DocumentReference"][0]
    attachment = note["content"][0]["attachment"]
    assert attachment["contentType"].startswith("text/plain")
    text = base64.b64decode(attachment["data"]).decode()
    assert "year-old" in text and "BP " in text


def test_no_visit_for_a_lasting_problem_before_it_is_recorded(records: Records) -> None:
    for by_type in records.values():
        for problem in ("t2d", "hypertension", "ckd"):
            condition = _condition(by_type, problem)
            snomed = PROBLEMS[problem].snomed
            for encounter in by_type["Encounter"]:
                if any(_has_code(reason, snomed) for reason in encounter.get("reasonCode", [])):
                    assert condition is not None
                    assert _when(encounter["period"]["start"]) >= _when(condition["recordedDate"])
