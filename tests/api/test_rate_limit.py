"""Rate limiting of the login and OAuth endpoints per client IP (429, Retry-After)."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from carebase.api.app import create_app
from carebase.api.hardening import hardening_middleware
from carebase.api.rate_limit import LIMITED_PATHS, RateLimitMiddleware
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.auth.rate_limiter import RateLimit, TokenBucketLimiter
from carebase.config import Settings
from carebase.store.base import Store


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _tiny_app(burst: int, clock: list[float]) -> RateLimitMiddleware:
    routes = [Route(path, _ok, methods=["GET", "POST"]) for path in sorted(LIMITED_PATHS)]
    limit = RateLimit(10, 60.0, burst)
    limiter = TokenBucketLimiter(limit, lambda: clock[0])
    return RateLimitMiddleware(Starlette(routes=routes), limit, limiter=limiter)


def _client(app: object, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 12345))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.mark.asyncio
async def test_each_limited_endpoint_throttles_per_ip() -> None:
    clock = [0.0]
    app = _tiny_app(burst=3, clock=clock)
    async with _client(app, "10.0.0.1") as one, _client(app, "10.0.0.2") as two:
        for path in sorted(LIMITED_PATHS):
            codes = [(await one.post(path, data={"u": "x"})).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429], path
            assert (await two.post(path)).status_code == 200  # another address: its own bucket
            assert (await one.get(path)).status_code == 200  # only POSTs are limited
        refused = await one.post("/oauth/token")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "6"
        outcome = refused.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "throttled"
        assert "/oauth/token" in outcome["issue"][0]["diagnostics"]
        clock[0] += 6.0  # one token back
        assert (await one.post("/oauth/token")).status_code == 200
        assert (await one.post("/oauth/token")).status_code == 429
        assert (await one.post("/fhir/Patient")).status_code == 404  # other paths untouched


@pytest.mark.asyncio
async def test_the_app_limits_by_default_and_labels_the_429(
    store: Store, settings: Settings
) -> None:
    app = create_app(settings.with_(auth_rate_limit="2/minute:2"), store, audit=MemoryAuditTrail())
    async with _client(app, "192.0.2.7") as client:
        codes = [(await client.post("/oauth/token")).status_code for _ in range(3)]
        # No OAuth routes on this branch yet: the router answers 404 until the limit hits.
        assert codes[2] == 429 and 429 not in codes[:2], codes
        other_path = await client.post("/login")
        assert other_path.status_code != 429  # /login has its own bucket (415: no form body)
        last = await client.post("/oauth/token")
    assert last.status_code == 429 and last.headers["retry-after"] == "30"
    assert last.headers["x-frame-options"] == "DENY"
    async with _client(app, "192.0.2.8") as other:
        assert (await other.post("/oauth/token")).status_code != 429


@pytest.mark.asyncio
async def test_a_browser_over_the_sign_in_limit_gets_a_page(
    store: Store, settings: Settings
) -> None:
    """The sign-in form posted too often: a browser gets the error page (with Retry-After) in
    its language, a script the OperationOutcome."""
    app = create_app(settings.with_(auth_rate_limit="2/minute:2"), store, audit=MemoryAuditTrail())
    page = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    form = {"username": "nobody", "password": "wrong"}
    async with _client(app, "192.0.2.9") as browser:
        for _ in range(2):
            assert (await browser.post("/login", data=form, headers=page)).status_code != 429
        refused = await browser.post("/login", data=form, headers=page)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
        assert refused.headers["content-type"].startswith("text/html")
        assert "Too many failed attempts; try again in 30 seconds" in refused.text
        chinese = await browser.post("/login", data=form, headers={**page, "Accept-Language": "zh"})
        assert chinese.status_code == 429 and "请在 30 秒后再试" in chinese.text
        script = await browser.post("/login", data=form, headers={"Accept": "application/json"})
        assert script.status_code == 429
        assert script.json()["issue"][0]["code"] == "throttled"


def test_off_and_malformed_settings() -> None:
    stack = hardening_middleware(Settings(auth_rate_limit="off"))
    assert RateLimitMiddleware not in [m.cls for m in stack]
    with pytest.raises(SystemExit, match="CAREBASE_AUTH_RATE_LIMIT"):
        hardening_middleware(Settings(auth_rate_limit="lots"))
