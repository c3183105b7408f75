"""Helpers of the OAuth HTTP tests: form posts, Basic credentials, stored test patients."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from carebase.store.base import Store

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    """An HTTP Bearer Authorization header."""
    return {"Authorization": f"Bearer {token}"}


async def post_form(
    client: httpx.AsyncClient, url: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST an urlencoded form."""
    return await client.post(url, data=form, headers=headers or {})


def store_patient(store: Store, id_: str, family: str, given: str = "Amy") -> None:
    """A Patient written straight to the store (no token needed)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": id_,
        "name": [{"family": family, "given": [given]}],
    }
    with store.transaction() as tx:
        tx.update("Patient", id_, resource)
