"""The login pages over HTTP on SQLite and PostgreSQL: password and TOTP logins, recovery
codes, lockout, CSRF, cookie attributes, the `next` redirect, logout, and their audit."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from web_helpers import PASSWORD, hidden, login_form, post_login, set_cookie_headers

from carebase.api.app import create_app
from carebase.auth import lockout, totp
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.auth.users import User, UserDirectory
from carebase.config import Settings
from carebase.store import audit_records
from carebase.store.base import Store
from carebase.store.sql_store import SqlStore

pytestmark = pytest.mark.asyncio


async def _signed_in(client: httpx.AsyncClient) -> bool:
    """Whether the client's session cookie identifies a user (the logout page shows)."""
    response = await client.get("/logout")
    return response.status_code == 200 and "You are signed in as" in response.text


async def test_login_page_is_a_form_with_a_csrf_cookie(client: httpx.AsyncClient) -> None:
    response = await client.get("/login", params={"next": "/fhir/Patient"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert hidden(response.text, "next") == "/fhir/Patient"
    token = hidden(response.text, "csrf_token")
    cookie = set_cookie_headers(response)["carebase_csrf"]
    assert f"carebase_csrf={token};" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert "<script" not in response.text and "style=" not in response.text
    assert '<link rel="stylesheet" href="/static/carebase.css">' in response.text


async def test_password_login_sets_a_session_and_redirects(
    client: httpx.AsyncClient, alice: User, trail: MemoryAuditTrail
) -> None:
    response = await post_login(client, "Alice", PASSWORD, next_="/fhir/Patient?name=x")
    assert response.status_code == 303
    assert response.headers["location"] == "/fhir/Patient?name=x"
    cookie = set_cookie_headers(response)["carebase_session"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Max-Age" not in cookie and "Domain" not in cookie and "Secure" not in cookie
    assert await _signed_in(client)
    # Signed in, the login page sends the user straight on.
    again = await client.get("/login", params={"next": "/fhir/metadata"})
    assert (again.status_code, again.headers["location"]) == (303, "/fhir/metadata")
    [entry] = trail.entries
    assert (entry.interaction, entry.action, entry.outcome) == ("login", "E", "0")
    assert entry.principal is not None and entry.principal.subject == alice.id
    assert entry.source_ip == "203.0.113.7"


async def test_https_cookies_are_secure_with_the_host_prefix(
    tls_client: httpx.AsyncClient, alice: User
) -> None:
    page = await tls_client.get("/login")
    csrf = set_cookie_headers(page)["__Host-carebase_csrf"]
    assert "Secure" in csrf and "Path=/" in csrf and "Domain" not in csrf
    response = await post_login(tls_client, "alice", PASSWORD)
    assert response.status_code == 303
    session = set_cookie_headers(response)["__Host-carebase_session"]
    assert "Secure" in session and "HttpOnly" in session and "SameSite=lax" in session
    assert await _signed_in(tls_client)


async def test_cookie_secure_setting_forces_secure_over_http(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    app.state.settings = app.state.settings.with_(cookie_secure=True)
    page = await client.get("/login")
    assert "Secure" in set_cookie_headers(page)["__Host-carebase_csrf"]


async def test_wrong_and_unknown_look_the_same(
    client: httpx.AsyncClient, alice: User, trail: MemoryAuditTrail
) -> None:
    wrong = await post_login(client, "alice", "not the password")
    unknown = await post_login(client, "mallory", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    for response in (wrong, unknown):
        assert "The username or password is not right" in response.text
        assert "carebase_session" not in set_cookie_headers(response)
    assert [(e.interaction, e.outcome) for e in trail.entries] == [("failed-auth", "4")] * 2
    assert not await _signed_in(client)


async def test_missing_fields_are_a_400_page(client: httpx.AsyncClient) -> None:
    response = await post_login(client, "alice", "")
    assert response.status_code == 400 and "Enter your username and password" in response.text


async def test_lockout_answers_429_with_retry_after(
    client: httpx.AsyncClient, alice: User, trail: MemoryAuditTrail
) -> None:
    for _ in range(lockout.THRESHOLD - 1):
        assert (await post_login(client, "alice", "not the password")).status_code == 401
    locked = await post_login(client, "alice", "not the password")
    assert locked.status_code == 429 and locked.headers["retry-after"] == "30"
    assert "try again in 30 seconds" in locked.text
    right = await post_login(client, "alice", PASSWORD)
    assert right.status_code == 429 and int(right.headers["retry-after"]) <= 30
    assert not await _signed_in(client)
    assert "locked out" in (trail.entries[-1].description or "")


@pytest.mark.parametrize("token", [None, "", "forged-token"])
async def test_login_without_the_right_csrf_token_is_403(
    client: httpx.AsyncClient, alice: User, token: str | None
) -> None:
    await login_form(client)
    data = {"username": "alice", "password": PASSWORD}
    if token is not None:
        data["csrf_token"] = token
    response = await client.post("/login", data=data)
    assert response.status_code == 403 and "security token" in response.text
    assert not await _signed_in(client)


async def test_csrf_token_of_another_browser_is_403(
    app: Starlette, client: httpx.AsyncClient, alice: User
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as attacker:
        stolen = await login_form(attacker)
    await login_form(client)
    data = {"csrf_token": stolen, "username": "alice", "password": PASSWORD}
    assert (await client.post("/login", data=data)).status_code == 403


async def test_totp_login_in_two_steps(
    client: httpx.AsyncClient, alice: User, directory: UserDirectory, trail: MemoryAuditTrail
) -> None:
    secret = directory.enroll_totp("alice", activate=True).secret
    first = await post_login(client, "alice", PASSWORD, next_="/fhir/Patient")
    assert first.status_code == 303
    assert first.headers["location"] == "/login/second-factor?next=%2Ffhir%2FPatient"
    pending = set_cookie_headers(first)["carebase_login"]
    assert "HttpOnly" in pending and "SameSite=strict" in pending and "Max-Age=300" in pending
    assert "carebase_session" not in set_cookie_headers(first)
    assert not await _signed_in(client)  # half a login identifies nobody
    page = await client.get(first.headers["location"])
    assert page.status_code == 200 and 'autocomplete="one-time-code"' in page.text
    token = hidden(page.text, "csrf_token")
    wrong = await client.post(
        "/login/second-factor",
        data={"csrf_token": token, "next": "/fhir/Patient", "code": "abcd-efgh-jkmn-pqrs"},
    )
    assert wrong.status_code == 401 and "not right" in wrong.text
    code = totp.code_at(secret, totp.current_step())
    done = await client.post(
        "/login/second-factor",
        data={"csrf_token": token, "next": "/fhir/Patient", "code": code},
    )
    assert (done.status_code, done.headers["location"]) == (303, "/fhir/Patient")
    assert await _signed_in(client)
    assert [e.interaction for e in trail.entries] == ["failed-auth", "login"]


async def test_recovery_code_instead_of_totp_works_once(
    app: Starlette, client: httpx.AsyncClient, alice: User, directory: UserDirectory
) -> None:
    code = directory.enroll_totp("alice", activate=True).recovery_codes[0]

    async def attempt(c: httpx.AsyncClient) -> httpx.Response:
        await post_login(c, "alice", PASSWORD)
        page = await c.get("/login/second-factor")
        data = {"csrf_token": hidden(page.text, "csrf_token"), "next": "/", "code": code}
        return await c.post("/login/second-factor", data=data)

    assert (await attempt(client)).status_code == 303
    assert await _signed_in(client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as other:
        assert (await attempt(other)).status_code == 401


async def test_second_factor_without_a_password_step_starts_again(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/login/second-factor", params={"next": "/fhir/x"})
    assert (response.status_code, response.headers["location"]) == (
        303,
        "/login?next=%2Ffhir%2Fx",
    )
    token = await login_form(client)
    posted = await client.post("/login/second-factor", data={"csrf_token": token, "code": "123456"})
    assert posted.status_code == 303 and posted.headers["location"] == "/login"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "http:evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "evil.example",
        "",
    ],
)
async def test_next_to_another_site_is_refused(
    client: httpx.AsyncClient, alice: User, target: str
) -> None:
    response = await post_login(client, "alice", PASSWORD, next_=target)
    assert (response.status_code, response.headers["location"]) == (303, "/")


async def test_logout_needs_the_session_csrf_token_then_ends_the_session(
    client: httpx.AsyncClient, alice: User, trail: MemoryAuditTrail, directory: UserDirectory
) -> None:
    await post_login(client, "alice", PASSWORD)
    page = await client.get("/logout")
    assert "Alice Smith" in page.text
    token = hidden(page.text, "csrf_token")
    pre_login = client.cookies.get("carebase_csrf")
    assert token != pre_login  # signed in, forms carry the session's own secret
    refused = await client.post("/logout", data={"csrf_token": pre_login or "x"})
    assert refused.status_code == 403 and await _signed_in(client)
    session_cookie = client.cookies.get("carebase_session")
    response = await client.post("/logout", data={"csrf_token": token})
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert 'carebase_session=""' in set_cookie_headers(response)["carebase_session"]
    assert not await _signed_in(client)
    # The old cookie is dead on the server too, not just forgotten by the browser.
    client.cookies.set("carebase_session", session_cookie or "")
    assert not await _signed_in(client)
    assert [e.interaction for e in trail.entries] == ["login", "logout"]


async def test_password_change_ends_browser_sessions(
    client: httpx.AsyncClient, alice: User, directory: UserDirectory
) -> None:
    await post_login(client, "alice", PASSWORD)
    assert await _signed_in(client)
    directory.set_password("alice", "another long passphrase")
    assert not await _signed_in(client)


async def test_a_new_login_replaces_the_previous_session(
    client: httpx.AsyncClient, alice: User
) -> None:
    token = await login_form(client)
    data = {"csrf_token": token, "username": "alice", "password": PASSWORD}
    assert (await client.post("/login", data=data)).status_code == 303
    first = client.cookies.get("carebase_session")
    # A second login from the same browser (a form left open in another tab).
    assert (await client.post("/login", data=data)).status_code == 303
    second = client.cookies.get("carebase_session")
    assert first and second and first != second
    client.cookies.set("carebase_session", first)
    assert not await _signed_in(client)


async def test_user_input_is_escaped(client: httpx.AsyncClient) -> None:
    response = await post_login(client, "<script>alert(1)</script>", "not the password")
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


async def test_wrong_content_type_is_an_html_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/login", json={"username": "alice"})
    assert response.status_code == 415
    assert response.headers["content-type"].startswith("text/html")


async def test_stylesheet_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/carebase.css")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")
    assert ":focus-visible" in response.text


async def test_logins_reach_the_durable_audit_log(
    store: Store, settings: Settings, directory: UserDirectory
) -> None:
    app = create_app(settings, store)  # the database audit trail, not a test double
    app.state.user_directory = directory
    directory.add("dora", "nurse", PASSWORD)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        assert (await post_login(c, "dora", "not the password")).status_code == 401
        assert (await post_login(c, "dora", PASSWORD)).status_code == 303
        page = await c.get("/logout")
        await c.post("/logout", data={"csrf_token": hidden(page.text, "csrf_token")})
    trail = app.state.audit_trail
    trail.flush()
    trail.close()
    assert isinstance(store, SqlStore)
    rows = [
        (r.interaction, r.outcome, r.agent_name)
        for r in audit_records.iter_records(store)
        if r.interaction in ("login", "logout", "failed-auth")
    ]
    assert rows == [("failed-auth", "4", None), ("login", "0", "dora"), ("logout", "0", "dora")]
