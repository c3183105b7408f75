"""`carebase reindex` (and `carebase migrate`'s hint) as real subprocesses, on both databases.

The upgrade path: a database at schema version 1 that holds resources is migrated (the new
full-text table is empty, and `migrate` says to reindex), then `reindex` fills it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
import pytest
from test_migrate import assert_one_line_error, run_cli

from carebase.store.factory import open_store
from carebase.store.schema import INDEX_TABLES, MIGRATIONS, TEXT_TABLE
from carebase.store.search_text import text_condition
from carebase.store.sql_store import SqlStore

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00.000Z"},
    "text": {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ünique</div>',
    },
    "name": [{"family": "Zebedee"}],
    "gender": "other",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'carebase.db'}"
    return str(request.getfixturevalue("fresh_pg_url"))


@contextmanager
def connect(url: str) -> Iterator[Any]:
    """A plain DB-API connection (autocommit) to the test database."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            yield pg


def _version_1_with_a_resource(url: str) -> None:
    """What an older carebase left: schema version 1 and a resource with its index rows."""
    first = MIGRATIONS[0]
    with connect(url) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
            " description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        for statement in first.sqlite if url.startswith("sqlite") else first.postgresql:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (1, 'initial', CURRENT_TIMESTAMP)")
        mark = "?" if url.startswith("sqlite") else "%s"
        conn.execute(
            "INSERT INTO resource (type, id, version, last_updated, deleted, body)"
            f" VALUES ('Patient', 'p1', 1, 1704067200000, 0, {mark})",
            (orjson.dumps(PATIENT),),
        )


def _count(url: str, table: str) -> int:
    with connect(url) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _finds(url: str, code: str, value: str) -> list[str]:
    store = cast(SqlStore, open_store(url))
    try:
        sql, args = text_condition(store.dialect, code, [value], code)
        with store._reading() as cur:
            rows = cur.execute(store.q(f"SELECT id FROM resource WHERE {sql}"), args).fetchall()
        return [r[0] for r in rows]
    finally:
        store.close()


def test_upgrade_then_reindex_fills_the_new_index(url: str) -> None:
    _version_1_with_a_resource(url)
    migrated = run_cli("migrate", "--database", url)
    assert migrated.returncode == 0, migrated.stderr
    later = [m.number for m in MIGRATIONS if m.number > 1]  # every migration after the first
    assert f"Applied migrations {later}" in migrated.stdout
    assert "carebase reindex" in migrated.stdout  # the hint
    assert _count(url, TEXT_TABLE) == 0 and _count(url, "idx_string") == 0
    assert _finds(url, "_text", "unique") == []

    done = run_cli("reindex", "--database", url)
    assert done.returncode == 0, done.stderr
    assert "Reindexed 1 resources" in done.stdout
    assert _finds(url, "_text", "unique") == ["p1"]
    assert _finds(url, "_content", "zebedee") == ["p1"]
    assert _count(url, "idx_string") > 0 and _count(url, "idx_token") > 0

    again = run_cli("migrate", "--database", url)
    assert "up to date" in again.stdout and "reindex" not in again.stdout


def test_migrate_of_an_empty_database_gives_no_hint(url: str) -> None:
    proc = run_cli("migrate", "--database", url)
    assert proc.returncode == 0, proc.stderr
    assert "reindex" not in proc.stdout


def test_reindex_resumes_an_interrupted_run(url: str) -> None:
    store = open_store(url)
    store.migrate()
    with store.transaction() as tx:
        for i in range(5):
            patient = {"resourceType": "Patient", "name": [{"family": f"N{i}"}]}
            tx.update("Patient", f"p{i}", patient)
    with store.transaction() as tx:
        tx.set_reindex_progress(3)  # type: ignore[attr-defined]  # as if rows 1-3 were done
    store.close()
    with connect(url) as conn:
        for table in (*INDEX_TABLES, TEXT_TABLE):
            conn.execute(f"DELETE FROM {table}")
    proc = run_cli("reindex", "--database", url, "--batch-size", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Resuming an unfinished reindex after resource row 3" in proc.stdout
    assert "Reindexed 2 resources" in proc.stdout
    assert _count(url, TEXT_TABLE) == 2
    proc = run_cli("reindex", "--database", url)  # finished: the next run starts over
    assert "Resuming" not in proc.stdout and "Reindexed 5 resources" in proc.stdout
    assert _count(url, TEXT_TABLE) == 5


def test_reindex_errors_are_one_line(tmp_path: Path) -> None:
    proc = run_cli("reindex", "--database", "postgresql://nobody@127.0.0.1:1/none")
    assert_one_line_error(proc, "PostgreSQL")
    proc = run_cli("reindex", "--database", "mysql://x")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
