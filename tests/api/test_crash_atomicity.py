"""A server killed (SIGKILL) in the middle of a transaction Bundle leaves nothing behind.

Runs a real `carebase serve` process on each database, POSTs a 5,000-entry transaction and
kills the server while it is being processed; after a restart the database holds none of
the Bundle's resources and accepts writes again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from carebase.auth.keys import KeyRing
from carebase.auth.tokens import TokenService
from carebase.store.base import Store

ENTRIES = 5000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carebase",
            "serve",
            "--database",
            url,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CAREBASE_DATA_DIR": str(data_dir)},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


def _bundle() -> bytes:
    entries = [
        {
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000000",
            "resource": {"resourceType": "Patient", "name": [{"family": "Crash"}]},
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    for i in range(1, ENTRIES):
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"},
                    "valueQuantity": {
                        "value": i,
                        "unit": "/min",
                        "system": "http://unitsofmeasure.org",
                        "code": "/min",
                    },
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _auth(base: str, data_dir: Path) -> dict[str, str]:
    """A bearer token the server at `base` accepts (signed with its data directory's keys)."""
    tokens = TokenService(KeyRing.open(data_dir / "keys"), issuer=base, audience=f"{base}/fhir")
    token, _ = tokens.issue(
        subject="test", scopes=["system/*.cruds"], kind="service", role="service"
    )
    return {"Authorization": f"Bearer {token}"}


def _history_total(base: str, data_dir: Path) -> int:
    response = httpx.get(
        f"{base}/fhir/_history", params={"_count": "1"}, headers=_auth(base, data_dir), timeout=30
    )
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def _writing_started(store: Store, wal_start: int) -> bool:
    """Evidence that the transaction has begun writing rows (but cannot have committed)."""
    if store.dialect == "sqlite":
        wal = f"{store.path}-wal"  # type: ignore[attr-defined]
        return os.path.exists(wal) and os.path.getsize(wal) > wal_start
    with psycopg.connect(store.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
    return bool(row and row[0])


def test_sigkill_during_transaction_leaves_nothing(store: Store, tmp_path: Path) -> None:
    proc, base = _start(store.url, tmp_path)
    outcome: list[object] = []

    def post() -> None:
        try:
            outcome.append(
                httpx.post(
                    f"{base}/fhir",
                    content=_bundle(),
                    headers={"Content-Type": "application/fhir+json", **_auth(base, tmp_path)},
                    timeout=120,
                ).status_code
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    try:
        assert _history_total(base, tmp_path) == 0
        wal = f"{getattr(store, 'path', '')}-wal"
        wal_start = os.path.getsize(wal) if os.path.exists(wal) else 0
        client = threading.Thread(target=post)
        client.start()
        deadline = time.monotonic() + 30
        while not _writing_started(store, wal_start) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not outcome, "the request ended before the transaction started writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        client.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if outcome and outcome[0] == 200:
        pytest.fail("the transaction finished before the kill; make the Bundle larger")
    assert outcome and isinstance(outcome[0], httpx.HTTPError)

    proc, base = _start(store.url, tmp_path)
    try:
        assert _history_total(base, tmp_path) == 0
        created = httpx.post(
            f"{base}/fhir/Patient",
            content=b'{"resourceType":"Patient","name":[{"family":"After"}]}',
            headers={"Content-Type": "application/fhir+json", **_auth(base, tmp_path)},
            timeout=30,
        )
        assert created.status_code == 201
        assert _history_total(base, tmp_path) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
