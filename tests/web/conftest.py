"""Fixtures of the browser-page tests: the app over the real `store`, with an audit trail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from web_helpers import FAST, PASSWORD
from web_world import World, build_world

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


@pytest.fixture
def audited_app(store: Store, settings: Settings) -> Iterator[Starlette]:
    """The app with the durable database audit trail (pages read it back: recent patients,
    recent changes, the portal's access log, the audit viewer)."""
    from carebase.auth.audit_log import DatabaseAuditTrail
    from carebase.store.sql_store import SqlStore

    assert isinstance(store, SqlStore)
    trail = DatabaseAuditTrail(store, flush_ms=2, site="http://testserver/fhir")
    trail.start()
    app = create_app(settings, store, audit=trail)
    app.state.user_directory = UserDirectory(store, passwords=FAST)
    yield app
    trail.close()


@pytest.fixture
def world(audited_app: Starlette, store: Store) -> World:
    return build_world(store, audited_app.state.user_directory)


@pytest_asyncio.fixture
async def web(audited_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of the audited app."""
    async with _client(audited_app, "http://testserver") as c:
        yield c
