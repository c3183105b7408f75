"""`carebase migrate` as a real subprocess on real SQLite files and PostgreSQL schemas.

Also covers what every command shares: `--help`, the database URL settings
(`--database`, `CAREBASE_DATABASE_URL`, `CAREBASE_DATA_DIR`) and one-line errors.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from carebase.store.schema import LATEST


def cli_env(**extra: str) -> dict[str, str]:
    """The environment without any CAREBASE_* setting of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBASE_")}
    env.update(extra)
    return env


def run_cli(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 60,
    input: str | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m carebase ARGS` (with `input` on stdin) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "carebase", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1, and stderr is a single `error: ...` line naming `words`, no traceback."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert err.startswith("error:") and "\n" not in err, err
    for word in words:
        assert word in err, err


def _migrates_then_up_to_date(url: str, **env: str) -> None:
    args = ("migrate", "--database", url) if url else ("migrate",)
    first = run_cli(*args, **env)
    assert first.returncode == 0, first.stderr
    assert f"schema is at version {LATEST}" in first.stdout
    second = run_cli(*args, **env)
    assert second.returncode == 0, second.stderr
    assert f"Schema is up to date (version {LATEST})" in second.stdout


def test_help_lists_the_commands() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("serve", "migrate"):
        assert re.search(rf"\b{command}\b", proc.stdout), proc.stdout


def test_migrate_sqlite_creates_schema_then_is_up_to_date(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "dir" / "carebase.db"
    _migrates_then_up_to_date(f"sqlite:///{db}")
    assert db.is_file()


def test_migrate_postgresql_creates_schema_then_is_up_to_date(fresh_pg_url: str) -> None:
    _migrates_then_up_to_date(fresh_pg_url)
    with psycopg.connect(fresh_pg_url) as conn:
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        assert row is not None and row[0] == LATEST
        conn.execute("SELECT count(*) FROM resource").fetchone()


def test_database_url_from_environment(tmp_path: Path) -> None:
    db = tmp_path / "from-env.db"
    _migrates_then_up_to_date("", CAREBASE_DATABASE_URL=f"sqlite:///{db}")
    assert db.is_file()


def test_database_option_wins_over_environment(tmp_path: Path) -> None:
    flag, env = tmp_path / "flag.db", tmp_path / "env.db"
    proc = run_cli(
        "migrate", "--database", f"sqlite:///{flag}", CAREBASE_DATABASE_URL=f"sqlite:///{env}"
    )
    assert proc.returncode == 0, proc.stderr
    assert flag.is_file() and not env.exists()


def test_default_database_is_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _migrates_then_up_to_date("", CAREBASE_DATA_DIR=str(data_dir))
    assert (data_dir / "carebase.db").is_file()


def test_data_dir_defaults_to_carebase_data_in_the_working_directory(tmp_path: Path) -> None:
    proc = run_cli("migrate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "carebase-data" / "carebase.db").is_file()


def test_unsupported_url_is_one_clear_line() -> None:
    proc = run_cli("migrate", "--database", "mysql://x")
    assert_one_line_error(proc, "mysql", "sqlite:///PATH", "postgresql://")


def test_unopenable_sqlite_path_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = run_cli("migrate", "--database", f"sqlite:///{blocker}/sub/carebase.db")
    assert_one_line_error(proc, "cannot open the database")


def test_unreachable_postgresql_fails_fast_with_one_clear_line() -> None:
    start = time.monotonic()
    proc = run_cli("migrate", "--database", "postgresql://postgres@127.0.0.1:1/x", timeout=60)
    elapsed = time.monotonic() - start
    assert_one_line_error(proc, "Cannot connect to PostgreSQL", "127.0.0.1", "refused")
    assert elapsed < 15, f"took {elapsed:.1f}s to give up"
