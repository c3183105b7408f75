"""Start and stop a carebase server process for benchmarks, and watch its memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "CAREBASE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_postgres_database(name: str = "carebase_bench") -> str:
    """Drop and create database `name`; returns its URL."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Server:
    """`carebase serve` in a subprocess (pinned to `cpus` when given), with peak-RSS sampling.

    The server keeps its signing keys in a data directory of its own; `token` is a service
    token (`system/*.cruds`) for it and `auth` the header that carries it.
    """

    def __init__(self, database: str, *, cpus: str | None = None, workers: int = 1) -> None:
        from carebase.auth.tokens import TokenService
        from carebase.config import Settings

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._data = tempfile.TemporaryDirectory(prefix="carebase-bench-data-")
        settings = Settings(data_dir=Path(self._data.name), port=self.port)
        tokens = TokenService.from_settings(settings, ttl=24 * 3600)
        self.token, _ = tokens.issue(
            subject="bench", scopes=["system/*.cruds"], kind="service", role="service"
        )
        self.auth = {"Authorization": f"Bearer {self.token}"}
        cmd = [
            sys.executable,
            "-m",
            "carebase",
            "serve",
            "--database",
            database,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        env = dict(os.environ, CAREBASE_DATA_DIR=self._data.name, CAREBASE_AUTH_RATE_LIMIT="off")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env)
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._wait_ready()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited during start")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start within 60 s")

    def _rss_kb(self) -> int:
        """RSS of the server and its children (workers), in kB."""
        total = 0
        pids = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            pids += [int(p) for p in children.split()]
        except OSError:
            pass
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_kb = max(self.peak_rss_kb, self._rss_kb())
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        self._stop.set()
        terminate(self.proc, timeout=20)
        self._data.cleanup()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
