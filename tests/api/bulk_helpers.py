"""Helpers of the Bulk Data tests: kick off, run the queue, poll, download."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from starlette.applications import Starlette

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


async def kick_off(
    client: httpx.AsyncClient,
    path: str,
    *,
    params: dict[str, Any] | list[tuple[str, str]] | None = None,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """GET (or POST `body`) a kick-off request with the asynchronous headers."""
    sent = {**ASYNC, **(headers or {})}
    if body is not None:
        sent["Content-Type"] = "application/fhir+json"
        return await client.post(path, params=params, content=orjson.dumps(body), headers=sent)
    return await client.get(path, params=params, headers=sent)


def status_path(kickoff: httpx.Response) -> str:
    """The path of the status URL a 202 kick-off answered with."""
    assert kickoff.status_code == 202, kickoff.text
    location = kickoff.headers["content-location"]
    assert location.startswith("http://testserver/fhir/$bulk-status/")
    return location.removeprefix("http://testserver")


def run_jobs(app: Starlette) -> int:
    """Run every queued bulk job now (the test apps have no lifespan and so no runner)."""
    ran: int = app.state.bulk.run_pending()
    return ran


async def finished(
    client: httpx.AsyncClient, app: Starlette, kickoff: httpx.Response, **headers: str
) -> dict[str, Any]:
    """Run the queue and return the completed job's manifest (asserting 200)."""
    path = status_path(kickoff)
    run_jobs(app)
    r = await client.get(path, headers=headers or None)
    assert r.status_code == 200, r.text
    manifest: dict[str, Any] = r.json()
    return manifest


async def download(client: httpx.AsyncClient, url: str, **headers: str) -> list[dict[str, Any]]:
    """The resources of one manifest file."""
    r = await client.get(url.removeprefix("http://testserver"), headers=headers or None)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in r.content.splitlines() if line]


async def exported(
    client: httpx.AsyncClient, manifest: dict[str, Any], **headers: str
) -> dict[str, list[dict[str, Any]]]:
    """type -> resources of every output file of a manifest."""
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest["output"]:
        resources = await download(client, entry["url"], **headers)
        assert len(resources) == entry["count"]
        out.setdefault(entry["type"], []).extend(resources)
    return out


def parameters(*parts: tuple[str, str, str]) -> dict[str, Any]:
    """A Parameters resource of (name, value[x] key, value) parts."""
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": name, key: ({"reference": value} if key == "valueReference" else value)}
            for name, key, value in parts
        ],
    }
