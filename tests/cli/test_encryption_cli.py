"""`carebase encryption keygen|status|rotate|retire` as subprocesses, on both databases:
rotation reseals every body and history row (plaintext ones too), resumes, and the old key
can then be retired."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from test_migrate import run_cli
from test_serve import serving

from carebase.config import Settings
from carebase.store.body_cipher import key_id, new_key, read_ring_file, write_ring_file
from carebase.store.body_encryption import PLAINTEXT, key_usage
from carebase.store.factory import open_store
from carebase.store.sql_store import SqlStore


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'carebase.db'}"
    return str(request.getfixturevalue("fresh_pg_url"))


def _write_patients(url: str, settings: Settings, family: str, count: int) -> list[str]:
    """Create `count` patients and update each once (so history rows hold bodies)."""
    store = open_store(url, settings)
    try:
        store.migrate()
        ids = []
        with store.transaction() as tx:
            for i in range(count):
                made = tx.create(
                    "Patient", {"resourceType": "Patient", "name": [{"family": f"{family}{i}"}]}
                )
                ids.append(made.id)
        with store.transaction() as tx:
            for id_ in ids:
                tx.update(
                    "Patient", id_, {"resourceType": "Patient", "name": [{"family": f"{family}!"}]}
                )
        return ids
    finally:
        store.close()


def _usage(url: str, ring: Path) -> dict[str, dict[str, int]]:
    store = open_store(url, Settings(encryption_key_file=str(ring)))
    try:
        return {table: dict(counts) for table, counts in key_usage(store).items()}
    finally:
        store.close()


def _read_all(url: str, ring: Path, ids: list[str]) -> list[str]:
    """Every version of every patient read back (families), through the store's read paths."""
    store = open_store(url, Settings(encryption_key_file=str(ring)))
    assert isinstance(store, SqlStore)
    try:
        out = []
        for id_ in ids:
            for version in (1, 2):
                stored = store.vread("Patient", id_, version)
                assert stored is not None and stored.body is not None
                out.append(stored.body.decode())
            history = store.history("Patient", id_)
            assert len(history.entries) == 2
        return out
    finally:
        store.close()


def test_keygen_rotate_status_retire(url: str, tmp_path: Path) -> None:
    ring = tmp_path / "secrets" / "ring"
    made = run_cli("encryption", "keygen", "--out", str(ring))
    assert made.returncode == 0, made.stderr
    assert ring.stat().st_mode & 0o777 == 0o600
    first = key_id(read_ring_file(ring)[0])
    assert first in made.stdout
    again = run_cli("encryption", "keygen", "--out", str(ring))
    assert again.returncode == 2 and "never overwritten" in again.stderr

    plain_ids = _write_patients(url, Settings(), "Plain", 4)  # before encryption was on
    sealed_ids = _write_patients(url, Settings(encryption_key_file=str(ring)), "Sealed", 3)
    before = _usage(url, ring)
    assert before["resource"] == {PLAINTEXT: 4, first: 3}
    assert before["resource_version"] == {PLAINTEXT: 4, first: 3}
    expected = _read_all(url, ring, plain_ids + sealed_ids)

    env = {"CAREBASE_ENCRYPTION_KEY_FILE": str(ring), "CAREBASE_DATABASE_URL": url}
    status = run_cli("encryption", "status", **env)
    assert status.returncode == 0, status.stderr
    assert first in status.stdout and PLAINTEXT in status.stdout

    rotated = run_cli("encryption", "rotate", "--batch-size", "3", **env)
    assert rotated.returncode == 0, rotated.stderr
    keys = read_ring_file(ring)
    assert len(keys) == 2 and key_id(keys[0]) == first
    second = key_id(keys[1])
    assert f"Resealed 14 bodies with key {second}" in rotated.stdout
    assert _usage(url, ring) == {"resource": {second: 7}, "resource_version": {second: 7}}
    assert _read_all(url, ring, plain_ids + sealed_ids) == expected

    noop = run_cli("encryption", "rotate", "--resume", **env)
    assert noop.returncode == 0 and "Resealed 0 bodies" in noop.stdout

    active = run_cli("encryption", "retire", second, **env)
    assert active.returncode == 2 and "active key" in active.stderr
    retired = run_cli("encryption", "retire", first, **env)
    assert retired.returncode == 0, retired.stderr
    assert [key_id(k) for k in read_ring_file(ring)] == [second]
    assert _read_all(url, ring, plain_ids + sealed_ids) == expected  # old key no longer needed


def test_resume_finishes_an_interrupted_rotation(url: str, tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    old = new_key()
    write_ring_file(ring, [old])
    ids = _write_patients(url, Settings(encryption_key_file=str(ring)), "Half", 5)
    expected = _read_all(url, ring, ids)
    # Interrupted rotation: the new key is in the ring, some rows resealed, others not.
    new = new_key()
    write_ring_file(ring, [old, new])
    store = open_store(url, Settings(encryption_key_file=str(ring)))
    try:
        from carebase.store.body_encryption import reseal_batch

        assert reseal_batch(store, "resource", 0, 2) is not None
    finally:
        store.close()
    half = _usage(url, ring)
    assert half["resource"] == {key_id(old): 3, key_id(new): 2}

    env = {"CAREBASE_ENCRYPTION_KEY_FILE": str(ring), "CAREBASE_DATABASE_URL": url}
    stuck = run_cli("encryption", "retire", key_id(old), **env)
    assert stuck.returncode == 2 and "still sealed with key" in stuck.stderr
    resumed = run_cli("encryption", "rotate", "--resume", **env)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resealed 8 bodies" in resumed.stdout
    assert _usage(url, ring) == {"resource": {key_id(new): 5}, "resource_version": {key_id(new): 5}}
    assert _read_all(url, ring, ids) == expected


def test_clear_errors(url: str, tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    write_ring_file(ring, [new_key()])
    _write_patients(url, Settings(encryption_key_file=str(ring)), "X", 1)
    no_file = run_cli("encryption", "rotate", CAREBASE_DATABASE_URL=url)
    assert no_file.returncode == 2 and "CAREBASE_ENCRYPTION_KEY_FILE" in no_file.stderr
    other = tmp_path / "other"
    write_ring_file(other, [new_key()])
    env = {"CAREBASE_ENCRYPTION_KEY_FILE": str(other), "CAREBASE_DATABASE_URL": url}
    status = run_cli("encryption", "status", **env)
    assert status.returncode == 1 and "not in the ring" in status.stderr
    wrong = run_cli("encryption", "rotate", "--resume", **env)
    assert wrong.returncode == 1 and "not in the key ring" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    ring.chmod(0o644)
    loose = run_cli(
        "encryption", "status", CAREBASE_ENCRYPTION_KEY_FILE=str(ring), CAREBASE_DATABASE_URL=url
    )
    assert loose.returncode == 1 and "chmod 600" in loose.stderr


def test_serve_seals_with_the_configured_key(tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    write_ring_file(ring, [new_key()])
    db = tmp_path / "served.db"
    env = {"CAREBASE_DATABASE_URL": f"sqlite:///{db}", "CAREBASE_ENCRYPTION_KEY_FILE": str(ring)}
    with serving(tmp_path, **env) as server:
        made = httpx.post(
            f"{server.base}/fhir/Patient",
            json={"resourceType": "Patient", "name": [{"family": "Served"}]},
            headers={"Content-Type": "application/fhir+json", **server.auth},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        read = httpx.get(
            f"{server.base}/fhir/Patient/{made.json()['id']}", headers=server.auth, timeout=10
        )
        assert read.json() == made.json()
    body = sqlite3.connect(db).execute("SELECT body FROM resource").fetchone()[0]
    assert bytes(body).startswith(b"\x00CB1") and b"Served" not in bytes(body)
