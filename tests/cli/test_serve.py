"""`carebase serve` as a real server process: SQLite with one worker, PostgreSQL with two.

Servers listen on free ports and are always stopped in `finally`; their output goes to a
log file that failing assertions show.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from carebase.auth.keys import KeyRing
from carebase.auth.tokens import TokenService

FHIR_JSON = "application/fhir+json"
STOP_CODES = (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown


def cli_env(**extra: str) -> dict[str, str]:
    """The environment without any CAREBASE_* setting of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBASE_")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running `carebase serve` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    data_dir: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        """An Authorization header the server accepts (signed with its data directory's
        keys, as `carebase token` does)."""
        ring = KeyRing.open(self.data_dir / "keys")
        tokens = TokenService(ring, issuer=self.base, audience=f"{self.base}/fhir")
        token, _ = tokens.issue(
            subject="test", scopes=["system/*.cruds"], kind="service", role="service"
        )
        return {"Authorization": f"Bearer {token}"}

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def shutdown(self) -> None:
        """Terminate the server if it still runs (kill it after 20 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> int:
        """SIGTERM, then wait for the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def wait_until_serving(server: Server, proc: subprocess.Popen[bytes], seconds: float,
                       what: str) -> None:  # fmt: skip
    """Return once `proc` answers /healthz; fail with its output if it exits first or does
    not answer within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer /healthz in {seconds:g} s:\n{server.output()}")
        time.sleep(0.1)


@contextmanager
def serving(tmp_path: Path, *args: str, **env: str) -> Iterator[Server]:
    """Start `python -m carebase serve ARGS` and wait until /healthz answers."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebase", "serve", "--port", str(port), *args],
            cwd=tmp_path,
            env=cli_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    data_dir = Path(env.get("CAREBASE_DATA_DIR") or tmp_path / "carebase-data")
    server = Server(proc, port, log, data_dir)
    try:
        wait_until_serving(server, proc, 30, "server")
        yield server
    finally:
        server.shutdown()


PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter"]}]}


def _create_patient(client: httpx.Client) -> dict[str, object]:
    response = client.post("/fhir/Patient", json=PATIENT, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    assert response.headers["ETag"] == 'W/"1"'
    location = response.headers["Location"]
    assert location.endswith(f"/fhir/Patient/{created['id']}/_history/1")
    return created


def test_serve_sqlite_round_trip_and_clean_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with serving(tmp_path, CAREBASE_DATA_DIR=str(data_dir)) as server:
        with httpx.Client(base_url=server.base, timeout=10, headers=server.auth) as client:
            meta = client.get("/fhir/metadata")
            assert meta.status_code == 200
            assert meta.headers["content-type"].startswith(FHIR_JSON)
            statement = meta.json()
            assert statement["resourceType"] == "CapabilityStatement"
            assert statement["fhirVersion"] == "4.0.1"

            created = _create_patient(client)
            read = client.get(f"/fhir/Patient/{created['id']}")
            assert read.status_code == 200, read.text
            assert read.json() == created
            assert read.headers["ETag"] == 'W/"1"'
        assert (data_dir / "carebase.db").is_file()  # the default database location
        code = server.stop()
        assert code in STOP_CODES, server.output()
        assert "Application shutdown complete" in server.output()
        assert "Traceback" not in server.output()


def test_serve_requires_a_token_unless_dev_no_auth(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with serving(tmp_path, CAREBASE_DATA_DIR=str(data_dir)) as server:
        refused = httpx.get(f"{server.base}/fhir/Patient", timeout=10)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="carebase"'
        assert "WARNING" not in server.output()
    with serving(tmp_path, "--dev-no-auth", CAREBASE_DATA_DIR=str(data_dir)) as server:
        open_ = httpx.get(f"{server.base}/fhir/Patient", timeout=10)
        assert open_.status_code == 200, open_.text
        output = server.output()
        assert "authentication and access control are DISABLED" in output
        assert "AUTHENTICATION AND ACCESS CONTROL ARE DISABLED" in output  # each worker's start


def test_serve_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "carebase", "serve", "--workers", "2", "--port", str(free_port())],
        cwd=tmp_path,
        env=cli_env(CAREBASE_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert "--workers" in err and "PostgreSQL" in err, err
    assert "Traceback" not in proc.stderr


# --- two workers on PostgreSQL ----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Worker processes of the uvicorn supervisor (multiprocessing spawn children)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(entry))
    return sorted(out)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _server_side_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server's end of the TCP connection from `client_port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == server_port and remote_port == client_port:
                return int(fields[9])
    return None


def _read_fresh(
    server: Server, path: str, auth: dict[str, str]
) -> tuple[http.client.HTTPConnection, dict[str, object]]:
    """GET `path` on a new connection, left open so its server end can be attributed."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path, headers={"Accept": FHIR_JSON, **auth})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    return conn, json.loads(body)


def test_serve_two_workers_on_postgresql(tmp_path: Path, fresh_pg_url: str) -> None:
    with serving(tmp_path, "--workers", "2", "--database", fresh_pg_url) as server:
        workers = _children(server.proc.pid)
        assert len(workers) == 2, (workers, server.output())

        with httpx.Client(base_url=server.base, timeout=10, headers=server.auth) as client:
            created = _create_patient(client)
        path = f"/fhir/Patient/{created['id']}"

        auth = server.auth
        served_by: dict[int, int] = dict.fromkeys(workers, 0)
        open_conns: list[http.client.HTTPConnection] = []
        try:
            requests = 0
            deadline = time.monotonic() + 20
            # At least 50 reads, each on a fresh connection; go on (up to the deadline)
            # until both workers have served some.
            while requests < 50 or min(served_by.values()) == 0:
                assert time.monotonic() < deadline, (served_by, server.output())
                if requests == 25:  # update half way: later reads must see version 2
                    with httpx.Client(
                        base_url=server.base, timeout=10, headers=server.auth
                    ) as client:
                        body = {**PATIENT, "id": created["id"], "gender": "male"}
                        put = client.put(path, json=body, headers={"Content-Type": FHIR_JSON})
                        assert put.status_code == 200, put.text
                conn, resource = _read_fresh(server, path, auth)
                open_conns.append(conn)
                requests += 1
                assert resource["id"] == created["id"]
                version = resource["meta"]["versionId"]  # type: ignore[index]
                assert version == ("1" if requests <= 25 else "2"), (requests, resource)
                assert conn.sock is not None
                inode = _server_side_inode(server.port, conn.sock.getsockname()[1])
                owners = [pid for pid in workers if inode in _socket_inodes(pid)]
                assert len(owners) == 1, (inode, owners)
                served_by[owners[0]] += 1
                if len(open_conns) >= 20:  # keep few sockets open at once
                    open_conns.pop(0).close()
        finally:
            for conn in open_conns:
                conn.close()
        print(f"\nrequests per worker: {served_by}")
        assert all(count > 0 for count in served_by.values()), served_by

        code = server.stop()
        assert code in STOP_CODES, server.output()
        assert not [pid for pid in workers if _alive(pid)], server.output()
        assert "Traceback" not in server.output()
