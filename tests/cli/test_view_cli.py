"""`carebase view run|list` end to end as real subprocesses: files, databases, formats, errors."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from test_migrate import run_cli

from carebase.store.base import Store

PATIENTS = [
    {"resourceType": "Patient", "id": f"p{i}", "gender": "female" if i % 2 else "male",
     "birthDate": f"19{50 + i}-01-02", "address": [{"postalCode": f"0{i}000"}]}
    for i in range(5)
]  # fmt: skip
OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Height"}]},
    "subject": {"reference": "Patient/p1"},
    "valueQuantity": {"value": 170.5, "unit": "cm"},
    "effectiveDateTime": "2020-01-01T10:00:00Z",
}  # fmt: skip


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """A Bulk Data style directory: Patient.ndjson.gz and Observation.ndjson."""
    folder = tmp_path / "export"
    folder.mkdir()
    lines = b"\n".join(orjson.dumps(p) for p in PATIENTS) + b"\n"
    (folder / "Patient.ndjson.gz").write_bytes(gzip.compress(lines))
    (folder / "Observation.ndjson").write_bytes(orjson.dumps(OBSERVATION) + b"\n")
    return folder


def test_list_names_the_library_views() -> None:
    done = run_cli("view", "list")
    assert done.returncode == 0, done.stderr
    for name in ("patient_demographics", "observations", "conditions", "medication_requests",
                 "encounters"):  # fmt: skip
        assert name in done.stdout


def test_library_view_over_a_directory_to_csv_and_parquet(export_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "patients.csv"
    done = run_cli("view", "run", "patient_demographics", "--source", str(export_dir),
                   "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "5 rows of patient_demographics" in done.stderr
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["id"] for r in table] == [p["id"] for p in PATIENTS]
    assert table[1]["gender"] == "female" and table[1]["postal_code"] == "01000"
    out = tmp_path / "obs.parquet"
    observations = str(export_dir / "Observation.ndjson")
    done = run_cli("view", "run", "observations", "--source", observations, "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 1 and rows[0]["value"] == 170.5 and rows[0]["patient_id"] == "p1"


def test_view_file_to_stdout_as_ndjson(export_dir: Path, tmp_path: Path) -> None:
    view = {
        "resourceType": "ViewDefinition",
        "status": "active",
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "id"}, {"name": "g", "path": "gender"}]}],
    }
    path = tmp_path / "v.json"
    path.write_text(json.dumps(view))
    done = run_cli("view", "run", str(path), "--source", str(export_dir), "--format", "ndjson")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in done.stdout.splitlines()]
    assert len(rows) == 5 and rows[0] == {"id": "p0", "g": "male"}


def test_database_source(store: Store, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The `store` fixture's database (SQLite file, then PostgreSQL) read by the command."""
    with store.transaction() as tx:
        for patient in PATIENTS:
            tx.create("Patient", dict(patient), patient["id"])
        tx.create("Observation", dict(OBSERVATION), "o1")
    url = f"sqlite:///{tmp_path / 'carebase.db'}"
    if store.dialect == "postgresql":
        url = request.getfixturevalue("postgres_url")
    out = tmp_path / "p.json"
    done = run_cli("view", "run", "patient_demographics", "--database", url, "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert sorted(r["id"] for r in rows) == [p["id"] for p in PATIENTS]


def test_clear_errors(export_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "resourceType": "ViewDefinition",
                "resource": "Patient",
                "select": [{"column": [{"name": "a", "path": "name.where("}]}],
            }
        )
    )
    cases = [
        (("view", "run", str(bad), "--source", str(export_dir)),
         "ViewDefinition.select[0].column[0].path"),
        (("view", "run", "nope", "--source", str(export_dir)), "known views"),
        (("view", "run", "observations", "--source", str(tmp_path / "missing.ndjson")),
         "missing.ndjson"),
        (("view", "run", "observations", "--source", str(export_dir), "--engine", "sql3"),
         "unknown view engine 'sql3'"),
        (("view", "run", "observations", "--source", str(export_dir), "--format", "xml"),
         "--format"),
        (("view", "run", "observations", "--source", str(export_dir), "--format", "parquet"),
         "--out"),
        (("view", "run", "observations"), "--source"),
    ]  # fmt: skip
    for args, text in cases:
        done = run_cli(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert text in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert not list(tmp_path.glob("*.parquet"))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_duckdb_engine_writes_what_the_python_engine_writes(
    export_dir: Path, tmp_path: Path, fmt: str
) -> None:
    outputs = {}
    for engine in ("python", "duckdb"):
        out = tmp_path / f"{engine}.{fmt}"
        done = run_cli("view", "run", "patient_demographics", "--source", str(export_dir),
                       "--engine", engine, "--out", str(out))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "5 rows" in done.stderr
        if fmt == "parquet":
            rows = pq.read_table(out).to_pylist()
        else:
            rows = list(csv.DictReader(io.StringIO(out.read_text())))
        outputs[engine] = sorted(rows, key=lambda r: str(r["id"]))
    assert len(outputs["python"]) == 5 and outputs["python"] == outputs["duckdb"]
