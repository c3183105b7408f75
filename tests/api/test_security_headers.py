"""Security headers on every response of the app (HSTS only over TLS), and streaming kept."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from api_helpers import FHIR_JSON, patient
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from carebase.api.security_headers import (
    CONTENT_SECURITY_POLICY,
    STRICT_TRANSPORT_SECURITY,
    SecurityHeadersMiddleware,
)

pytestmark = pytest.mark.asyncio

EXPECTED = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def _assert_hardened(response: httpx.Response, tls: bool) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, response.headers)
    if tls:
        assert response.headers["strict-transport-security"] == STRICT_TRANSPORT_SECURITY
    else:
        assert "strict-transport-security" not in response.headers


async def test_every_kind_of_response_carries_the_headers(client: httpx.AsyncClient) -> None:
    responses = [
        await client.get("/healthz"),
        await client.get("/fhir/metadata"),
        await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON),
        await client.get("/fhir/Patient/nope"),  # 404 OperationOutcome
        await client.get("/no/such/path"),  # router 404
        await client.delete("/healthz"),  # 405
    ]
    assert [r.status_code for r in responses] == [200, 200, 201, 404, 404, 405]
    for response in responses:
        _assert_hardened(response, tls=False)
    csp = responses[0].headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp


async def test_hsts_only_when_the_request_came_over_tls(client: httpx.AsyncClient) -> None:
    # httpx's ASGI transport sets the scope scheme from the URL.
    secure = await client.get("https://testserver/fhir/metadata")
    _assert_hardened(secure, tls=True)
    plain = await client.get("http://testserver/fhir/metadata")
    _assert_hardened(plain, tls=False)


async def test_streaming_bodies_pass_through_and_own_headers_win() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"chunk{i};".encode()

    async def stream(request: object) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="text/plain")

    async def framed(request: object) -> Response:
        return Response("ok", headers={"X-Frame-Options": "SAMEORIGIN"})

    inner = Starlette(routes=[Route("/stream", stream), Route("/framed", framed)])
    app = SecurityHeadersMiddleware(inner)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        streamed = await client.get("/stream")
        assert streamed.text == "chunk0;chunk1;chunk2;"
        _assert_hardened(streamed, tls=False)
        own = await client.get("/framed")
    assert own.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert own.headers["x-content-type-options"] == "nosniff"
