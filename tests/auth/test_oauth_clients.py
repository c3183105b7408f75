"""The client registry: kinds, exact redirect URIs, secrets stored hashed, JWKS checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carebase.auth.clients import check_redirect_uri, load_jwks
from carebase.auth.oauth_server import OAuthServer
from carebase.auth.opaque_tokens import digest
from carebase.errors import BadRequest
from oauth_helpers import REDIRECT, ec_key, rsa_key


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/cb",
        "https://app.example:8443/cb?x=1",
        "http://localhost:3000/cb",
        "http://127.0.0.1/cb",
    ],
)
def test_acceptable_redirect_uris(uri: str) -> None:
    assert check_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("http://app.example/cb", "https"),
        ("/cb", "absolute"),
        ("app.example/cb", "absolute"),
        ("https://app.example/cb#frag", "fragment"),
        ("https://user@app.example/cb", "user info"),
        ("https://app.example/cb/../x", ".."),
        ("javascript:alert(1)", "absolute"),
        ("ftp://app.example/cb", "absolute"),
        ("https://app.example/c b", "spaces"),
    ],
)
def test_rejected_redirect_uris(uri: str, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        check_redirect_uri(uri)


def test_public_client(server: OAuthServer) -> None:
    client, secret = server.registry.register(
        "Viewer", "public", redirect_uris=[REDIRECT], scopes="openid patient/*.rs"
    )
    assert secret is None and client.secret_hash is None
    stored = server.registry.get(client.client_id)
    assert stored == client
    assert stored.redirect_uris == (REDIRECT,)
    assert stored.scopes == ("openid", "patient/*.rs")


def test_confidential_secret_is_stored_hashed(server: OAuthServer) -> None:
    client, secret = server.registry.register(
        "Portal", "confidential", redirect_uris=[REDIRECT], scopes="user/*.rs"
    )
    assert secret and len(secret) >= 40
    stored = server.registry.get(client.client_id)
    assert stored is not None and stored.secret_hash == digest(secret)
    with server.records.store.reading() as cur:
        rows = cur.execute("SELECT * FROM oauth_client").fetchall()
    assert secret not in repr(rows)


def test_backend_client_needs_jwks_and_system_scopes(server: OAuthServer) -> None:
    with pytest.raises(BadRequest, match="JWKS"):
        server.registry.register("Batch", "backend", scopes="system/*.rs")
    jwks = rsa_key().jwks
    with pytest.raises(BadRequest, match="system/"):
        server.registry.register("Batch", "backend", scopes="user/*.rs", jwks=jwks)
    with pytest.raises(BadRequest, match="no redirect"):
        server.registry.register(
            "Batch", "backend", redirect_uris=[REDIRECT], scopes="system/*.rs", jwks=jwks
        )
    client, _ = server.registry.register("Batch", "backend", scopes="system/*.rs", jwks=jwks)
    assert server.registry.get(client.client_id).jwks == jwks  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("robot", {"redirect_uris": [REDIRECT], "scopes": "openid"}, "unknown"),
        ("public", {"scopes": "openid"}, "redirect-uri"),
        ("public", {"redirect_uris": [REDIRECT], "scopes": ""}, "scope"),
        ("public", {"redirect_uris": [REDIRECT], "scopes": "patient/Obs ervation.xx"}, "SMART"),
        ("public", {"redirect_uris": ["http://evil.example/cb"], "scopes": "openid"}, "https"),
    ],
)
def test_register_refuses_bad_input(
    server: OAuthServer, kind: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        server.registry.register("App", kind, **kwargs)  # type: ignore[arg-type]
    assert server.registry.all() == []


def test_list_and_disable(server: OAuthServer) -> None:
    a, _ = server.registry.register("A", "public", redirect_uris=[REDIRECT], scopes="openid")
    b, _ = server.registry.register("B", "public", redirect_uris=[REDIRECT], scopes="openid")
    assert [c.name for c in server.registry.all()] == ["A", "B"]
    assert server.registry.disable(a.client_id)
    assert not server.registry.disable("nope")
    disabled = server.registry.get(a.client_id)
    assert disabled is not None and disabled.disabled
    assert not server.registry.get(b.client_id).disabled  # type: ignore[union-attr]


def test_load_jwks_inline_and_file(tmp_path: Path) -> None:
    jwks = ec_key().jwks
    assert load_jwks(json.dumps(jwks)) == jwks
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(jwks))
    assert load_jwks(str(path)) == jwks


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"keys": []}', "at least one key"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "RSA or EC"),
        ('{"keys": [{"kty": "RSA", "n": "AQAB"}]}', "not a usable key"),
        ("/nonexistent/keys.json", "Cannot read"),
    ],
)
def test_load_jwks_refuses(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        load_jwks(text)


def test_load_jwks_refuses_private_keys() -> None:
    from jwt.algorithms import RSAAlgorithm

    key = rsa_key()
    private = RSAAlgorithm.to_jwk(key.private, as_dict=True)
    with pytest.raises(BadRequest, match="private key"):
        load_jwks(json.dumps({"keys": [private]}))
