"""The library views validate and give plausible rows on real Synthea data (via the store)."""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from carebase.analytics import get_runner, parse_view_definition
from carebase.analytics.views import load_view, view_names
from carebase.data.importer import Importer
from carebase.errors import NotFound
from carebase.fhir.validation import validate_resource
from carebase.store.factory import open_store

EXPECTED_COLUMNS = {
    "patient_demographics": {"id", "gender", "birth_date", "deceased", "race", "ethnicity",
                             "postal_code"},
    "observations": {"id", "patient_id", "encounter_id", "loinc_code", "loinc_display", "value",
                     "unit", "value_code", "effective", "status", "category"},
    "conditions": {"id", "patient_id", "code_system", "code", "display", "onset", "abatement",
                   "clinical_status"},
    "medication_requests": {"id", "patient_id", "rxnorm_code", "rxnorm_display", "authored_on",
                            "status"},
    "encounters": {"id", "patient_id", "class", "type_code", "period_start", "period_end",
                   "reason_code"},
}  # fmt: skip
DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def test_every_library_view_is_a_valid_view_definition_resource() -> None:
    assert set(view_names()) == set(EXPECTED_COLUMNS)
    for name in view_names():
        view = load_view(name)
        assert validate_resource(view, expected_type="ViewDefinition") == [], name
        columns = set(parse_view_definition(view).column_names)
        assert EXPECTED_COLUMNS[name] <= columns, name
    with pytest.raises(NotFound, match="patient_demographics"):
        load_view("patients")


@pytest.fixture(scope="module")
def synthea_rows(synthea_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Rows of every library view over 8 Synthea patients imported into a SQLite store."""
    tmp = tmp_path_factory.mktemp("synthea")
    with tarfile.open(synthea_tar) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        people = [m for m in members if "Information" not in m.name][:8]
        shared = [m for m in members if "Information" in m.name]
        tar.extractall(tmp, members=people + shared, filter="data")
    store = open_store(f"sqlite:///{tmp / 'c.db'}")
    store.migrate()
    Importer(store, workers=1).run([tmp / m.name for m in people + shared])

    def bodies(type_: str) -> Iterator[dict[str, Any]]:
        for stored in store.iter_current(type_):
            assert stored.body is not None
            yield orjson.loads(stored.body)

    runner = get_runner("python")
    out = {"patients": {s.id for s in store.iter_current("Patient")}}
    for name in view_names():
        view = load_view(name)
        out[name] = list(runner.run(view, bodies(view["resource"])))
    store.close()
    return out


def test_patient_demographics_on_synthea(synthea_rows: dict[str, Any]) -> None:
    rows = synthea_rows["patient_demographics"]
    assert {r["id"] for r in rows} == synthea_rows["patients"] and len(rows) == 8
    for row in rows:
        assert row["gender"] in ("male", "female")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", row["birth_date"])
        assert row["deceased"] is (row["deceased_date"] is not None)
    assert any(r["postal_code"] for r in rows)


def test_clinical_views_on_synthea_refer_to_the_patients(synthea_rows: dict[str, Any]) -> None:
    patients = synthea_rows["patients"]
    encounters = {r["id"] for r in synthea_rows["encounters"]}
    for name in ("observations", "conditions", "medication_requests", "encounters"):
        rows = synthea_rows[name]
        assert len(rows) > 8, name
        assert {r["patient_id"] for r in rows} <= patients, name
        if name != "encounters":
            assert {r["encounter_id"] for r in rows} <= encounters, name


def test_observation_values_are_plausible(synthea_rows: dict[str, Any]) -> None:
    rows = synthea_rows["observations"]
    assert all(r["loinc_code"] and DATE_TIME.match(r["effective"]) for r in rows)
    heights = [r for r in rows if r["loinc_code"] == "8302-2"]
    assert heights and all(r["unit"] == "cm" and 20 < r["value"] < 250 for r in heights)
    assert {r["category"] for r in rows} >= {"vital-signs"}
    numeric = [r for r in rows if r["value"] is not None]
    assert len(numeric) > len(rows) / 2 and all(
        isinstance(r["value"], int | float) for r in numeric
    )


def test_conditions_medications_and_encounters_are_plausible(
    synthea_rows: dict[str, Any],
) -> None:
    conditions = synthea_rows["conditions"]
    assert {r["code_system"] for r in conditions} == {"http://snomed.info/sct"}
    assert {r["clinical_status"] for r in conditions} <= {"active", "resolved", "inactive"}
    assert all(r["abatement"] is None or r["abatement"] >= r["onset"][:10] for r in conditions)
    meds = synthea_rows["medication_requests"]
    assert all(r["rxnorm_code"] and r["rxnorm_code"].isdigit() for r in meds)
    assert all(DATE_TIME.match(r["authored_on"]) for r in meds)
    encounters = synthea_rows["encounters"]
    assert {r["class"] for r in encounters} <= {"AMB", "EMER", "IMP", "WELLNESS", "ACUTE"}
    assert all(r["period_start"] <= r["period_end"] for r in encounters)
