"""Reference endpoints for the HTTP benchmark: the floor carebase is measured against.

Run by `bench/http_bench.py` under uvicorn, configured by environment variables:
- `BENCH_BODY`: file whose bytes `GET /bare/Patient/x` returns unchanged (no parsing, no I/O);
- `BENCH_SQLITE`: SQLite file with `resource(type, id, body)`; `GET /sqlite/Patient/{id}` is
  the smallest honest "read by primary key" route: one indexed SELECT, bytes returned as is.
The ratio carebase read / minimal SQLite route says what carebase's own work costs.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FHIR_JSON = "application/fhir+json"
BODY = Path(os.environ["BENCH_BODY"]).read_bytes() if "BENCH_BODY" in os.environ else b"{}"
_DB_PATH = os.environ.get("BENCH_SQLITE")
# One connection for the process: uvicorn runs one event loop thread, and the query is
# short enough that running it inline beats a thread-pool hop (as a minimal server would).
_DB = sqlite3.connect(_DB_PATH, check_same_thread=False) if _DB_PATH else None


async def bare(request: Request) -> Response:
    """The same bytes every time: HTTP + ASGI + Starlette cost only."""
    return Response(BODY, media_type=FHIR_JSON)


async def sqlite_read(request: Request) -> Response:
    """Primary-key lookup in SQLite, stored bytes returned unparsed."""
    if _DB is None:
        return Response(b"BENCH_SQLITE not set", status_code=500)
    row = _DB.execute(
        "SELECT body FROM resource WHERE type = ? AND id = ?",
        ("Patient", request.path_params["id"]),
    ).fetchone()
    if row is None:
        return Response(b'{"resourceType":"OperationOutcome"}', 404, media_type=FHIR_JSON)
    return Response(row[0], media_type=FHIR_JSON)


_PG_URL = os.environ.get("BENCH_POSTGRES")
_PG_POOL = AsyncConnectionPool(_PG_URL, min_size=4, max_size=10, open=False) if _PG_URL else None


async def postgresql_read(request: Request) -> Response:
    """Primary-key lookup in PostgreSQL through psycopg's async pool, bytes returned as is."""
    if _PG_POOL is None:
        return Response(b"BENCH_POSTGRES not set", status_code=500)
    async with _PG_POOL.connection() as conn:
        cur = await conn.execute(
            "SELECT body FROM resource WHERE type = %s AND id = %s",
            ("Patient", request.path_params["id"]),
        )
        row = await cur.fetchone()
    if row is None:
        return Response(b'{"resourceType":"OperationOutcome"}', 404, media_type=FHIR_JSON)
    return Response(bytes(row[0]), media_type=FHIR_JSON)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    if _PG_POOL is not None:
        await _PG_POOL.open(wait=True)
    yield
    if _PG_POOL is not None:
        await _PG_POOL.close()


async def healthz(request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


app = Starlette(
    routes=[
        Route("/bare/Patient/x", bare),
        Route("/sqlite/Patient/{id}", sqlite_read),
        Route("/postgresql/Patient/{id}", postgresql_read),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)


def create_database(path: Path, ids: list[str], body: bytes) -> None:
    """Write the `resource` table the SQLite route reads (WAL, as carebase uses)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS resource "
            "(type TEXT NOT NULL, id TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (type, id))"
        )
        conn.executemany(
            "INSERT OR REPLACE INTO resource VALUES ('Patient', ?, ?)",
            [(i, body) for i in ids],
        )
