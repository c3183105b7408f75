"""SMART Backend Services: client_credentials with private_key_jwt, and assertion attacks."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from carebase.auth.oauth_errors import OAuthError
from carebase.auth.oauth_server import OAuthServer
from carebase.auth.oauth_tokens import TokenEndpoint
from carebase.store.oauth_records import ClientRecord
from oauth_helpers import TOKEN_URL, ClientKey, assertion_form, ec_key, rsa_key


def backend(server: OAuthServer, key: ClientKey, scopes: str = "system/*.rs") -> ClientRecord:
    client, _ = server.registry.register("Batch", "backend", scopes=scopes, jwks=key.jwks)
    return client


def refused(server: OAuthServer, form: dict[str, str]) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        TokenEndpoint(server).exchange(form, None)
    return caught.value


@pytest.mark.parametrize(
    "key", [rsa_key("RS384"), ec_key("ES384"), rsa_key("RS256"), ec_key("ES256")],
    ids=lambda k: k.alg,
)  # fmt: skip
def test_client_credentials(server: OAuthServer, key: ClientKey) -> None:
    client = backend(server, key)
    answer = TokenEndpoint(server).exchange(
        assertion_form(key.assertion(client.client_id), scope="system/Patient.rs"), None
    )
    assert answer["token_type"] == "Bearer" and answer["scope"] == "system/Patient.rs"
    assert "refresh_token" not in answer
    principal = server.tokens.verify(answer["access_token"])
    assert principal.kind == "service" and principal.subject == client.client_id
    assert principal.client_id == client.client_id


def test_scope_escalation_is_narrowed(server: OAuthServer) -> None:
    key = rsa_key()
    client = backend(server, key, scopes="system/Observation.rs")
    answer = TokenEndpoint(server).exchange(
        assertion_form(key.assertion(client.client_id), scope="system/*.cruds"), None
    )
    assert answer["scope"] == "system/Observation.rs"
    error = refused(
        server, assertion_form(key.assertion(client.client_id), scope="system/Patient.rs")
    )
    assert error.error == "invalid_scope"
    assert refused(server, assertion_form(key.assertion(client.client_id))).error == "invalid_scope"


def test_assertion_replay(server: OAuthServer) -> None:
    key = rsa_key()
    client = backend(server, key)
    assertion = key.assertion(client.client_id)
    TokenEndpoint(server).exchange(assertion_form(assertion, scope="system/*.rs"), None)
    error = refused(server, assertion_form(assertion, scope="system/*.rs"))
    assert error.error == "invalid_client" and "replay" in error.description


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"aud": "http://testserver/fhir"}, "token endpoint URL"),
        ({"aud": None}, "aud"),
        ({"exp": int(time.time()) + 3600}, "five minutes"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"jti": None}, "jti"),
        ({"sub": "someone-else"}, "sub"),
    ],
)
def test_bad_assertion_claims(server: OAuthServer, claims: dict[str, object], words: str) -> None:
    key = rsa_key()
    client = backend(server, key)
    error = refused(
        server, assertion_form(key.assertion(client.client_id, **claims), scope="system/*.rs")
    )
    assert error.error == "invalid_client" and error.status == 401
    assert words in error.description


def test_wrong_issuer_is_another_client(server: OAuthServer) -> None:
    key = rsa_key()
    backend(server, key)
    error = refused(server, assertion_form(key.assertion("unknown-client"), scope="system/*.rs"))
    assert error.error == "invalid_client" and "Unknown client_id" in error.description


def test_key_not_registered(server: OAuthServer) -> None:
    client = backend(server, rsa_key())
    intruder = rsa_key()
    intruder.kid = client.jwks["keys"][0]["kid"]  # type: ignore[index]
    error = refused(
        server, assertion_form(intruder.assertion(client.client_id), scope="system/*.rs")
    )
    assert "signature" in error.description
    stranger = rsa_key()  # a kid the client never registered
    error = refused(
        server, assertion_form(stranger.assertion(client.client_id), scope="system/*.rs")
    )
    assert "No key" in error.description


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none(server: OAuthServer) -> None:
    key = rsa_key()
    client = backend(server, key)
    claims = {
        "iss": client.client_id, "sub": client.client_id, "aud": TOKEN_URL,
        "exp": int(time.time()) + 60, "jti": "n1",
    }  # fmt: skip
    unsigned = f"{_b64({'alg': 'none', 'kid': key.kid})}.{_b64(claims)}."
    error = refused(server, assertion_form(unsigned, scope="system/*.rs"))
    assert "alg 'none'" in error.description


def test_hs256_with_the_public_key(server: OAuthServer) -> None:
    key = rsa_key()
    client = backend(server, key)
    from cryptography.hazmat.primitives import serialization

    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {
        "iss": client.client_id, "sub": client.client_id, "aud": TOKEN_URL,
        "exp": int(time.time()) + 60, "jti": "h1",
    }  # fmt: skip
    header = _b64({"alg": "HS256", "kid": key.kid, "typ": "JWT"})
    body = _b64(claims)
    import hashlib
    import hmac

    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    error = refused(server, assertion_form(forged, scope="system/*.rs"))
    assert "alg 'HS256'" in error.description


def test_rsa_key_cannot_sign_as_ec(server: OAuthServer) -> None:
    rsa = rsa_key("RS384")
    client = backend(server, rsa)
    # an assertion claiming ES384 with the RSA key's kid finds no EC key to check it with
    other = ec_key("ES384")
    other.kid = rsa.kid
    error = refused(server, assertion_form(other.assertion(client.client_id), scope="system/*.rs"))
    assert "No key" in error.description


def test_disabled_backend_client(server: OAuthServer) -> None:
    key = ec_key()
    client = backend(server, key)
    server.registry.disable(client.client_id)
    error = refused(server, assertion_form(key.assertion(client.client_id), scope="system/*.rs"))
    assert error.error == "invalid_client" and "disabled" in error.description


def test_public_client_cannot_use_client_credentials(server: OAuthServer) -> None:
    client, _ = server.registry.register(
        "App", "public", redirect_uris=["https://a.example/cb"], scopes="openid"
    )
    error = refused(server, {"grant_type": "client_credentials", "client_id": client.client_id})
    assert error.error == "unauthorized_client"


def test_assertion_is_not_a_jwt(server: OAuthServer) -> None:
    assert refused(server, assertion_form("garbage", scope="system/*.rs")).error == "invalid_client"
    form = assertion_form("x.y.z", scope="system/*.rs")
    form["client_assertion_type"] = "urn:other"
    assert refused(server, form).error == "invalid_client"


def test_confidential_client_with_jwks_uses_private_key_jwt(server: OAuthServer) -> None:
    key = ec_key()
    client, _ = server.registry.register(
        "Portal", "confidential", redirect_uris=["https://a.example/cb"], scopes="user/*.rs",
        jwks=key.jwks,
    )  # fmt: skip
    # authenticated fine, but client_credentials is for backend clients only
    error = refused(server, assertion_form(key.assertion(client.client_id), scope="user/*.rs"))
    assert error.error == "unauthorized_client"
    assert jwt.get_unverified_header(key.assertion(client.client_id))["alg"] == "ES384"
