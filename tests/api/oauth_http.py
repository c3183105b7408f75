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


def hidden_fields(html: str) -> dict[str, str]:
    """Every hidden input of a page (name -> unescaped value)."""
    import html as html_lib
    import re

    found = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', html)
    return {html_lib.unescape(n): html_lib.unescape(v) for n, v in found}


async def sign_in(client: httpx.AsyncClient, username: str, password: str, next_: str) -> str:
    """Log in through /login (CSRF included) and return where it sends the browser."""
    page = await client.get("/login", params={"next": next_})
    assert page.status_code == 200, page.text
    form = {**hidden_fields(page.text), "username": username, "password": password}
    r = await client.post("/login", data=form)
    assert r.status_code == 303, r.text
    return r.headers["location"]
