"""The app factory: opening, migrating and closing its own store over the lifespan."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from api_helpers import bearer, create, patient

from carebase.api.app import create_app
from carebase.config import Settings


@pytest.mark.asyncio
async def test_app_opens_migrates_and_closes_its_own_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir")
    tmp_path.mkdir(exist_ok=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=bearer(app)
        ) as c:
            pid = (await create(c, patient()))["id"]
            assert (await c.get(f"/fhir/Patient/{pid}")).status_code == 200
    assert (tmp_path / "carebase.db").exists()
    again = create_app(settings)
    async with again.router.lifespan_context(again):
        transport = httpx.ASGITransport(app=again)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=bearer(app)
        ) as c:
            assert (await c.get(f"/fhir/Patient/{pid}")).status_code == 200
