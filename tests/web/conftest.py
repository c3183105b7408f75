"""Fixtures of the browser-page tests: the app over the real `store`, with an audit trail."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from web_helpers import FAST, PASSWORD

from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.auth.users import User, UserDirectory
from carebase.config import Settings
from carebase.store.base import Store


@pytest.fixture
def app(store: Store, settings: Settings) -> Starlette:
    """The app with a memory audit trail and cheap password hashing."""
    app = create_app(settings, store, audit=MemoryAuditTrail())
    app.state.user_directory = UserDirectory(store, passwords=FAST)
    return app


@pytest.fixture
def trail(app: Starlette) -> MemoryAuditTrail:
    trail: MemoryAuditTrail = app.state.audit_trail
    return trail


@pytest.fixture
def directory(app: Starlette) -> UserDirectory:
    directory: UserDirectory = app.state.user_directory
    return directory


@pytest.fixture
def alice(directory: UserDirectory) -> User:
    return directory.add("alice", "clinician", PASSWORD, name="Alice Smith")


def _client(app: Starlette, base_url: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@pytest_asyncio.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client over plain http."""
    async with _client(app, "http://testserver") as c:
        yield c


@pytest_asyncio.fixture
async def tls_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client over https."""
    async with _client(app, "https://testserver") as c:
        yield c
