"""Helpers of the web tests: reading hidden form fields, logging in over HTTP."""

from __future__ import annotations

import re

import httpx

from carebase.auth.passwords import Passwords

FAST = Passwords(time_cost=1, memory_cost_kib=8, parallelism=1)
PASSWORD = "correct horse battery"


def hidden(html: str, name: str) -> str:
    """The value of the hidden input `name` in a page."""
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} in page:\n{html}"
    return match.group(1)


async def login_form(client: httpx.AsyncClient, next_: str | None = None) -> str:
    """GET the login page; returns its CSRF token (the cookie is now in the client)."""
    response = await client.get("/login", params={"next": next_} if next_ else None)
    assert response.status_code == 200, response.text
    return hidden(response.text, "csrf_token")


async def post_login(
    client: httpx.AsyncClient, username: str, password: str, next_: str = "/"
) -> httpx.Response:
    """Fill in and post the login form."""
    token = await login_form(client, next_)
    data = {"csrf_token": token, "next": next_, "username": username, "password": password}
    return await client.post("/login", data=data)


def set_cookie_headers(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers of a response by cookie name."""
    out = {}
    for header in response.headers.get_list("set-cookie"):
        out[header.split("=", 1)[0]] = header
    return out
