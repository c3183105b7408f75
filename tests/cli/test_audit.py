"""`carebase audit verify|tail` as real subprocesses, on SQLite files and PostgreSQL schemas;
tampering is done with raw SQL after dropping the append-only triggers, as a superuser could."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from test_migrate import run_cli

from carebase.auth.audit_entry import AuditEntry
from carebase.auth.audit_log import DatabaseAuditTrail
from carebase.auth.principal import Principal
from carebase.store import audit_records
from carebase.store.audit_records import AuditRecord
from carebase.store.factory import open_store
from carebase.store.sql_store import SqlStore
from carebase.store.sqlite import sqlite_path

CLINICIAN = Principal(subject="c", username="dr.grey", fhir_user="Practitioner/7")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database whose audit log holds 30 reads and a shutdown marker."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'carebase.db'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    store = open_store(url)
    assert isinstance(store, SqlStore)
    store.migrate()
    trail = DatabaseAuditTrail(store)
    for n in range(30):
        trail.record(
            AuditEntry("read", "R", principal=CLINICIAN, patients=(f"p{n}",), break_glass=None)
        )
        if n % 4 == 3:
            trail.flush()  # several blocks (group commits) of at most four entries
    trail.record(
        AuditEntry("read", "R", principal=CLINICIAN.with_break_glass("ED"), patients=("px",))
    )
    trail.close()
    store.close()
    yield url


def tamper(url: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run raw SQL (`?` parameters) on the database with the append-only triggers dropped."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(url))
        for trigger in ("audit_block_no_update", "audit_block_no_delete"):
            conn.execute(f"DROP TRIGGER {trigger}")
        for sql, args in statements:
            conn.execute(sql, args)
        conn.commit()
        conn.close()
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER audit_block_append_only ON audit_block")
            for sql, args in statements:
                conn.execute(sql.replace("?", "%s"), args)  # type: ignore[arg-type]


def block_of(url: str, seq: int) -> tuple[int, int, list[AuditRecord]]:
    """(first seq, last seq, entries) of the block holding entry `seq`."""
    store = open_store(url)
    assert isinstance(store, SqlStore)
    try:
        records = [r for r in audit_records.iter_records(store) if r.block is not None]
    finally:
        store.close()
    (first,) = {r.block for r in records if r.seq == seq}
    entries = [r for r in records if r.block == first]
    return first, entries[-1].seq, entries


def test_verify_intact_then_an_edit_is_named(db_url: str) -> None:
    ok = run_cli("audit", "verify", "--database", db_url)
    assert ok.returncode == 0, ok.stderr
    assert "intact, 32 entries" in ok.stdout
    first, _, entries = block_of(db_url, 10)
    edited = next(r for r in entries if r.seq == 10)
    assert edited.agent == "Practitioner/7"
    edited.agent = "Practitioner/1"  # its hash and every other entry as they were
    packed = audit_records._pack([replace(r, packed=None) for r in entries])
    tamper(db_url, ("UPDATE audit_block SET entries = ? WHERE first_seq = ?", (packed, first)))
    bad = run_cli("audit", "verify", "--database", db_url)
    assert bad.returncode == 1
    assert "seq 10" in bad.stderr and edited.id in bad.stderr
    assert "edited" in bad.stderr


def test_verify_names_the_entry_after_a_deletion(db_url: str) -> None:
    first, last, _ = block_of(db_url, 17)
    tamper(db_url, ("DELETE FROM audit_block WHERE first_seq = ?", (first,)))
    bad = run_cli("audit", "verify", "--database", db_url)
    assert bad.returncode == 1
    assert f"seq {last + 1}" in bad.stderr and "missing" in bad.stderr
    assert f"{first - 1} entries before it are intact" in bad.stderr


def test_tail_prints_one_line_per_entry(db_url: str) -> None:
    out = run_cli("audit", "tail", "-n", "3", "--database", db_url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3
    assert "p29" in lines[0]
    assert "BREAK-GLASS" in lines[1] and "agent=Practitioner/7" in lines[1]
    assert "shutdown" in lines[2]


def test_a_database_without_an_audit_log_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    out = run_cli("audit", "verify", "--database", url)
    assert out.returncode == 1
    assert "no audit log" in out.stderr and "carebase migrate" in out.stderr
