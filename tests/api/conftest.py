"""Fixtures for the FHIR HTTP API tests: an app over the real `store` (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette

from carebase.api.app import create_app
from carebase.config import Settings
from carebase.store.base import Store


@pytest.fixture
def app(store: Store, settings: Settings) -> Starlette:
    """The app serving the test store (base URL http://testserver/fhir)."""
    return create_app(settings, store)


@pytest_asyncio.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
