"""CORS allow-list: preflights and responses for listed origins only, never credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from api_helpers import FHIR_JSON, bearer, create, patient

from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.config import Settings
from carebase.store.base import Store

GOOD = "https://app.example.org"
EVIL = "https://evil.example.com"


@pytest_asyncio.fixture
async def cors_client(store: Store, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings.with_(cors_origins=(GOOD, "http://localhost:3000")),
        store,
        audit=MemoryAuditTrail(),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(app)
    ) as c:
        yield c


def _preflight(origin: str, method: str = "PUT", headers: str = "") -> dict[str, str]:
    out = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        out["Access-Control-Request-Headers"] = headers
    return out


@pytest.mark.asyncio
async def test_preflight_for_an_allowed_origin(cors_client: httpx.AsyncClient) -> None:
    r = await cors_client.options(
        "/fhir/Patient/1",
        headers=_preflight(GOOD, headers="Authorization, Content-Type, Prefer, If-Match"),
    )
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == GOOD
    allowed = r.headers["access-control-allow-headers"].lower()
    for name in ("authorization", "content-type", "prefer", "if-match", "if-none-exist"):
        assert name in allowed
    assert "PUT" in r.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in r.headers
    assert r.headers["vary"] == "Origin"
    assert r.headers["x-content-type-options"] == "nosniff"  # outer layer still applies


@pytest.mark.asyncio
async def test_preflight_refused_for_other_origins_methods_and_headers(
    cors_client: httpx.AsyncClient,
) -> None:
    for headers in (
        _preflight(EVIL),
        _preflight(GOOD, method="TRACE"),
        _preflight(GOOD, headers="Authorization, X-Evil"),
    ):
        r = await cors_client.options("/fhir/Patient", headers=headers)
        assert r.status_code == 403, r.text
        assert not [h for h in r.headers if h.startswith("access-control-")], r.headers
        assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.asyncio
async def test_responses_labelled_only_for_allowed_origins(
    cors_client: httpx.AsyncClient,
) -> None:
    made = await cors_client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "Origin": GOOD}
    )
    assert made.status_code == 201
    assert made.headers["access-control-allow-origin"] == GOOD
    assert "Origin" in made.headers.get_list("vary")
    assert "access-control-allow-credentials" not in made.headers
    exposed = made.headers["access-control-expose-headers"]
    for name in ("Location", "ETag", "Content-Location", "Last-Modified"):
        assert name in exposed
    evil = await cors_client.get("/fhir/metadata", headers={"Origin": EVIL})
    assert evil.status_code == 200
    assert not [h for h in evil.headers if h.startswith("access-control-")], evil.headers
    same = await cors_client.get("/fhir/metadata")  # no Origin: not a CORS request
    assert "access-control-allow-origin" not in same.headers


@pytest.mark.asyncio
async def test_no_origins_configured_means_no_cors(client: httpx.AsyncClient) -> None:
    await create(client, patient())
    r = await client.options("/fhir/Patient", headers=_preflight(GOOD))
    assert "access-control-allow-origin" not in r.headers
    r = await client.get("/fhir/Patient", headers={"Origin": GOOD})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.asyncio
async def test_wildcard_never_with_credentials(store: Store, settings: Settings) -> None:
    app = create_app(settings.with_(cors_origins=("*",)), store, audit=MemoryAuditTrail())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(app)
    ) as c:
        r = await c.get("/fhir/metadata", headers={"Origin": EVIL})
        pre = await c.options("/fhir/Patient", headers=_preflight(EVIL, "POST"))
    assert r.headers["access-control-allow-origin"] == "*"
    assert pre.headers["access-control-allow-origin"] == "*"
    for response in (r, pre):
        assert "access-control-allow-credentials" not in response.headers


def test_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREBASE_CORS_ORIGINS", f" {GOOD}, http://localhost:3000 ,,")
    assert Settings.from_env().cors_origins == (GOOD, "http://localhost:3000")
    monkeypatch.delenv("CAREBASE_CORS_ORIGINS")
    assert Settings.from_env().cors_origins == ()
