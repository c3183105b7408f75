"""What authentication, access control and audit cost on the read hot path (in process).

Usage: python bench/bench_access.py [--reads N] [--rounds R]

Drives the ASGI app directly (no sockets, no HTTP parsing: those costs are the same with and
without security, so leaving them out makes the ratio a pessimistic bound) with GET
/fhir/Patient/{id} on SQLite, in three configurations:
  plain      the same routes and hardening middleware with an unrestricted guard, no token
             check and no audit entry
  admin      the full app: bearer token (system/*.cruds) verified, access checked, audited
  patient    the full app with a patient-context token (one extra visibility query)
and prints reads per second and the ratio to `plain`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from carebase.api.access import Guard
from carebase.api.app import create_app
from carebase.api.audited import GUARD_KEY
from carebase.api.hardening import hardening_middleware
from carebase.api.responses import guarded
from carebase.api.route_table import ROUTES
from carebase.api.routes import by_method
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.config import Settings
from carebase.store.factory import open_store


async def _drive(app: Any, path: str, headers: list[tuple[bytes, bytes]], n: int) -> float:
    """Seconds for `n` GETs of `path` straight through the ASGI interface."""
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope_base = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }  # fmt: skip
    start = time.perf_counter()
    for _ in range(n):
        await app(dict(scope_base), receive, send)
    elapsed = time.perf_counter() - start
    assert set(status) == {200}, set(status)
    return elapsed


def _plain_app(app: Starlette) -> Starlette:
    """The same route table and handlers with no authentication middleware and no audit
    wrapper (every request gets an unrestricted guard): the unsecured baseline."""
    api = app.state.fhir
    unrestricted = Guard.unrestricted()

    def open_(handler: Any) -> Any:
        async def run(request: Any) -> Any:
            request.scope[GUARD_KEY] = unrestricted
            return await handler(request)

        return run

    by_path: dict[str, dict[str, Any]] = {}
    for spec in ROUTES:
        for method in spec.methods:
            by_path.setdefault(spec.path, {})[method] = open_(guarded(getattr(api, spec.handler)))
    routes = [
        Route("/fhir" + path, by_method(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]
    # the hardening middleware (headers, limits) is no part of what is measured: keep it
    return Starlette(routes=routes, middleware=hardening_middleware(api.settings))


async def main(reads: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), base_url="http://testserver/fhir")
        store = open_store(f"sqlite:///{tmp}/bench.db")
        store.migrate()
        with store.transaction() as tx:
            tx.update("Patient", "p1", {"resourceType": "Patient", "id": "p1"})
        trail = MemoryAuditTrail()
        app = create_app(settings, store, audit=trail)
        tokens = app.state.tokens
        admin, _ = tokens.issue(
            subject="a", scopes=["system/*.cruds"], kind="service", role="service"
        )
        patient, _ = tokens.issue(
            subject="p", scopes=["patient/*.rs"], role="patient", patient="p1"
        )
        configs = {
            "plain": (_plain_app(app), []),
            "admin": (app, [(b"authorization", f"Bearer {admin}".encode())]),
            "patient": (app, [(b"authorization", f"Bearer {patient}".encode())]),
        }
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, (target, headers) in configs.items():
                await _drive(target, "/fhir/Patient/p1", headers, reads // 10)  # warm
                seconds = await _drive(target, "/fhir/Patient/p1", headers, reads)
                best[name] = max(best.get(name, 0.0), reads / seconds)
                trail.entries.clear()
        store.close()
    for name, rate in best.items():
        print(f"{name:8s} {rate:10,.0f} reads/s   {rate / best['plain']:.2f}x plain")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.reads, args.rounds))
