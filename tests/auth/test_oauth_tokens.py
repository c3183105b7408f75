"""The token endpoint's grants and their attacks: PKCE, code replay, refresh rotation and
replay, scope escalation, disabled clients, confidential client secrets."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest

from carebase.auth.oauth_authorize import grant_for, issue_code, parse_authorization, with_patient
from carebase.auth.oauth_errors import OAuthError
from carebase.auth.oauth_server import OAuthServer
from carebase.auth.oauth_tokens import TokenEndpoint
from carebase.errors import Unauthorized
from carebase.store.oauth_records import ClientRecord
from oauth_helpers import CLINICIAN, FHIR_BASE, ISSUER, PATIENT, REDIRECT, pkce

SCOPES = "openid fhirUser launch/patient offline_access patient/*.rs user/*.rs"


@pytest.fixture
def app_client(server: OAuthServer) -> ClientRecord:
    client, _ = server.registry.register("App", "public", redirect_uris=[REDIRECT], scopes=SCOPES)
    return client


def authorize(
    server: OAuthServer, client: ClientRecord, user: Any = CLINICIAN, scope: str = SCOPES
) -> tuple[str, str]:
    """An approved authorization: (code, verifier)."""
    verifier, challenge = pkce()
    request = parse_authorization(
        server,
        {
            "response_type": "code", "client_id": client.client_id, "redirect_uri": REDIRECT,
            "scope": scope, "state": "s", "aud": FHIR_BASE, "code_challenge": challenge,
            "code_challenge_method": "S256", "nonce": "nonce-1",
        },
    )  # fmt: skip
    grant = grant_for(request, user)
    if grant.needs_patient:
        grant = with_patient(grant, "pat1")
    return issue_code(server, request, user, grant), verifier


def code_form(client: ClientRecord, code: str, verifier: str, **extra: str) -> dict[str, str]:
    form = {
        "grant_type": "authorization_code",
        "client_id": client.client_id,
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    form.update(extra)
    return form


def error_of(fn: Any, *args: Any) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        fn(*args)
    return caught.value


def test_code_exchange(server: OAuthServer, app_client: ClientRecord) -> None:
    code, verifier = authorize(server, app_client)
    answer = TokenEndpoint(server).exchange(code_form(app_client, code, verifier), None)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 300
    assert answer["patient"] == "pat1" and answer["need_patient_banner"] is True
    assert set(answer["scope"].split()) == set(SCOPES.split())
    assert answer["refresh_token"]
    principal = server.tokens.verify(answer["access_token"])
    assert principal.subject == "1" and principal.role == "clinician"
    assert principal.patient == "pat1" and principal.client_id == app_client.client_id
    assert principal.fhir_user == "Practitioner/p1"
    id_token = jwt.decode(
        answer["id_token"],
        server.tokens.ring.active.public,
        algorithms=["RS256"],
        audience=app_client.client_id,
        issuer=ISSUER,
    )
    assert id_token["nonce"] == "nonce-1"
    assert id_token["fhirUser"] == f"{FHIR_BASE}/Practitioner/p1"
    assert id_token["sub"] == "1"


def test_no_refresh_token_without_offline_access(
    server: OAuthServer, app_client: ClientRecord
) -> None:
    code, verifier = authorize(server, app_client, scope="user/*.rs")
    answer = TokenEndpoint(server).exchange(code_form(app_client, code, verifier), None)
    assert "refresh_token" not in answer and "id_token" not in answer and "patient" not in answer


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"code_verifier": "x" * 43}, "code_verifier"),
        ({"code_verifier": ""}, "code_verifier is missing"),
        ({"redirect_uri": "https://app.example/cb.evil.com"}, "redirect_uri"),
        ({"code": "forged"}, "unknown"),
    ],
)
def test_code_exchange_refusals(
    server: OAuthServer, app_client: ClientRecord, change: dict[str, str], words: str
) -> None:
    code, verifier = authorize(server, app_client)
    form = {**code_form(app_client, code, verifier), **change}
    error = error_of(TokenEndpoint(server).exchange, form, None)
    assert error.status == 400 and error.error in ("invalid_grant", "invalid_request")
    assert words in error.description


def test_code_replay_revokes_issued_tokens(server: OAuthServer, app_client: ClientRecord) -> None:
    endpoint = TokenEndpoint(server)
    code, verifier = authorize(server, app_client)
    first = endpoint.exchange(code_form(app_client, code, verifier), None)
    error = error_of(endpoint.exchange, code_form(app_client, code, verifier), None)
    assert error.error == "invalid_grant" and "already used" in error.description
    with pytest.raises(Unauthorized, match="revoked"):
        server.tokens.verify(first["access_token"])
    refresh = {"grant_type": "refresh_token", "client_id": app_client.client_id}
    refresh["refresh_token"] = first["refresh_token"]
    assert error_of(endpoint.exchange, refresh, None).error == "invalid_grant"


def test_expired_code(server: OAuthServer, app_client: ClientRecord) -> None:
    code, verifier = authorize(server, app_client)
    with server.records.store.writing() as cur:
        cur.execute(server.records.q("UPDATE oauth_code SET expires = ?"), (int(time.time()) - 1,))
    error = error_of(TokenEndpoint(server).exchange, code_form(app_client, code, verifier), None)
    assert "expired" in error.description


def test_code_of_another_client(server: OAuthServer, app_client: ClientRecord) -> None:
    other, _ = server.registry.register("Other", "public", redirect_uris=[REDIRECT], scopes=SCOPES)
    code, verifier = authorize(server, app_client)
    form = code_form(other, code, verifier)
    assert error_of(TokenEndpoint(server).exchange, form, None).error == "invalid_grant"


def test_refresh_rotation_and_replay(server: OAuthServer, app_client: ClientRecord) -> None:
    endpoint = TokenEndpoint(server)
    code, verifier = authorize(server, app_client)
    first = endpoint.exchange(code_form(app_client, code, verifier), None)
    form = {"grant_type": "refresh_token", "client_id": app_client.client_id}
    second = endpoint.exchange({**form, "refresh_token": first["refresh_token"]}, None)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["patient"] == "pat1"
    assert "nonce" not in jwt.decode(second["id_token"], options={"verify_signature": False})
    third = endpoint.exchange({**form, "refresh_token": second["refresh_token"]}, None)
    server.tokens.verify(third["access_token"])
    # the rotated first token comes back: a thief has it -> the whole family dies
    error = error_of(endpoint.exchange, {**form, "refresh_token": first["refresh_token"]}, None)
    assert "replay" in error.description
    for answer in (second, third):
        with pytest.raises(Unauthorized, match="revoked"):
            server.tokens.verify(answer["access_token"])
    error = error_of(endpoint.exchange, {**form, "refresh_token": third["refresh_token"]}, None)
    assert "revoked" in error.description


def test_refresh_may_narrow_but_not_widen(server: OAuthServer, app_client: ClientRecord) -> None:
    endpoint = TokenEndpoint(server)
    code, verifier = authorize(server, app_client, scope="offline_access patient/*.rs")
    first = endpoint.exchange(code_form(app_client, code, verifier), None)
    form = {"grant_type": "refresh_token", "client_id": app_client.client_id}
    wider = {**form, "refresh_token": first["refresh_token"], "scope": "user/*.rs patient/*.rs"}
    assert error_of(endpoint.exchange, wider, None).error == "invalid_scope"
    narrower = {**form, "refresh_token": first["refresh_token"], "scope": "patient/Observation.rs"}
    answer = endpoint.exchange(narrower, None)
    assert answer["scope"] == "patient/Observation.rs"
    # the grant keeps its scope: the next refresh may ask for all of it again
    again = endpoint.exchange({**form, "refresh_token": answer["refresh_token"]}, None)
    assert set(again["scope"].split()) == {"offline_access", "patient/*.rs"}


def test_patient_role_caps_scopes(server: OAuthServer, app_client: ClientRecord) -> None:
    code, verifier = authorize(server, app_client, user=PATIENT)
    answer = TokenEndpoint(server).exchange(code_form(app_client, code, verifier), None)
    assert "user/*.rs" not in answer["scope"].split()
    assert answer["patient"] == "pat1"


def test_disabled_client_cannot_redeem_or_refresh(
    server: OAuthServer, app_client: ClientRecord
) -> None:
    endpoint = TokenEndpoint(server)
    code, verifier = authorize(server, app_client)
    first = endpoint.exchange(code_form(app_client, code, verifier), None)
    code2, verifier2 = authorize(server, app_client)
    server.registry.disable(app_client.client_id)
    error = error_of(endpoint.exchange, code_form(app_client, code2, verifier2), None)
    assert error.error == "invalid_client" and error.status == 401
    assert "WWW-Authenticate" in error.headers
    form = {"grant_type": "refresh_token", "client_id": app_client.client_id}
    assert (
        error_of(endpoint.exchange, {**form, "refresh_token": first["refresh_token"]}, None).status
        == 401
    )


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def test_confidential_client_secret_basic(server: OAuthServer) -> None:
    client, secret = server.registry.register(
        "Portal", "confidential", redirect_uris=[REDIRECT], scopes=SCOPES
    )
    assert secret is not None
    endpoint = TokenEndpoint(server)
    code, verifier = authorize(server, client)
    form = code_form(client, code, verifier)
    del form["client_id"]
    # without credentials, with a wrong secret, or with the secret in the form: refused
    assert error_of(endpoint.exchange, form, None).error == "invalid_client"
    assert error_of(endpoint.exchange, form, _basic(client.client_id, "wrong")).status == 401
    posted = {**form, "client_id": client.client_id, "client_secret": secret}
    assert error_of(endpoint.exchange, posted, None).error == "invalid_client"
    answer = endpoint.exchange(form, _basic(client.client_id, secret))
    assert answer["access_token"]


def test_unsupported_grant(server: OAuthServer, app_client: ClientRecord) -> None:
    error = error_of(TokenEndpoint(server).exchange, {"grant_type": "password"}, None)
    assert error.error == "unsupported_grant_type"
