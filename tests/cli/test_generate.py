"""`carebase generate` and `carebase demo` as real subprocesses, on SQLite files and
PostgreSQL schemas, then searched through the store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_migrate import assert_one_line_error, run_cli
from test_serve import Server, cli_env, free_port, wait_until_serving

from carebase.auth.users import UserDirectory
from carebase.data.synthetic.codes import MRN_SYSTEM, PROBLEMS
from carebase.store.factory import open_store

T2D = f"http://snomed.info/sct|{PROBLEMS['t2d'].snomed}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL: a SQLite file or an empty PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'carebase.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


def _ndjson(directory: Path, type_: str) -> list[dict[str, object]]:
    lines = (directory / f"{type_}.ndjson").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_generate_writes_bulk_ndjson(tmp_path: Path) -> None:
    proc = run_cli("generate", "--patients", "6", "--seed", "4", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "Wrote" in proc.stderr and "6 patients" in proc.stderr
    patients = _ndjson(tmp_path / "out", "Patient")
    assert len(patients) == 6
    assert len(_ndjson(tmp_path / "out", "Organization")) == 4
    observations = _ndjson(tmp_path / "out", "Observation")
    assert all(o["subject"] in [{"reference": f"Patient/{p['id']}"} for p in patients]
               for o in observations)  # fmt: skip


def test_generate_loads_the_database_idempotently_and_it_is_searchable(
    database: str, tmp_path: Path
) -> None:
    proc = run_cli("generate", "--patients", "30", "--seed", "4", "--database", database,
                   timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    created = int(re.search(r"([\d,]+) created", proc.stderr).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert created > 1000 and "0 rejected" in proc.stderr
    # The same population as NDJSON tells what the database must hold.
    assert run_cli("generate", "--patients", "30", "--seed", "4", "--out",
                   str(tmp_path / "same")).returncode == 0  # fmt: skip
    conditions = _ndjson(tmp_path / "same", "Condition")
    diabetics = [c for c in conditions if any(
        cd["code"] == PROBLEMS["t2d"].snomed for cd in c["code"]["coding"])]  # type: ignore[index]  # fmt: skip
    store = open_store(database)
    try:
        assert store.search("Patient", [], count=1).total == 30
        found = store.search("Condition", [("code", T2D)], count=100)
        assert found.total == len(diabetics)
        mrn = _ndjson(tmp_path / "same", "Patient")[3]["identifier"][0]["value"]  # type: ignore[index]
        by_mrn = store.search("Patient", [("identifier", f"{MRN_SYSTEM}|{mrn}")])
        assert by_mrn.total == 1
        hba1c = store.search("Observation", [("code", "http://loinc.org|4548-4"),
                                             ("value-quantity", "gt6.4")])  # fmt: skip
        assert hba1c.total is not None and hba1c.total > 0
    finally:
        store.close()
    again = run_cli("generate", "--patients", "30", "--seed", "4", "--database", database,
                    timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert " 0 created, 0 updated" in again.stderr and f"{created:,} unchanged" in again.stderr


def test_generate_refuses_out_and_database_together(tmp_path: Path) -> None:
    proc = run_cli("generate", "--out", str(tmp_path), "--database", "sqlite:///x.db")
    assert proc.returncode == 2 and "not both" in proc.stderr


def test_generate_says_when_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = run_cli("generate", "--patients", "1", "--out", str(tmp_path / "file" / "out"))
    assert_one_line_error(proc, "cannot write to", str(tmp_path / "file" / "out"))


def test_demo_builds_loads_and_creates_users_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ("demo", "--patients", "12", "--seed", "3", "--no-serve")
    first = run_cli(*args, CAREBASE_DATA_DIR=str(data), timeout=300)
    assert first.returncode == 0, first.stderr
    assert "Generated 12 demo patients" in first.stdout
    assert "LOCAL DEMO only" in first.stdout and "http://127.0.0.1:8080/fhir" in first.stdout
    marker = json.loads((data / "demo" / "population" / "population.json").read_text())
    assert marker["patients"] == 12 and marker["seed"] == 3
    passwords = json.loads((data / "demo" / "users.json").read_text())
    assert (data / "demo" / "users.json").stat().st_mode & 0o077 == 0
    assert set(passwords) == {"demo-admin", "demo-clinician", "demo-nurse", "demo-frontdesk",
                              "demo-patient", "demo-researcher"}  # fmt: skip
    for password in passwords.values():
        assert password in first.stdout

    second = run_cli(*args, CAREBASE_DATA_DIR=str(data), timeout=300)
    assert second.returncode == 0, second.stderr
    assert "Using the demo patients cached" in second.stdout
    assert "already loaded" in second.stdout  # a restart does not check every resource
    checked = run_cli(*args, "--reload", CAREBASE_DATA_DIR=str(data), timeout=300)
    assert checked.returncode == 0, checked.stderr
    assert " 0 created, 0 updated" in checked.stdout

    store = open_store(f"sqlite:///{data / 'carebase.db'}")
    try:
        users = UserDirectory(store)
        patient_user = users.authenticate("demo-patient", passwords["demo-patient"])
        assert patient_user.fhir_user and patient_user.fhir_user.startswith("Patient/")
        assert store.read(*patient_user.fhir_user.split("/")) is not None
        clinician = users.authenticate("demo-clinician", passwords["demo-clinician"])
        practitioner = store.read(*clinician.fhir_user.split("/"))  # type: ignore[union-attr]
        assert practitioner is not None and b"us-npi" in (practitioner.body or b"")
        assert store.search("Patient", [], count=1).total == 12
    finally:
        store.close()

    # Another size regenerates the cache (and loads the new patients).
    third = run_cli("demo", "--patients", "14", "--seed", "3", "--no-serve",
                    CAREBASE_DATA_DIR=str(data), timeout=300)  # fmt: skip
    assert third.returncode == 0, third.stderr
    assert "Generated 14 demo patients" in third.stdout
    assert "Demo data loaded" in third.stdout

    # Another database gets the population loaded although the cache says "loaded".
    other = run_cli("demo", "--patients", "14", "--seed", "3", "--no-serve", "--database",
                    f"sqlite:///{tmp_path / 'other.db'}", CAREBASE_DATA_DIR=str(data),
                    timeout=300)  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert "Demo data loaded" in other.stdout


def test_demo_serves_the_demo_data(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebase", "demo", "--patients", "5", "--port", str(port)],
            cwd=tmp_path,
            env=cli_env(CAREBASE_DATA_DIR=str(data)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, log, data)
    try:
        wait_until_serving(server, proc, 180, "demo")
        found = httpx.get(f"{server.base}/fhir/Patient", params={"_summary": "count"},
                          headers=server.auth, timeout=10)  # fmt: skip
        assert found.status_code == 200, found.text
        assert found.json()["total"] == 5
        assert "demo-clinician" in server.output()
    finally:
        server.shutdown()
