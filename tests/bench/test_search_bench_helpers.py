"""The search benchmark's dataset copies and plan flags (bench/search_dataset.py, search_plans)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from search_dataset import copy_suffix, make_copy
from search_plans import full_scans

PATIENT = "a0000000-0000-4000-8000-000000000001"
ENCOUNTER = "b0000000-0000-4000-8000-000000000002"
OTHER = "c0000000-0000-4000-8000-000000000003"  # a UUID that is no resource id


def _template() -> tuple[bytes, set[bytes]]:
    resources = [
        {
            "resourceType": "Patient",
            "id": PATIENT,
            "name": [{"family": "Smith", "given": ["Ann"]}],
            "identifier": [{"system": "urn:x", "value": "123"}],
        },
        {
            "resourceType": "Encounter",
            "id": ENCOUNTER,
            "subject": {"reference": f"Patient/{PATIENT}"},
            "identifier": [{"value": OTHER}],
        },
    ]
    return orjson.dumps(resources), {PATIENT.encode(), ENCOUNTER.encode()}


def test_copies_get_fresh_ids_and_consistent_references() -> None:
    text, ids = _template()
    first, second = make_copy(text, ids, 0), make_copy(text, ids, 1)
    new_ids = {r["id"] for r in first + second}
    assert len(new_ids) == 4 and not new_ids & {PATIENT, ENCOUNTER}
    for copy in (first, second):
        patient, encounter = copy
        assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
        assert encounter["identifier"][0]["value"] == OTHER  # not an id: left alone
    assert make_copy(text, ids, 1) == second  # stable between runs


def test_copies_vary_family_names_and_patient_identifiers() -> None:
    text, ids = _template()
    patient = make_copy(text, ids, 27)[0]
    assert patient["name"][0]["family"] == "Smith" + copy_suffix(27) == "Smithbb"
    assert patient["name"][0]["given"] == ["Ann"]
    assert patient["identifier"][0]["value"] == "123-27"


def test_full_scans_flags_table_scans_and_whole_range_searches() -> None:
    plan = "\n".join(
        [
            "SEARCH resource USING INDEX resource_type_updated (type=?)",
            "SEARCH idx_string USING INDEX idx_string_lookup (pkey=?)",
            "SEARCH idx_token USING INDEX idx_token_lookup (pkey=? AND code=? AND system=?)",
            "SEARCH resource USING INTEGER PRIMARY KEY (rowid=?)",
            "SCAN idx_date",
            "SCAN schema_migrations",
            "  ->  Seq Scan on idx_reference  (cost=0.00..1.00 rows=1 width=8)",
            "  ->  Index Scan using resource_pkey on resource  (cost=0.42..8.44 rows=1)",
        ]
    )
    assert full_scans(plan) == [
        "SEARCH resource USING INDEX resource_type_updated (type=?)",
        "SEARCH idx_string USING INDEX idx_string_lookup (pkey=?)",
        "SCAN idx_date",
        "Seq Scan on idx_reference  (cost=0.00..1.00 rows=1 width=8)",
    ]
