"""Request size and JSON depth limits on every body path (413/400 OperationOutcomes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import httpx
import pytest
import pytest_asyncio
from api_helpers import FHIR_JSON, bearer, create, issue_text, patient
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from carebase.api.app import create_app
from carebase.api.body_limit import BodyLimitMiddleware
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.config import Settings
from carebase.store.base import Store

pytestmark = pytest.mark.asyncio
LIMIT = 4096


@pytest_asyncio.fixture
async def small(store: Store, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings.with_(max_body_bytes=LIMIT, max_json_depth=20), store, audit=MemoryAuditTrail()
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(app)
    ) as c:
        yield c


def _nested(depth: int) -> bytes:
    inner = b'{"resourceType":"Patient","extension":' + b"[" * depth + b"]" * depth + b"}"
    return inner


async def test_oversized_bodies_refused_on_several_endpoints(small: httpx.AsyncClient) -> None:
    made = await create(small, patient())
    big = patient(text={"status": "generated", "div": "<div>" + "x" * LIMIT + "</div>"})
    big_bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": big}]}
    attempts = [
        await small.post("/fhir/Patient", json=big, headers=FHIR_JSON),
        await small.put(f"/fhir/Patient/{made['id']}", json={**big, "id": made["id"]}),
        await small.post("/fhir", json=big_bundle, headers=FHIR_JSON),
        await small.post(
            "/fhir/Patient/_search",
            content=b"name=" + b"a" * LIMIT,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        await small.post("/anything/else", content=b"x" * (LIMIT + 1)),
    ]
    for r in attempts:
        assert r.status_code == 413, (r.request.url, r.status_code, r.text)
        assert "larger than the limit" in issue_text(r)
        assert r.json()["issue"][0]["code"] == "too-costly"
    unchanged = await small.get(f"/fhir/Patient/{made['id']}")
    assert unchanged.json() == made  # no partial write


async def test_chunked_bodies_without_length_are_cut_off(small: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1024

    r = await small.post("/fhir/Patient", content=chunks(), headers=FHIR_JSON)
    assert r.status_code == 413, r.text
    assert (await small.get("/fhir/Patient")).json().get("total") == 0


async def test_deeply_nested_json_refused_on_several_endpoints(
    small: httpx.AsyncClient,
) -> None:
    made = await create(small, patient())
    deep = _nested(30)
    bundle = b'{"resourceType":"Bundle","type":"batch","entry":[{"resource":' + deep + b"}]}"
    attempts = [
        await small.post("/fhir/Patient", content=deep, headers=FHIR_JSON),
        await small.put(f"/fhir/Patient/{made['id']}", content=deep, headers=FHIR_JSON),
        await small.post("/fhir", content=bundle, headers=FHIR_JSON),
        await small.post("/fhir/Patient", content=_nested(1500), headers=FHIR_JSON),
    ]
    for r in attempts:
        assert r.status_code == 400, (r.request.url, r.text)
        text = issue_text(r)
        assert "nests deeper than the limit of 20 levels" in text, text


async def test_form_posts_get_the_small_form_limit() -> None:
    async def login(request: Request) -> PlainTextResponse:
        form = parse_qs((await request.body()).decode())
        return PlainTextResponse(f"hello {form['username'][0]}")

    # Mounted as the app mounts it: inside Starlette's outermost error middleware.
    limit = Middleware(
        BodyLimitMiddleware, max_bytes=1_000_000, max_form_bytes=256, max_upload_bytes=2048
    )

    async def upload(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    routes = [Route("/login", login, methods=["POST"]), Route("/upload", upload, methods=["POST"])]
    app = Starlette(routes=routes, middleware=[limit])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.post("/login", data={"username": "ann", "password": "pw"})
        assert ok.text == "hello ann"
        big = await client.post("/login", data={"username": "ann", "password": "p" * 300})
        assert big.status_code == 413
        assert "CAREBASE_MAX_FORM_BYTES" in big.json()["issue"][0]["diagnostics"]

        async def chunks() -> AsyncIterator[bytes]:
            yield b"username=ann&password="
            for _ in range(10):
                yield b"p" * 100

        streamed = await client.post(
            "/login",
            content=chunks(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert streamed.status_code == 413
        bad = await client.post("/login", content=b"x", headers={"Content-Length": "lots"})
        assert bad.status_code == 400
        # file uploads (multipart) have their own, larger limit
        upload = {"file": ("a.txt", b"a" * 1500, "text/plain")}
        taken = await client.post("/upload", files=upload)
        assert taken.status_code == 200 and int(taken.text) > 1500
        huge = {"file": ("a.txt", b"a" * 3000, "text/plain")}
        too_big = await client.post("/upload", files=huge)
        assert too_big.status_code == 413
        assert "CAREBASE_MAX_UPLOAD_BYTES" in too_big.json()["issue"][0]["diagnostics"]


async def test_a_refusal_page_that_fails_leaves_the_refusal_standing() -> None:
    """A `refusal` (the web app's error page) that raises: the client still gets its 413,
    as an OperationOutcome, and the upload never reaches the route."""
    reached: list[int] = []

    async def upload(request: Request) -> PlainTextResponse:
        reached.append(len(await request.body()))
        return PlainTextResponse("stored")

    def broken_page(scope: object, exc: object) -> None:
        raise RuntimeError("template missing")

    limit = Middleware(
        BodyLimitMiddleware, max_bytes=1_000_000, max_form_bytes=256, max_upload_bytes=2048,
        refusal=broken_page,
    )  # fmt: skip
    app = Starlette(routes=[Route("/upload", upload, methods=["POST"])], middleware=[limit])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        huge = {"file": ("a.txt", b"a" * 3000, "text/plain")}
        refused = await client.post("/upload", files=huge, headers={"Accept": "text/html"})
    assert refused.status_code == 413 and not reached
    assert refused.json()["resourceType"] == "OperationOutcome"
