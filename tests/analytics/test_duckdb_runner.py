"""DuckDB engine: the official suite, identity with the Python runner on Synthea, files."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from suite_cases import (
    SUITE,
    SYNTHEA_VIEWS,
    check_boundaries,
    sorted_rows,
    suite_params,
    suite_resources,
    synthea_resources,
)

from carebase.analytics import ViewEvaluationError, get_runner
from carebase.analytics.conformance_report import main as conformance_main
from carebase.analytics.conformance_report import run_case
from carebase.analytics.duckdb_runner import DuckDBRunner
from carebase.analytics.views import load_view, view_names
from carebase.errors import BadRequest


@pytest.fixture(scope="module")
def duckdb_runner() -> DuckDBRunner:
    runner = get_runner("duckdb")
    assert isinstance(runner, DuckDBRunner)
    return runner


@pytest.mark.parametrize(("path", "case"), suite_params())
def test_case(duckdb_runner: DuckDBRunner, path: Path, case: dict[str, Any]) -> None:
    passed, reason = run_case(duckdb_runner, suite_resources(path), case)
    assert passed, reason


def test_report_cli_runs_the_duckdb_engine(tmp_path: Path) -> None:
    if not SUITE.is_dir():
        pytest.skip(f"no suite at {SUITE}")
    out = tmp_path / "test_report.json"
    assert conformance_main([str(SUITE), str(out), "duckdb"]) == 0
    report = json.loads(out.read_text())
    assert report["basic.json"]["tests"][0]["result"] == {"passed": True}


@pytest.fixture(scope="module")
def synthea(synthea_tar: Path) -> list[dict[str, Any]]:
    return synthea_resources(synthea_tar, bundles=20)


@pytest.mark.parametrize("view_name", sorted(SYNTHEA_VIEWS))
def test_same_rows_as_python_on_synthea(
    duckdb_runner: DuckDBRunner, synthea: list[dict[str, Any]], view_name: str
) -> None:
    view = SYNTHEA_VIEWS[view_name]
    expected = sorted_rows(get_runner("python").run(view, synthea))
    got = sorted_rows(duckdb_runner.run(view, synthea))
    assert len(expected) >= 20  # the sample holds real rows of every view
    assert got == expected


@pytest.mark.parametrize("view_name", view_names())
def test_library_views_give_python_rows_on_synthea(
    duckdb_runner: DuckDBRunner, synthea: list[dict[str, Any]], view_name: str
) -> None:
    view = load_view(view_name)
    expected = sorted_rows(get_runner("python").run(view, synthea))
    assert expected  # every library view has rows in the sample
    assert sorted_rows(duckdb_runner.run(view, synthea)) == expected


def test_decimal_boundaries_follow_written_digits(duckdb_runner: DuckDBRunner) -> None:
    check_boundaries(duckdb_runner)


OBS = [
    {
        "resourceType": "Observation",
        "id": f"o{i}",
        "subject": {"reference": f"Patient/p{i % 2}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 60 + i, "unit": "/min"},
    }
    for i in range(5)
]
OBS_VIEW = {
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "id"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                {"name": "rate", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "codes", "path": "code.coding.code", "collection": True},
            ]
        }
    ],
}


@pytest.fixture
def obs_files(tmp_path: Path) -> list[Path]:
    plain = tmp_path / "a.ndjson"
    plain.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in OBS[:3]))
    zipped = tmp_path / "b.ndjson.gz"
    with gzip.open(zipped, "wb") as handle:
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in OBS[3:]))
    return [plain, zipped]


def test_run_files_matches_run(duckdb_runner: DuckDBRunner, obs_files: list[Path]) -> None:
    from_files = sorted_rows(duckdb_runner.run_files(OBS_VIEW, obs_files))
    assert from_files == sorted_rows(duckdb_runner.run(OBS_VIEW, OBS))
    assert from_files[0] == {"id": "o0", "patient": "p0", "rate": 60, "codes": ["8867-4"]}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "ndjson", "json"])
def test_write_files_natively(
    duckdb_runner: DuckDBRunner, obs_files: list[Path], tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"out.{fmt}"
    assert duckdb_runner.write_files(OBS_VIEW, obs_files, fmt, out) == 5
    if fmt == "parquet":
        table = pq.read_table(out)
        rows = sorted_rows(table.to_pylist())
        assert rows[0]["rate"] == 60.0 and table.schema.field("rate").type == "double"
    elif fmt == "csv":
        with out.open(newline="") as handle:
            rows = sorted_rows(csv.DictReader(handle))
        assert rows[0] == {"id": "o0", "patient": "p0", "rate": "60.0", "codes": '["8867-4"]'}
    else:
        text = out.read_text()
        rows = json.loads(text) if fmt == "json" else [json.loads(x) for x in text.splitlines()]
        assert sorted_rows(rows)[0] == {
            "id": "o0",
            "patient": "p0",
            "rate": 60.0,
            "codes": ["8867-4"],
        }


def test_errors_name_the_problem(duckdb_runner: DuckDBRunner, tmp_path: Path) -> None:
    two_codes = {
        "resource": "Patient",
        "select": [{"column": [{"name": "n", "path": "name.family"}]}],
    }
    patient = {"resourceType": "Patient", "id": "p", "name": [{"family": "A"}, {"family": "B"}]}
    with pytest.raises(ViewEvaluationError, match=r"select\[0\]\.column\[0\]\.path.*several"):
        list(duckdb_runner.run(two_codes, [patient]))
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"resourceType": "Patient"}\n{oops\n')
    with pytest.raises(BadRequest, match=r"bad\.ndjson"):
        list(duckdb_runner.run_files(two_codes, [bad]))
    with pytest.raises(BadRequest, match="unknown output format"):
        duckdb_runner.write_files(two_codes, [bad], "xlsx", tmp_path / "x")


@pytest.fixture(scope="module")
def synthea_file(synthea: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synthea") / "sample.ndjson"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in synthea))
    return path


@pytest.mark.parametrize("view_name", sorted(SYNTHEA_VIEWS))
def test_files_on_synthea_match_python(
    duckdb_runner: DuckDBRunner,
    synthea: list[dict[str, Any]],
    synthea_file: Path,
    view_name: str,
) -> None:
    # run_files takes the typed reader whenever a view reads pre-extracted fields only
    view = SYNTHEA_VIEWS[view_name]
    expected = sorted_rows(get_runner("python").run(view, synthea))
    assert sorted_rows(duckdb_runner.run_files(view, [synthea_file])) == expected


def test_single_valued_paths_need_no_lists(duckdb_runner: DuckDBRunner) -> None:
    query = duckdb_runner.compile(OBS_VIEW)
    assert not query.needs_resource  # every path starts from a pre-extracted column
    assert [keys for keys, _ in query.fields] == [
        ("resourceType",),
        ("id",),
        ("subject", "reference"),
        ("valueQuantity", "value"),
    ]
    # the codes, through the repeating `coding`, are one list column
    assert [[(s.key, s.many) for s in steps] for steps, _ in query.lists] == [
        [("code", False), ("coding", True), ("code", False)]
    ]
    picks = query.sql.split(" FROM ")[0]
    # id, patient and rate are read as one item each, the codes as their list column
    assert "list_transform" not in picks and '_f1 AS "id"' in picks and "_l0" in picks


def test_other_json_shapes_fall_back_to_whole_resources(
    duckdb_runner: DuckDBRunner, tmp_path: Path
) -> None:
    # `subject` a string, `code.coding` an object: not R4, so the typed reader refuses them
    odd = [
        {**OBS[0], "subject": "Patient/p0"},
        {**OBS[1], "code": {"coding": {"system": "http://loinc.org", "code": "x"}}},
    ]
    path = tmp_path / "odd.ndjson"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in odd))
    expected = sorted_rows(get_runner("python").run(OBS_VIEW, odd))
    assert sorted_rows(duckdb_runner.run_files(OBS_VIEW, [path])) == expected
    assert duckdb_runner.write_files(OBS_VIEW, [path], "ndjson", tmp_path / "out.ndjson") == 2


@pytest.mark.parametrize("shape", ["typed", "whole"])
def test_write_files_containing_preselects_by_text(
    duckdb_runner: DuckDBRunner, tmp_path: Path, shape: str
) -> None:
    coded = [
        {**OBS[0], "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}},
        OBS[1],  # 8867-4: not selected
        # "4548-4" spelt with an escape: kept, the text alone cannot tell
        orjson.dumps({**OBS[2], "code": {"coding": [{"code": "X"}]}}).replace(
            b'"X"', b'"\\u0034548-4"'
        ),
        {**OBS[3], "code": {"coding": [{"system": "http://loinc.org", "code": "14548-4"}]}},
    ]
    if shape == "whole":  # `subject` a string: the typed reader refuses the file
        coded.append({**OBS[4], "subject": "Patient/p0"})
    path = tmp_path / "obs.ndjson"
    path.write_bytes(
        b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in coded)
    )
    out = tmp_path / "out.ndjson"
    assert duckdb_runner.write_files(OBS_VIEW, [path], "ndjson", out, containing=['"4548-4"']) == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["o0", "o2"]
    assert duckdb_runner.write_files(OBS_VIEW, [path], "ndjson", out) == len(coded)


def test_write_files_containing_within_searches_those_elements(
    duckdb_runner: DuckDBRunner, tmp_path: Path
) -> None:
    # "4548-4" only in o1's id text, not in its code: found when all fields are searched
    marked = [OBS[0], {**OBS[1], "id": "4548-4"}]
    path = tmp_path / "obs.ndjson"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in marked))
    out = tmp_path / "out.ndjson"
    wanted = ['"4548-4"']
    assert duckdb_runner.write_files(OBS_VIEW, [path], "ndjson", out, containing=wanted) == 1
    n = duckdb_runner.write_files(
        OBS_VIEW, [path], "ndjson", out, containing=wanted, within=["code"]
    )
    assert n == 0
    # an element the view does not read cannot narrow the search: every field is searched
    n = duckdb_runner.write_files(
        OBS_VIEW, [path], "ndjson", out, containing=wanted, within=["component"]
    )
    assert n == 1


PANELS = [
    {
        "resourceType": "Observation",
        "id": "bp1",
        "subject": {"reference": "Patient/p0"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {
                "code": {
                    "coding": [
                        {"system": "http://loinc.org", "code": "8480-6"},
                        {"system": "http://snomed.info/sct", "code": "271649006"},
                    ]
                },
                "valueQuantity": {"value": 120.5},
            },
            {"code": {"coding": [{"code": "8462-4"}]}},
            {"valueQuantity": {"value": 80}},
        ],
    },
    {
        "resourceType": "Observation",
        "id": "bp2",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": []},
        "component": [],
    },
    {"resourceType": "Observation", "id": "bp3", "subject": {"reference": "Patient/p1"}},
]
COMPONENTS_VIEW = {
    "resource": "Observation",
    "select": [
        {"column": [{"name": "id", "path": "getResourceKey()"}]},
        {
            "forEachOrNull": "component",
            "column": [
                {"name": "code", "path": "code.coding.code.first()"},
                {"name": "codes", "path": "code.coding.code", "collection": True},
                {"name": "value", "path": "value.ofType(Quantity).value"},
                {"name": "i", "path": "%rowIndex"},
            ],
            "select": [{"column": [{"name": "system", "path": "code.coding.system.first()"}]}],
        },
    ],
}


@pytest.mark.parametrize("source", ["memory", "typed files", "other shape"])
def test_foreach_elements_read_as_records(
    duckdb_runner: DuckDBRunner, tmp_path: Path, source: str
) -> None:
    query = duckdb_runner.compile(COMPONENTS_VIEW)
    # the forEach iterates over records of the chains its columns (nested select included)
    # read, and the chains through `coding` are collections: no element JSON is parsed
    [(steps, _, members)] = query.groups
    assert [s.key for s in steps] == ["component"]
    assert sorted(tuple(s.key for s in rel) for rel, _ in members) == [
        ("code", "coding", "code"),
        ("code", "coding", "system"),
        ("valueQuantity", "value"),
    ]
    resources: list[dict[str, Any]] = [dict(r) for r in PANELS]
    if source == "other shape":  # one component an object, not an array: the exact query
        resources.append({**PANELS[0], "id": "bp4", "component": PANELS[0]["component"][0]})
    expected = sorted_rows(get_runner("python").run(COMPONENTS_VIEW, resources))
    assert len(expected) == 5 + (source == "other shape")
    if source == "memory":
        got = duckdb_runner.run(COMPONENTS_VIEW, resources)
    else:
        path = tmp_path / "obs.ndjson"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
        got = duckdb_runner.run_files(COMPONENTS_VIEW, [path])
    assert sorted_rows(got) == expected


def test_foreach_needing_the_element_itself_stays_generic(duckdb_runner: DuckDBRunner) -> None:
    view = {
        "resource": "Observation",
        "select": [
            {
                "forEach": "component",
                "column": [
                    {"name": "parts", "path": "exists()"},
                    {"name": "code", "path": "code.coding.code.first()"},
                ],
            }
        ],
    }
    assert duckdb_runner.compile(view).groups == ()
    expected = sorted_rows(get_runner("python").run(view, PANELS))
    assert sorted_rows(duckdb_runner.run(view, PANELS)) == expected
