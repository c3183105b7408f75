"""The OAuth endpoints over HTTP that need no user: discovery, JWKS, client_credentials,
introspection, revocation, EHR launch creation, and their errors."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest
from oauth_http import FORM, basic, bearer, post_form, store_patient
from starlette.applications import Starlette

from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.auth.oauth_server import OAuthServer
from carebase.config import Settings
from carebase.store.base import Store
from oauth_helpers import TOKEN_URL, assertion_form, ec_key, rsa_key

pytestmark = pytest.mark.asyncio


@pytest.fixture
def client(anonymous_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """These endpoints are called without a bearer token (the shared `client` sends one)."""
    return anonymous_client


@pytest.fixture
def app(store: Store, settings: Settings) -> Starlette:
    """The app with an in-memory audit trail (the OAuth endpoints audit what they do)."""
    return create_app(settings, store, audit=MemoryAuditTrail())


def oauth(app: Starlette) -> OAuthServer:
    server: OAuthServer = app.state.oauth
    return server


async def test_the_app_has_one_token_service(app: Starlette) -> None:
    assert app.state.tokens is oauth(app).tokens
    assert app.state.tokens.is_revoked == oauth(app).revoked.is_revoked


async def test_smart_configuration(client: httpx.AsyncClient) -> None:
    r = await client.get("/fhir/.well-known/smart-configuration")
    assert r.status_code == 200
    config: dict[str, Any] = r.json()
    assert config["issuer"] == "http://testserver"
    assert config["authorization_endpoint"] == "http://testserver/oauth/authorize"
    assert config["token_endpoint"] == TOKEN_URL
    assert config["jwks_uri"] == "http://testserver/oauth/jwks"
    assert config["introspection_endpoint"] == "http://testserver/oauth/introspect"
    assert config["revocation_endpoint"] == "http://testserver/oauth/revoke"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["response_types_supported"] == ["code"]
    assert set(config["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
    }
    assert {"client_secret_basic", "private_key_jwt"} <= set(
        config["token_endpoint_auth_methods_supported"]
    )
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
    for capability in (
        "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
        "client-confidential-asymmetric", "context-ehr-patient", "context-standalone-patient",
        "permission-offline", "permission-patient", "permission-user", "permission-v1",
        "permission-v2", "sso-openid-connect", "authorize-post",
    ):  # fmt: skip
        assert capability in config["capabilities"]
    assert {"openid", "fhirUser", "launch/patient", "offline_access"} <= set(
        config["scopes_supported"]
    )


async def test_jwks_verifies_issued_tokens(app: Starlette, client: httpx.AsyncClient) -> None:
    r = await client.get("/oauth/jwks")
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert keys and all("d" not in k and k["alg"] == "RS256" for k in keys)
    token, _ = oauth(app).tokens.issue(subject="s", scopes=["system/*.rs"], kind="service")
    kid = jwt.get_unverified_header(token)["kid"]
    public = jwt.PyJWK(next(k for k in keys if k["kid"] == kid)).key
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="http://testserver/fhir")
    assert claims["sub"] == "s"


@pytest.mark.parametrize("make_key", [rsa_key, ec_key], ids=["RS384", "ES384"])
async def test_client_credentials_over_http(
    app: Starlette, client: httpx.AsyncClient, make_key: Any
) -> None:
    key = make_key()
    registered, _ = oauth(app).registry.register(
        "Export", "backend", scopes="system/*.rs", jwks=key.jwks
    )
    form = assertion_form(key.assertion(registered.client_id), scope="system/Observation.rs")
    r = await post_form(client, "/oauth/token", form)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/Observation.rs"
    principal = app.state.tokens.verify(body["access_token"])
    assert principal.kind == "service" and principal.client_id == registered.client_id
    # the same assertion again is a replay
    again = await post_form(client, "/oauth/token", form)
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"
    assert again.headers["www-authenticate"].startswith("Basic")


async def test_token_endpoint_errors(app: Starlette, client: httpx.AsyncClient) -> None:
    r = await client.post("/oauth/token", json={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert "x-www-form-urlencoded" in r.json()["error_description"]
    r = await client.post(
        "/oauth/token", content=b"grant_type=client_credentials&grant_type=password", headers=FORM
    )
    assert r.status_code == 400 and "more than once" in r.json()["error_description"]
    r = await post_form(client, "/oauth/token", {"grant_type": "password"})
    assert r.json()["error"] == "unsupported_grant_type"
    r = await post_form(client, "/oauth/token", {"grant_type": "client_credentials"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = await post_form(
        client, "/oauth/token", {"grant_type": "client_credentials"}, basic("nobody", "x")
    )
    assert r.status_code == 401 and "Unknown client_id" in r.json()["error_description"]
    r = await client.get("/oauth/token")
    assert r.status_code == 405


async def _backend_token(app: Starlette, client: httpx.AsyncClient) -> tuple[str, Any, str]:
    key = rsa_key()
    registered, _ = oauth(app).registry.register(
        "Export", "backend", scopes="system/*.rs", jwks=key.jwks
    )
    form = assertion_form(key.assertion(registered.client_id), scope="system/*.rs")
    r = await post_form(client, "/oauth/token", form)
    return r.json()["access_token"], key, registered.client_id


async def test_introspection_callers(app: Starlette, client: httpx.AsyncClient) -> None:
    token, key, client_id = await _backend_token(app, client)
    # a backend client authenticated by its assertion
    auth = assertion_form(key.assertion(client_id), token=token)
    del auth["grant_type"]
    r = await post_form(client, "/oauth/introspect", auth)
    assert r.status_code == 200 and r.json()["active"] is True
    assert r.json()["client_id"] == client_id
    # a bearer of a system/ token
    r = await post_form(client, "/oauth/introspect", {"token": token}, bearer(token))
    assert r.json()["active"] is True
    # a confidential client with its secret
    portal, secret = oauth(app).registry.register(
        "Portal", "confidential", redirect_uris=["https://p.example/cb"], scopes="user/*.rs"
    )
    assert secret is not None
    r = await post_form(
        client, "/oauth/introspect", {"token": "x"}, basic(portal.client_id, secret)
    )
    assert r.json() == {"active": False}
    # refused: nobody, a public client, a patient-level bearer, a bad bearer
    public, _ = oauth(app).registry.register(
        "App", "public", redirect_uris=["https://a.example/cb"], scopes="patient/*.rs"
    )
    r = await post_form(client, "/oauth/introspect", {"token": token})
    assert r.status_code == 401
    r = await post_form(
        client, "/oauth/introspect", {"token": token, "client_id": public.client_id}
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    patient_token, _ = app.state.tokens.issue(subject="9", scopes=["patient/*.rs"], role="patient")
    r = await post_form(client, "/oauth/introspect", {"token": token}, bearer(patient_token))
    assert r.status_code == 403
    r = await post_form(client, "/oauth/introspect", {"token": token}, bearer("not-a-token"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert "invalid_token" in r.headers["www-authenticate"]


async def test_introspection_of_expired_and_revoked(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    token, _, _ = await _backend_token(app, client)
    expired, _ = app.state.tokens.issue(subject="x", scopes=["user/*.rs"], ttl=-100)
    r = await post_form(client, "/oauth/introspect", {"token": expired}, bearer(token))
    assert r.json() == {"active": False}
    victim, claims = app.state.tokens.issue(subject="x", scopes=["user/*.rs"], client_id="some-app")
    oauth(app).revoked.revoke([(claims["jti"], claims["exp"])])
    r = await post_form(client, "/oauth/introspect", {"token": victim}, bearer(token))
    assert r.json() == {"active": False}


async def test_revocation_endpoint(app: Starlette, client: httpx.AsyncClient) -> None:
    token, key, client_id = await _backend_token(app, client)
    auth = assertion_form(key.assertion(client_id), token=token)
    del auth["grant_type"]
    r = await post_form(client, "/oauth/revoke", auth)
    assert r.status_code == 200 and r.content == b""
    with pytest.raises(Exception, match="revoked"):
        app.state.tokens.verify(token)
    # unknown tokens are fine; a missing token or no client authentication are not
    auth = assertion_form(key.assertion(client_id), token="unknown")
    del auth["grant_type"]
    assert (await post_form(client, "/oauth/revoke", auth)).status_code == 200
    auth = assertion_form(key.assertion(client_id))
    del auth["grant_type"]
    r = await post_form(client, "/oauth/revoke", auth)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await post_form(client, "/oauth/revoke", {"token": token})
    assert r.status_code == 401


async def test_launch_creation(app: Starlette, client: httpx.AsyncClient, store: Store) -> None:
    store_patient(store, "pat1", "Lane")
    clinician, _ = app.state.tokens.issue(subject="7", scopes=["user/*.rs"], role="clinician")
    r = await post_form(client, "/oauth/launch", {"patient": "pat1"}, bearer(clinician))
    assert r.status_code == 200, r.text
    launch = oauth(app).records.launch(r.json()["launch"])
    assert launch is not None and launch.patient == "pat1" and launch.user_id == "7"
    r = await post_form(client, "/oauth/launch", {"patient": "nobody"}, bearer(clinician))
    assert r.status_code == 400 and "Patient/nobody" in r.json()["error_description"]
    r = await post_form(client, "/oauth/launch", {}, bearer(clinician))
    assert r.status_code == 400
    patient, _ = app.state.tokens.issue(subject="8", scopes=["patient/*.rs"], role="patient")
    r = await post_form(client, "/oauth/launch", {"patient": "pat1"}, bearer(patient))
    assert r.status_code == 403
    r = await post_form(client, "/oauth/launch", {"patient": "pat1"})
    assert r.status_code == 401
