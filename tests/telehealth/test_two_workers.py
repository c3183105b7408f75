"""Two server processes (uvicorn on two ports) over one PostgreSQL database: the clinician is
connected to one worker and the patient to the other, and the waiting room, admission,
offer/answer/ICE (including an SDP over NOTIFY's 8,000-byte limit), chat and a reconnect
to the other worker all flow between them, over LISTEN/NOTIFY and over Redis pub/sub."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from telehealth_helpers import Peer, book_visit, state_of

from carebase.api.app import worker_command
from carebase.auth.tokens import TokenService
from carebase.config import Settings
from carebase.store.base import Store

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_url(tmp: Path) -> Iterator[str]:
    """A Redis server: the one on 127.0.0.1:6379 if it answers, else a throwaway
    `redis-server`; skipped (saying why) when neither exists."""
    try:
        import redis
    except ImportError:
        pytest.skip("the redis package is not installed (pip install redis)")
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1).ping()
        yield "redis://127.0.0.1:6379/0"
        return
    except redis.RedisError:
        pass
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no Redis server on 127.0.0.1:6379 and no redis-server binary to start one")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


class Worker:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        cmd = worker_command(port)
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker on {self.port} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"worker on {self.port} did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(params=["postgres", "redis"])
def workers(
    request: pytest.FixtureRequest, store: Store, settings: Settings, tmp_path: Path
) -> Iterator[Any]:
    if store.dialect != "postgresql":
        pytest.skip("several workers need PostgreSQL (SQLite serves one process)")
    env = dict(os.environ)
    if request.param == "redis":
        redis_gen = _redis_url(tmp_path)
        env["CAREBASE_TELEHEALTH_REDIS_URL"] = next(redis_gen)
    base = "http://127.0.0.1:1/fhir"  # one issuer and audience for both workers
    env.update(
        {
            "PYTHONPATH": str(ROOT / "src"),
            "CAREBASE_DATABASE_URL": store.url,
            "CAREBASE_DATA_DIR": str(settings.data_dir),
            "CAREBASE_BASE_URL": base,
            "CAREBASE_AUDIT_WRITER": "thread",
            "CAREBASE_TELEHEALTH_BUS": request.param,
            "CAREBASE_TELEHEALTH_REMINDER_MINUTES": "0",
        }
    )
    appointment = book_visit(store)
    ports = [_free_port(), _free_port()]
    started = [Worker(env, port, tmp_path / f"worker{port}.log") for port in ports]
    try:
        for worker in started:
            worker.wait_ready()
        tokens = TokenService.from_settings(settings.with_(base_url=base))
        yield appointment, ports, tokens
    finally:
        for worker in started:
            worker.stop()
        if request.param == "redis":
            redis_gen.close()


def _grant(port: int, room: str, bearer: str) -> dict[str, Any]:
    r = httpx.post(
        f"http://127.0.0.1:{port}/telehealth/api/appointments/{room}/join",
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert r.status_code == 200, r.text
    grant: dict[str, Any] = r.json()
    return grant


@pytest.mark.asyncio
async def test_participants_on_different_workers(workers: Any) -> None:
    appointment, (port_a, port_b), tokens = workers
    room = appointment["id"]
    doc_bearer = tokens.issue(
        subject="u-doc",
        scopes=["user/*.cruds"],
        role="clinician",
        fhir_user="Practitioner/doc",
        username="Dr Who",
    )[0]
    pat_bearer = tokens.issue(
        subject="u-pat1", scopes=["patient/*.rs"], role="patient", patient="pat1", username="Pat"
    )[0]
    doc_grant = _grant(port_a, room, doc_bearer)
    pat_grant = _grant(port_b, room, pat_bearer)  # a token from either worker works on both
    doc = await Peer.open(f"ws://127.0.0.1:{port_a}/telehealth/ws/{room}", doc_grant["token"])
    await doc.expect("joined")
    pat = await Peer.open(f"ws://127.0.0.1:{port_b}/telehealth/ws/{room}", pat_grant["token"])
    assert (await pat.expect("joined"))["state"] == "waiting"
    pid, did = pat_grant["participant"], doc_grant["participant"]
    await doc.room_where(lambda r: state_of(r, pid) == "waiting")  # worker B -> worker A
    await doc.send({"type": "admit", "participant": pid})
    await pat.room_where(lambda r: state_of(r, pid) == "admitted")  # worker A -> worker B
    big_sdp = "v=0\r\n" + "a=candidate:" + "x" * 20_000
    await doc.send({"type": "offer", "to": pid, "sdp": big_sdp})
    assert (await pat.expect("offer"))["sdp"] == big_sdp  # through telehealth_signal
    await pat.send({"type": "answer", "to": did, "sdp": "v=0 answer"})
    assert (await doc.expect("answer"))["sdp"] == "v=0 answer"
    await pat.send({"type": "ice", "to": did, "candidate": {"candidate": "c", "sdpMid": "0"}})
    assert (await doc.expect("ice"))["from"] == pid
    await doc.send({"type": "chat", "text": "can you hear me?"})
    assert (await pat.expect("chat"))["text"] == "can you hear me?"
    # the patient's network drops; it reconnects to the other worker, same participant
    pat.ws.transport.abort()
    again = await Peer.open(
        f"ws://127.0.0.1:{port_a}/telehealth/ws/{room}", _grant(port_a, room, pat_bearer)["token"]
    )
    joined = await again.expect("joined")
    assert joined["participant"] == pid and joined["state"] == "admitted"
    await doc.send({"type": "offer", "to": pid, "sdp": "v=0 ice restart"})
    assert (await again.expect("offer"))["sdp"] == "v=0 ice restart"
    await doc.close()
    await again.close()
