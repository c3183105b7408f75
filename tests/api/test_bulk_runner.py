"""Bulk jobs outlive the app that queued them and the worker that ran them."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from api_helpers import bearer, create, patient
from bulk_helpers import ASYNC, kick_off, status_path
from starlette.applications import Starlette

from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.config import Settings
from carebase.store import bulk_jobs
from carebase.store.base import Store

pytestmark = pytest.mark.asyncio


async def _client(app: Starlette, headers: dict[str, str]) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


async def test_a_job_queued_by_one_app_completes_under_another(
    client: httpx.AsyncClient, app: Starlette, store: Store, settings: Settings
) -> None:
    await create(client, patient("Survivor"))
    path = status_path(await kick_off(client, "/fhir/$export"))
    # the first server goes away before running it; a new one over the same data takes over
    second = create_app(settings, store, audit=MemoryAuditTrail())
    headers = {"Authorization": client.headers["authorization"]}
    async with await _client(second, headers) as other:
        assert (await other.get(path)).status_code == 202
        assert second.state.bulk.run_pending() == 1
        r = await other.get(path)
        assert r.status_code == 200 and r.json()["output"][0]["count"] == 1


async def test_a_dead_workers_job_is_run_again(
    client: httpx.AsyncClient, app: Starlette, store: Store
) -> None:
    await create(client, patient("Orphan"))
    path = status_path(await kick_off(client, "/fhir/$export"))
    runner = app.state.bulk
    crashed = bulk_jobs.claim(runner.store, "crashed-worker", -1)  # claimed, lease lapsed
    assert crashed is not None
    (runner.directory(crashed.id) / "junk").parent.mkdir(parents=True)
    (runner.directory(crashed.id) / "Patient.ndjson").write_bytes(b"half a line")
    assert (await client.get(path)).status_code == 202
    assert runner.run_pending() == 1
    r = await client.get(path)
    assert r.status_code == 200
    url = r.json()["output"][0]["url"].removeprefix("http://testserver")
    lines = (await client.get(url)).content.splitlines()
    assert len(lines) == 1 and lines[0].startswith(b'{"resourceType":"Patient"')


async def test_failed_job_answers_with_its_operation_outcome(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    kickoff = await kick_off(client, "/fhir/$export")
    runner = app.state.bulk
    job_id = status_path(kickoff).rsplit("/", 1)[-1]
    with runner.store.writing() as cur:  # a request the runner cannot carry out
        cur.execute(runner.store.q("UPDATE bulk_job SET request = ? WHERE id = ?"),
                    ('{"principal": {}}', job_id))  # fmt: skip
    runner.run_pending()
    r = await client.get(status_path(kickoff))
    assert r.status_code == 500 and r.json()["resourceType"] == "OperationOutcome"


async def test_the_lifespan_runs_jobs_in_the_background(store: Store, settings: Settings) -> None:
    app = create_app(settings.with_(bulk_poll_seconds=0.05), store, audit=MemoryAuditTrail())
    headers = {**bearer(app), **ASYNC}
    async with app.router.lifespan_context(app), await _client(app, headers) as client:
        await client.post("/fhir/Patient", json=patient("Bg"))
        path = (await client.get("/fhir/$export")).headers["content-location"]
        deadline = time.monotonic() + 60
        while (r := await client.get(path)).status_code == 202:
            assert time.monotonic() < deadline, "the background runner never finished the job"
            await asyncio.sleep(0.05)
        assert r.status_code == 200 and r.json()["output"][0]["type"] == "Patient"


async def test_two_workers_share_the_queue(
    client: httpx.AsyncClient, app: Starlette, store: Store, settings: Settings
) -> None:
    """Two server processes' runners (here: two apps' runners in two threads) each take
    different jobs, and every job completes once."""
    await create(client, patient("Shared"))
    paths = [status_path(await kick_off(client, "/fhir/$export")) for _ in range(6)]
    other = create_app(settings, store, audit=MemoryAuditTrail()).state.bulk
    runners = [app.state.bulk, other]
    ran = await asyncio.gather(*(asyncio.to_thread(r.run_pending) for r in runners))
    assert sum(ran) == 6
    for path in paths:
        r = await client.get(path)
        assert r.status_code == 200 and r.json()["output"][0]["count"] == 1
