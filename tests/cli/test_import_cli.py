"""`carebase import` as a real subprocess: exit codes, summary, report, idempotent re-run."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from test_migrate import cli_env, run_cli


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'carebase.db'}"
    return str(request.getfixturevalue("fresh_pg_url"))


def _inputs(tmp_path: Path, bad: bool) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [{"resourceType": "Patient", "id": f"p{i}", "gender": "other"} for i in range(3)]
    text = "\n".join(orjson.dumps(line).decode() for line in lines)
    if bad:
        text += '\n{"resourceType": "Patient", "id": "x", "gender": 42}\n{oops'
    (folder / "patients.ndjson").write_text(text + "\n")
    return folder


def test_imports_and_a_second_run_creates_nothing(url: str, tmp_path: Path) -> None:
    folder = _inputs(tmp_path, bad=False)
    report = tmp_path / "report.json"
    first = run_cli("import", str(folder), "--database", url, "--report", str(report))
    assert first.returncode == 0, first.stderr
    assert "3 created" in first.stdout and "Patient" in first.stdout
    outcome = orjson.loads(report.read_bytes())
    assert outcome["issue"][0]["severity"] == "information"
    again = run_cli("import", str(folder), "--database", url, "--report", str(report))
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 updated, 3 unchanged, 0 rejected" in again.stdout


def test_rejected_records_exit_1_and_are_in_the_report(url: str, tmp_path: Path) -> None:
    folder = _inputs(tmp_path, bad=True)
    report = tmp_path / "out" / "report.json"
    proc = run_cli(
        "import", str(folder), "--database", url, "--report", str(report), "--workers", "0"
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "3 created" in proc.stdout and "2 rejected" in proc.stdout
    assert "2 records were rejected" in proc.stdout
    issues = orjson.loads(report.read_bytes())["issue"]
    assert [i["diagnostics"].split(": ")[1] for i in issues] == ["line 4", "line 5"]
    assert "Patient.gender" in issues[0]["expression"]


def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path) -> None:
    missing = run_cli("import", str(tmp_path / "absent.ndjson"))
    assert missing.returncode == 2
    assert "no such file or directory" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "data.csv").write_text("a,b\n")
    wrong = run_cli("import", str(tmp_path / "data.csv"))
    assert wrong.returncode == 2 and "not a file we import" in wrong.stderr
    none = run_cli("import")
    assert none.returncode == 2 and "Traceback" not in none.stderr


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGKILL])
def test_a_killed_import_resumes_to_the_state_of_an_uninterrupted_one(
    tmp_path: Path, signal_number: int
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(20):
        lines = [
            {"resourceType": "Patient", "id": f"p{n}-{i}", "gender": "other"} for i in range(40)
        ]
        (folder / f"{n:02}.ndjson").write_text("\n".join(orjson.dumps(x).decode() for x in lines))
    url = f"sqlite:///{tmp_path / 'carebase.db'}"
    report = tmp_path / "report.json"
    args = ["import", str(folder), "--database", url, "--report", str(report)]
    args += ["--batch-size", "1", "--workers", "0"]  # a commit per record: slow on purpose
    proc = subprocess.Popen(
        [sys.executable, "-m", "carebase", *args],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = tmp_path / "report.json.progress"
    while proc.poll() is None and len(_lines(progress)) < 3:  # header + two files committed
        time.sleep(0.05)
    assert proc.poll() is None, "the import finished before it could be interrupted"
    proc.send_signal(signal_number)
    out, _err = proc.communicate(timeout=60)
    if signal_number == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again to resume" in out
    assert progress.exists()
    resumed = run_cli(*args[:-4], "--workers", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "Skipped" in resumed.stdout
        and "documents an interrupted run had committed" in resumed.stdout
    )
    assert not progress.exists()
    with sqlite3.connect(tmp_path / "carebase.db") as db:
        rows = db.execute("SELECT COUNT(*), MAX(version) FROM resource").fetchone()
        versions = db.execute("SELECT COUNT(*) FROM resource_version").fetchone()[0]
    assert rows == (800, 1) and versions == 800  # every resource once, nothing written twice


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().split("\n") if line]
    except FileNotFoundError:
        return []
