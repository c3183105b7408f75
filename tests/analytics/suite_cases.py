"""Shared test helpers: the official SQL on FHIR suite as pytest cases, and Synthea views."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from carebase.analytics.conformance_report import suite_files
from carebase.fhir import json_io
from shared_data import SHARED

SUITE = SHARED / "conformance" / "sql-on-fhir-v2"


def suite_params() -> list[Any]:
    """One pytest.param(path, case) per case of the suite (one skip when it is absent)."""
    if not SUITE.is_dir():
        print(f"SQL on FHIR conformance suite not found at {SUITE}; its cases are skipped")
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no suite at {SUITE}"))]
    params = []
    for path in suite_files(SUITE):
        suite = json.loads(path.read_text(encoding="utf-8"))
        for case in suite["tests"]:
            params.append(pytest.param(path, case, id=f"{path.stem}:{case['title']}"))
    return params


def suite_resources(path: Path) -> list[dict[str, Any]]:
    """The resources of one suite file."""
    resources: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8")).get(
        "resources", []
    )
    return resources


def synthea_resources(tar_path: Path, bundles: int = 20) -> list[dict[str, Any]]:
    """The resources of the first `bundles` patient Bundles of the Synthea sample."""
    resources: list[dict[str, Any]] = []
    taken = 0
    with tarfile.open(tar_path) as tar:
        for member in tar:
            name = Path(member.name).name
            if not member.isfile() or not name.endswith(".json"):
                continue
            if name.startswith(("practitionerInformation", "hospitalInformation")):
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            bundle = orjson.loads(extracted.read())
            resources.extend(entry["resource"] for entry in bundle.get("entry", []))
            taken += 1
            if taken == bundles:
                break
    return resources


#: views over real data: demographics, observations, conditions
SYNTHEA_VIEWS: dict[str, dict[str, Any]] = {
    "patients": {
        "resource": "Patient",
        "select": [
            {
                "column": [
                    {"name": "id", "path": "getResourceKey()"},
                    {"name": "gender", "path": "gender"},
                    {"name": "birth_date", "path": "birthDate"},
                    {"name": "deceased", "path": "deceased.ofType(dateTime)"},
                    {"name": "family", "path": "name.where(use = 'official').family.first()"},
                    {"name": "given", "path": "name.first().given.join(' ')"},
                    {
                        "name": "race",
                        "path": "extension('http://hl7.org/fhir/us/core/StructureDefinition/"
                        "us-core-race').extension('ombCategory').value.ofType(Coding)"
                        ".display.first()",
                    },
                    {
                        "name": "phones",
                        "path": "telecom.where(system = 'phone').value",
                        "collection": True,
                    },
                ]
            },
            {
                "forEachOrNull": "address",
                "column": [
                    {"name": "city", "path": "city"},
                    {"name": "address_index", "path": "%rowIndex"},
                ],
            },
        ],
    },
    "observations": {
        "resource": "Observation",
        "select": [
            {
                "column": [
                    {"name": "id", "path": "id"},
                    {"name": "subject", "path": "subject.reference"},
                    {
                        "name": "loinc",
                        "path": "code.coding.where(system = 'http://loinc.org').code.first()",
                    },
                    {"name": "value", "path": "value.ofType(Quantity).value"},
                    {"name": "unit", "path": "value.ofType(Quantity).unit"},
                    {"name": "effective", "path": "effective.ofType(dateTime)"},
                    {"name": "high", "path": "value.ofType(Quantity).value > 100"},
                ]
            },
            {
                "forEachOrNull": "component",
                "column": [
                    {"name": "component_code", "path": "code.coding.code.first()"},
                    {"name": "component_value", "path": "value.ofType(Quantity).value"},
                ],
            },
        ],
    },
    "conditions": {
        "resource": "Condition",
        "where": [{"path": "clinicalStatus.coding.exists()"}],
        "select": [
            {
                "column": [
                    {"name": "id", "path": "id"},
                    {"name": "subject", "path": "subject.reference"},
                    {"name": "code", "path": "code.coding.code.first()"},
                    {"name": "display", "path": "code.text"},
                    {"name": "onset", "path": "onset.ofType(dateTime)"},
                    {"name": "active", "path": "clinicalStatus.coding.code contains 'active'"},
                ]
            }
        ],
    },
}


def sorted_rows(rows: Any) -> list[dict[str, Any]]:
    """Rows in a fixed order (engines may return them in any order)."""
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


#: decimals whose written digits a float or VARIANT would lose (1.50, -0.250), next to a
#: string holding longer numbers that must not count; the spec's 1.587 examples
BOUNDARY_RESOURCES = [
    b'{"resourceType": "Observation", "id": "o1", "note": [{"text": "1.5000 or 2.000"}],'
    b' "valueQuantity": {"value": 1.50}, "component": [{"valueQuantity": {"value": 2.0}},'
    b' {"valueQuantity": {"value": -0.250}}, {"valueQuantity": {"value": 1.587}},'
    b' {"valueQuantity": {"value": -1.587}}, {"valueQuantity": {"value": 7}}]}',
    b'{"resourceType": "Observation", "id": "o2", "valueQuantity": {"value": 1.5}}',
]
BOUNDARY_VIEW: dict[str, Any] = {
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "id"},
                {"name": "low", "path": "value.ofType(Quantity).value.lowBoundary()"},
                {"name": "high", "path": "value.ofType(Quantity).value.highBoundary()"},
                {"name": "literal", "path": "(1.50).highBoundary()"},
            ]
        },
        {
            "forEachOrNull": "component",
            "column": [
                {"name": "c", "path": "value.ofType(Quantity).value.lowBoundary()"},
                {"name": "c_low2", "path": "value.ofType(Quantity).value.lowBoundary(2)"},
                {"name": "c_high2", "path": "value.ofType(Quantity).value.highBoundary(2)"},
            ],
        },
    ],
}
#: (id, low, high, literal, c, c_low2, c_high2) of each row
BOUNDARY_ROWS = [
    ("o1", 1.495, 1.505, 1.505, 1.95, 1.95, 2.05),
    ("o1", 1.495, 1.505, 1.505, -0.2505, -0.26, -0.24),
    ("o1", 1.495, 1.505, 1.505, 1.5865, 1.58, 1.59),
    ("o1", 1.495, 1.505, 1.505, -1.5875, -1.59, -1.58),
    ("o1", 1.495, 1.505, 1.505, 7, 7, 7),
    ("o2", 1.45, 1.55, 1.505, None, None, None),
]


def check_boundaries(runner: Any) -> None:
    """`runner` gives BOUNDARY_ROWS for BOUNDARY_VIEW over decimals parsed as carebase does."""
    resources = [json_io.loads(text) for text in BOUNDARY_RESOURCES]
    names = [c["name"] for s in BOUNDARY_VIEW["select"] for c in s["column"]]
    expected = sorted_rows(dict(zip(names, row, strict=True)) for row in BOUNDARY_ROWS)
    assert sorted_rows(runner.run(BOUNDARY_VIEW, resources)) == expected
