"""SMART App Launch end to end over HTTP (both databases): sign-in, patient picker, consent,
code, token with PKCE, the FHIR API with the token, refresh rotation, EHR launch - and the
attacks on each step."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from oauth_http import bearer, hidden_fields, post_form, sign_in, store_patient
from starlette.applications import Starlette

from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.auth.oauth_server import OAuthServer
from carebase.auth.passwords import Passwords
from carebase.auth.users import User, UserDirectory
from carebase.config import Settings
from carebase.errors import Unauthorized
from carebase.store.base import Store
from carebase.store.oauth_records import ClientRecord
from oauth_helpers import FHIR_BASE, REDIRECT, pkce

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery"
SCOPES = "openid fhirUser launch launch/patient offline_access patient/*.rs user/*.rs"


@pytest.fixture
def app(store: Store, settings: Settings) -> Starlette:
    """The app with an in-memory audit trail."""
    return create_app(settings, store, audit=MemoryAuditTrail())


@pytest.fixture
def client(anonymous_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """These flows start without a bearer token (the shared `client` sends one)."""
    return anonymous_client


@pytest.fixture
def directory(app: Starlette, store: Store) -> UserDirectory:
    """The app's users, with cheap password hashing."""
    directory = UserDirectory(
        store, passwords=Passwords(time_cost=1, memory_cost_kib=8, parallelism=1)
    )
    app.state.user_directory = directory
    return directory


@pytest.fixture
def amy(directory: UserDirectory, store: Store) -> User:
    """A patient user linked to Patient/pat1."""
    store_patient(store, "pat1", "Lane", "Amy")
    return directory.add("amy", "patient", PASSWORD, patient="pat1")


@pytest.fixture
def doc(directory: UserDirectory, store: Store) -> User:
    """A clinician."""
    store_patient(store, "pat2", "Lanford", "Bob")
    store_patient(store, "pat3", "Smith", "Carol")
    return directory.add("doc", "clinician", PASSWORD, name="Dr Doc")


@pytest.fixture
def viewer(app: Starlette) -> ClientRecord:
    """A public app."""
    server: OAuthServer = app.state.oauth
    client, _ = server.registry.register(
        "Chart Viewer", "public", redirect_uris=[REDIRECT], scopes=SCOPES
    )
    return client


def authorize_params(client: ClientRecord, challenge: str, **changes: Any) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid fhirUser launch/patient offline_access patient/*.rs",
        "state": "xyz-state",
        "aud": FHIR_BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "nonce": "nonce-42",
    }
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


def redirected_to_app(response: httpx.Response) -> dict[str, str]:
    """The query of a redirect to the app's registered redirect URI."""
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def consent_page(
    client: httpx.AsyncClient, user: User, params: dict[str, str]
) -> httpx.Response:
    """Start at /oauth/authorize, sign in, come back: the page after sign-in."""
    r = await client.get("/oauth/authorize", params=params)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    next_ = parse_qs(urlsplit(r.headers["location"]).query)["next"][0]
    back = await sign_in(client, user.username, PASSWORD, next_)
    assert back == next_
    return await client.get(back)


async def approve(client: httpx.AsyncClient, page: httpx.Response) -> dict[str, str]:
    """Press Approve on a consent page; the code redirect's query."""
    form = {**hidden_fields(page.text), "decision": "approve"}
    return redirected_to_app(await client.post("/oauth/authorize", data=form))


async def redeem(
    client: httpx.AsyncClient, app_client: ClientRecord, code: str, verifier: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": app_client.client_id,
    }
    return await post_form(client, "/oauth/token", form)


async def test_standalone_launch_of_a_patient(
    app: Starlette, client: httpx.AsyncClient, amy: User, viewer: ClientRecord
) -> None:
    verifier, challenge = pkce()
    page = await consent_page(client, amy, authorize_params(viewer, challenge))
    assert page.status_code == 200
    assert "Chart Viewer" in page.text and "Amy Lane" in page.text
    assert "Read and search the selected patient&#39;s records of every kind" in page.text
    assert 'name="patient"' not in page.text  # a patient user's own record is implied
    query = await approve(client, page)
    assert query["state"] == "xyz-state" and query["iss"] == "http://testserver"
    r = await redeem(client, viewer, query["code"], verifier)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["patient"] == "pat1" and body["need_patient_banner"] is True
    assert set(body["scope"].split()) == {
        "openid", "fhirUser", "launch/patient", "offline_access", "patient/*.rs",
    }  # fmt: skip
    principal = app.state.tokens.verify(body["access_token"])
    assert principal.subject == amy.id and principal.patient == "pat1"
    id_token = jwt.decode(
        body["id_token"],
        app.state.tokens.ring.active.public,
        algorithms=["RS256"],
        audience=viewer.client_id,
    )
    assert id_token["nonce"] == "nonce-42"
    assert id_token["fhirUser"] == f"{FHIR_BASE}/Patient/pat1"
    read = await client.get("/fhir/Patient/pat1", headers=bearer(body["access_token"]))
    assert read.status_code == 200 and read.json()["id"] == "pat1"


async def test_clinician_picks_a_patient(
    app: Starlette, client: httpx.AsyncClient, doc: User, viewer: ClientRecord
) -> None:
    verifier, challenge = pkce()
    params = authorize_params(viewer, challenge)
    picker = await consent_page(client, doc, params)
    assert picker.status_code == 200 and "Choose a patient" in picker.text
    found = await client.get("/oauth/authorize", params={**params, "q": "Lan"})
    assert "Bob Lanford" in found.text and "Carol Smith" not in found.text
    pick = {**hidden_fields(found.text), "patient": "pat2", "decision": "pick"}
    consent = await client.post("/oauth/authorize", data=pick)
    assert consent.status_code == 200 and "Bob Lanford" in consent.text
    query = await approve(client, consent)
    body = (await redeem(client, viewer, query["code"], verifier)).json()
    assert body["patient"] == "pat2"
    assert "user/*.rs" not in body["scope"].split()  # not asked for here
    assert app.state.tokens.verify(body["access_token"]).role == "clinician"


async def test_picking_a_patient_that_does_not_exist(
    client: httpx.AsyncClient, doc: User, viewer: ClientRecord
) -> None:
    _, challenge = pkce()
    picker = await consent_page(client, doc, authorize_params(viewer, challenge))
    form = {**hidden_fields(picker.text), "patient": "nobody", "decision": "approve"}
    r = await client.post("/oauth/authorize", data=form)
    assert r.status_code == 200 and "not found" in r.text and "location" not in r.headers


async def test_deny(client: httpx.AsyncClient, amy: User, viewer: ClientRecord) -> None:
    _, challenge = pkce()
    page = await consent_page(client, amy, authorize_params(viewer, challenge))
    form = {**hidden_fields(page.text), "decision": "deny"}
    query = redirected_to_app(await client.post("/oauth/authorize", data=form))
    assert query["error"] == "access_denied" and query["state"] == "xyz-state"
    assert "code" not in query


async def test_consent_needs_csrf(
    client: httpx.AsyncClient, amy: User, viewer: ClientRecord
) -> None:
    _, challenge = pkce()
    page = await consent_page(client, amy, authorize_params(viewer, challenge))
    form = {**hidden_fields(page.text), "decision": "approve"}
    for forged in ("", "wrong"):
        r = await client.post("/oauth/authorize", data={**form, "csrf_token": forged})
        assert r.status_code == 403 and "location" not in r.headers


async def test_authorize_post(client: httpx.AsyncClient, amy: User, viewer: ClientRecord) -> None:
    _, challenge = pkce()
    r = await client.post("/oauth/authorize", data=authorize_params(viewer, challenge))
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


async def test_ehr_launch(
    app: Starlette, client: httpx.AsyncClient, doc: User, viewer: ClientRecord
) -> None:
    # the EHR page of the signed-in clinician creates the launch (with its CSRF token)
    await sign_in(client, doc.username, PASSWORD, "/")
    csrf = hidden_fields((await client.get("/logout")).text)["csrf_token"]
    r = await post_form(client, "/oauth/launch", {"patient": "pat3", "csrf_token": csrf})
    assert r.status_code == 200, r.text
    launch = r.json()["launch"]
    verifier, challenge = pkce()
    params = authorize_params(viewer, challenge, launch=launch, scope="launch openid patient/*.rs")
    page = await client.get("/oauth/authorize", params=params)
    assert page.status_code == 200 and "Carol Smith" in page.text
    assert "Choose a patient" not in page.text
    query = await approve(client, page)
    body = (await redeem(client, viewer, query["code"], verifier)).json()
    assert body["patient"] == "pat3" and body["need_patient_banner"] is False
    assert app.state.tokens.verify(body["access_token"]).patient == "pat3"


async def test_launch_by_bearer_token(app: Starlette, client: httpx.AsyncClient, doc: User) -> None:
    token, _ = app.state.tokens.issue(subject=doc.id, scopes=["user/*.rs"], role="clinician")
    r = await post_form(client, "/oauth/launch", {"patient": "pat3"}, bearer(token))
    assert r.status_code == 200
    launch = app.state.oauth.records.launch(r.json()["launch"])
    assert launch.user_id == doc.id and launch.patient == "pat3"


async def test_launch_from_a_session_needs_csrf(client: httpx.AsyncClient, doc: User) -> None:
    await sign_in(client, doc.username, PASSWORD, "/")
    r = await post_form(client, "/oauth/launch", {"patient": "pat3"})
    assert r.status_code == 403


async def test_refresh_rotation_and_replay(
    app: Starlette, client: httpx.AsyncClient, amy: User, viewer: ClientRecord
) -> None:
    verifier, challenge = pkce()
    query = await approve(
        client, await consent_page(client, amy, authorize_params(viewer, challenge))
    )
    first = (await redeem(client, viewer, query["code"], verifier)).json()
    refresh = {"grant_type": "refresh_token", "client_id": viewer.client_id}
    r = await post_form(
        client, "/oauth/token", {**refresh, "refresh_token": first["refresh_token"]}
    )
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"] and second["patient"] == "pat1"
    # asking for more than was granted
    wider = {**refresh, "refresh_token": second["refresh_token"], "scope": "user/*.rs"}
    r = await post_form(client, "/oauth/token", wider)
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    # the spent first token again: the whole family is revoked
    r = await post_form(
        client, "/oauth/token", {**refresh, "refresh_token": first["refresh_token"]}
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await post_form(
        client, "/oauth/token", {**refresh, "refresh_token": second["refresh_token"]}
    )
    assert r.status_code == 400
    with pytest.raises(Unauthorized):
        app.state.tokens.verify(second["access_token"])
    # and revocation by the app itself
    verifier, challenge = pkce()
    query = await approve(client, await consent_page_again(client, viewer, challenge))
    third = (await redeem(client, viewer, query["code"], verifier)).json()
    revoke = {"token": third["refresh_token"], "client_id": viewer.client_id}
    assert (await post_form(client, "/oauth/revoke", revoke)).status_code == 200
    r = await post_form(
        client, "/oauth/token", {**refresh, "refresh_token": third["refresh_token"]}
    )
    assert r.status_code == 400


async def consent_page_again(
    client: httpx.AsyncClient, app_client: ClientRecord, challenge: str
) -> httpx.Response:
    """The consent page for a browser that is signed in already."""
    page = await client.get("/oauth/authorize", params=authorize_params(app_client, challenge))
    assert page.status_code == 200, page.text
    return page


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example/cb.evil.com",
        "https://app.example/cb/../x",
        "https://evil.example/cb",
        "https://app.example/cb#x",
    ],
)
async def test_unregistered_redirect_gets_a_page_not_a_redirect(
    client: httpx.AsyncClient, viewer: ClientRecord, redirect_uri: str
) -> None:
    _, challenge = pkce()
    params = authorize_params(viewer, challenge, redirect_uri=redirect_uri)
    r = await client.get("/oauth/authorize", params=params)
    assert r.status_code == 400 and "location" not in r.headers
    assert "not registered" in r.text and r.headers["content-type"].startswith("text/html")


async def test_unknown_and_disabled_client_page(
    app: Starlette, client: httpx.AsyncClient, viewer: ClientRecord
) -> None:
    _, challenge = pkce()
    r = await client.get(
        "/oauth/authorize", params=authorize_params(viewer, challenge, client_id="x")
    )
    assert r.status_code == 400 and "location" not in r.headers
    assert "This application may not sign in here" in r.text  # the page's words
    client.cookies.set("carebase_lang", "zh")
    r = await client.get(
        "/oauth/authorize", params=authorize_params(viewer, challenge, client_id="x")
    )
    assert "此应用不能在此登录" in r.text and "is not registered here" in r.text  # detail
    client.cookies.delete("carebase_lang")
    app.state.oauth.registry.disable(viewer.client_id)
    r = await client.get("/oauth/authorize", params=authorize_params(viewer, challenge))
    assert r.status_code == 400 and "disabled" in r.text


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"aud": "https://elsewhere.example/fhir"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "system/*.rs"}, "invalid_scope"),
    ],
)
async def test_bad_requests_go_back_to_the_app(
    client: httpx.AsyncClient, viewer: ClientRecord, changes: dict[str, Any], error: str
) -> None:
    _, challenge = pkce()
    r = await client.get("/oauth/authorize", params=authorize_params(viewer, challenge, **changes))
    query = redirected_to_app(r)
    assert query["error"] == error and query["state"] == "xyz-state"


async def test_repeated_parameter_is_a_page(
    client: httpx.AsyncClient, viewer: ClientRecord
) -> None:
    _, challenge = pkce()
    query = urlencode(authorize_params(viewer, challenge)) + f"&redirect_uri={REDIRECT}"
    r = await client.get(f"/oauth/authorize?{query}")
    assert r.status_code == 400 and "location" not in r.headers


async def test_code_attacks(
    app: Starlette, client: httpx.AsyncClient, amy: User, viewer: ClientRecord, store: Store
) -> None:
    verifier, challenge = pkce()
    query = await approve(
        client, await consent_page(client, amy, authorize_params(viewer, challenge))
    )
    # wrong verifier: refused, and the code is spent
    r = await redeem(client, viewer, query["code"], pkce()[0])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert (await redeem(client, viewer, query["code"], verifier)).status_code == 400
    # replay after a good exchange revokes what it issued
    verifier, challenge = pkce()
    query = await approve(client, await consent_page_again(client, viewer, challenge))
    good = await redeem(client, viewer, query["code"], verifier)
    assert good.status_code == 200
    replay = await redeem(client, viewer, query["code"], verifier)
    assert replay.status_code == 400 and "already used" in replay.json()["error_description"]
    with pytest.raises(Unauthorized, match="revoked"):
        app.state.tokens.verify(good.json()["access_token"])
    # an expired code
    verifier, challenge = pkce()
    query = await approve(client, await consent_page_again(client, viewer, challenge))
    records = app.state.oauth.records
    with records.store.writing() as cur:
        cur.execute(records.q("UPDATE oauth_code SET expires = ?"), (int(time.time()) - 1,))
    r = await redeem(client, viewer, query["code"], verifier)
    assert r.status_code == 400 and "expired" in r.json()["error_description"]


async def test_scope_escalation_is_narrowed(
    app: Starlette, client: httpx.AsyncClient, amy: User
) -> None:
    narrow, _ = app.state.oauth.registry.register(
        "Labs", "public", redirect_uris=[REDIRECT], scopes="launch/patient patient/Observation.rs"
    )
    verifier, challenge = pkce()
    params = authorize_params(narrow, challenge, scope="launch/patient patient/*.cruds user/*.rs")
    page = await consent_page(client, amy, params)
    assert "observation records" in page.text and "every kind" not in page.text
    query = await approve(client, page)
    body = (await redeem(client, narrow, query["code"], verifier)).json()
    assert body["scope"] == "launch/patient patient/Observation.rs"


async def test_token_requests_are_audited(
    app: Starlette, client: httpx.AsyncClient, amy: User, viewer: ClientRecord
) -> None:
    trail: MemoryAuditTrail = app.state.audit_trail
    verifier, challenge = pkce()
    query = await approve(
        client, await consent_page(client, amy, authorize_params(viewer, challenge))
    )
    assert (await redeem(client, viewer, query["code"], verifier)).status_code == 200
    assert (await redeem(client, viewer, query["code"], verifier)).status_code == 400
    token_events = [e for e in trail.entries if e.interaction in ("token", "failed-auth")]
    assert [(e.interaction, e.outcome) for e in token_events] == [
        ("token", "0"),
        ("failed-auth", "4"),
    ]
    issued, refused = token_events
    assert issued.principal is not None and issued.principal.subject == amy.id
    assert issued.principal.client_id == viewer.client_id
    assert refused.description is not None and "invalid_grant" in refused.description
