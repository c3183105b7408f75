"""Introspection (RFC 7662) and revocation (RFC 7009), and the revoked-jti list."""

from __future__ import annotations

import time

import pytest
from test_oauth_tokens import SCOPES, authorize, code_form

from carebase.auth.oauth_introspect import introspect, revoke
from carebase.auth.oauth_server import OAuthServer
from carebase.auth.oauth_tokens import TokenEndpoint
from carebase.auth.revocation_list import RevokedTokens
from carebase.errors import Unauthorized
from carebase.store.oauth_records import ClientRecord
from oauth_helpers import CLINICIAN, REDIRECT, assertion_form, rsa_key


@pytest.fixture
def app_client(server: OAuthServer) -> ClientRecord:
    client, _ = server.registry.register("App", "public", redirect_uris=[REDIRECT], scopes=SCOPES)
    return client


def tokens(server: OAuthServer, client: ClientRecord) -> dict[str, str]:
    code, verifier = authorize(server, client)
    return TokenEndpoint(server).exchange(code_form(client, code, verifier), None)


def test_introspect_access_and_refresh(server: OAuthServer, app_client: ClientRecord) -> None:
    answer = tokens(server, app_client)
    access = introspect(server, answer["access_token"])
    assert access["active"] is True and access["client_id"] == app_client.client_id
    assert access["sub"] == "1" and access["patient"] == "pat1"
    assert set(access["scope"].split()) == set(SCOPES.split())
    refresh = introspect(server, answer["refresh_token"], "refresh_token")
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    assert refresh["sub"] == str(CLINICIAN.id)


@pytest.mark.parametrize("token", ["", "unknown", "a.b.c", "eyJhbGciOiJub25lIn0.e30."])
def test_unknown_tokens_are_inactive(server: OAuthServer, token: str) -> None:
    assert introspect(server, token) == {"active": False}


def test_expired_access_token_is_inactive(server: OAuthServer) -> None:
    token, _ = server.tokens.issue(subject="x", scopes=["user/*.rs"], ttl=-120)
    assert introspect(server, token) == {"active": False}


def test_revoke_access_token(server: OAuthServer, app_client: ClientRecord) -> None:
    answer = tokens(server, app_client)
    other, _ = server.registry.register("Other", "public", redirect_uris=[REDIRECT], scopes=SCOPES)
    assert not revoke(server, other.client_id, answer["access_token"])  # not its token
    assert introspect(server, answer["access_token"])["active"]
    assert revoke(server, app_client.client_id, answer["access_token"])
    assert introspect(server, answer["access_token"]) == {"active": False}
    with pytest.raises(Unauthorized, match="revoked"):
        server.tokens.verify(answer["access_token"])
    # the refresh token is untouched by revoking an access token
    assert introspect(server, answer["refresh_token"])["active"]


def test_revoke_refresh_token_ends_the_grant(server: OAuthServer, app_client: ClientRecord) -> None:
    first = tokens(server, app_client)
    form = {"grant_type": "refresh_token", "client_id": app_client.client_id}
    second = TokenEndpoint(server).exchange({**form, "refresh_token": first["refresh_token"]}, None)
    assert revoke(server, app_client.client_id, second["refresh_token"])
    for token in (second["refresh_token"], second["access_token"], first["access_token"]):
        assert introspect(server, token) == {"active": False}
    assert not revoke(server, app_client.client_id, "never-issued")


def test_revocations_reach_other_workers(server: OAuthServer) -> None:
    # another process has its own in-memory list, reloaded from the table
    other = RevokedTokens(server.records, reload_seconds=0.0)
    assert not other.is_revoked("j-late")
    server.revoked.revoke([("j-late", int(time.time()) + 60)])
    assert other.is_revoked("j-late")
    lazy = RevokedTokens(server.records, reload_seconds=3600)
    assert lazy.is_revoked("j-late")  # the first check always loads


def test_backend_token_introspection(server: OAuthServer) -> None:
    key = rsa_key()
    client, _ = server.registry.register("B", "backend", scopes="system/*.rs", jwks=key.jwks)
    answer = TokenEndpoint(server).exchange(
        assertion_form(key.assertion(client.client_id), scope="system/*.rs"), None
    )
    result = introspect(server, answer["access_token"], "refresh_token")
    assert result["active"] and result["sub"] == client.client_id
    assert result["scope"] == "system/*.rs"
