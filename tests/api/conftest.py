"""Fixtures for the FHIR HTTP API tests: an app over the real `store` (SQLite and PostgreSQL).

The `client` sends a valid access token with `system/*.cruds` (a backend service: the
broadest caller there is), so the API tests exercise the real authentication and access
control path; `tokens` issues other tokens for the access-control tests, and `audit` is the
in-memory audit trail the app records to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette

from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.auth.tokens import TokenService
from carebase.config import Settings
from carebase.store.base import Store


@pytest.fixture
def audit() -> MemoryAuditTrail:
    """The audit trail the app records every FHIR interaction to."""
    return MemoryAuditTrail()


@pytest.fixture
def app(store: Store, settings: Settings, audit: MemoryAuditTrail) -> Starlette:
    """The app serving the test store (base URL http://testserver/fhir)."""
    return create_app(settings, store, audit=audit)


@pytest.fixture
def tokens(app: Starlette) -> TokenService:
    """The app's token service (issues tokens the app accepts)."""
    service: TokenService = app.state.tokens
    return service


@pytest.fixture
def admin_token(tokens: TokenService) -> str:
    """An access token allowed everything: a backend service with system/*.cruds."""
    token, _ = tokens.issue(
        subject="test-admin", scopes=["system/*.cruds"], kind="service", role="service"
    )
    return token


@pytest_asyncio.fixture
async def client(app: Starlette, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process, authenticated with `admin_token`."""
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as c:
        yield c


@pytest_asyncio.fixture
async def anonymous_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process with no credentials."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
