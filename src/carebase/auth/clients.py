"""The OAuth client registry: public, confidential (client secret) and backend (JWKS) clients.

Redirect URIs are registered whole and compared as exact strings at authorize and token time:
no prefix, pattern or normalisation matching, so `https://app.example/cb.evil.com` or
`https://app.example/cb/../x` never match `https://app.example/cb`.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

from carebase.auth.opaque_tokens import digest, new_opaque
from carebase.auth.scopes import ScopeError, validate_scopes
from carebase.errors import BadRequest
from carebase.store.oauth_records import ClientRecord, OAuthRecords

#: public: a browser or native app that cannot keep a secret (PKCE only);
#: confidential: a server-side app with a client secret (or a JWKS for private_key_jwt);
#: backend: a service without a user (client_credentials with private_key_jwt).
CLIENT_KINDS = ("public", "confidential", "backend")
_LOOPBACK = {"localhost", "127.0.0.1", "[::1]", "::1"}
_KEY_TYPES = {"RSA", "EC"}


def check_redirect_uri(uri: str) -> str:
    """`uri` if it may be registered: an absolute https URL (or http on localhost/127.0.0.1),
    without fragment, user info or dot segments; BadRequest otherwise."""
    parts = urlsplit(uri)
    problem = None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problem = "must be an absolute https URL"
    elif parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        problem = "must use https (plain http only on localhost or 127.0.0.1)"
    elif "#" in uri:
        problem = "must not have a fragment (#...)"
    elif "@" in parts.netloc:
        problem = "must not carry user info (user@host)"
    elif any(seg in (".", "..") for seg in parts.path.split("/")):
        problem = "must not contain . or .. path segments"
    elif any(c.isspace() for c in uri):
        problem = "must not contain spaces"
    if problem:
        raise BadRequest(f"Redirect URI {uri!r} {problem}", location="redirect_uri")
    return uri


def load_jwks(source: str) -> dict[str, Any]:
    """A client's public JSON Web Key Set from inline JSON or a file path; BadRequest unless
    it holds at least one RSA or EC public key that PyJWT can use (private keys refused)."""
    text = source
    if not source.lstrip().startswith("{"):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadRequest(f"Cannot read the JWKS file {source}: {exc.strerror}") from exc
    try:
        jwks = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"The JWKS is not valid JSON: {exc}") from exc
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise BadRequest('The JWKS must be an object {"keys": [...]} with at least one key')
    for n, key in enumerate(keys):
        where = f"keys[{n}]"
        if not isinstance(key, dict) or key.get("kty") not in _KEY_TYPES:
            raise BadRequest(f"JWKS {where} must be an RSA or EC public key (kty RSA or EC)")
        if "d" in key:
            raise BadRequest(f"JWKS {where} is a private key; register the public key only")
        try:
            jwt.PyJWK(key, algorithm="RS384" if key["kty"] == "RSA" else _ec_alg(key))
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            raise BadRequest(f"JWKS {where} is not a usable key: {exc}") from exc
    return {"keys": keys}


def _ec_alg(key: dict[str, Any]) -> str:
    return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(key.get("crv", ""), "ES384")


class ClientRegistry:
    """Registers, looks up and disables OAuth clients."""

    def __init__(self, records: OAuthRecords) -> None:
        self.records = records

    def register(
        self,
        name: str,
        kind: str,
        *,
        redirect_uris: list[str] | tuple[str, ...] = (),
        scopes: str = "",
        jwks: dict[str, Any] | None = None,
    ) -> tuple[ClientRecord, str | None]:
        """Register a client; returns it and, for a confidential client, its secret (shown
        once: only its hash is stored). BadRequest names what is wrong."""
        if kind not in CLIENT_KINDS:
            raise BadRequest(
                f"Client kind {kind!r} is unknown; use one of {', '.join(CLIENT_KINDS)}"
            )
        if not name.strip():
            raise BadRequest("The client needs a name")
        uris = tuple(dict.fromkeys(check_redirect_uri(u) for u in redirect_uris))
        if kind != "backend" and not uris:
            raise BadRequest(f"A {kind} client needs at least one --redirect-uri")
        if kind == "backend" and uris:
            raise BadRequest("A backend client has no redirect URIs (it uses client_credentials)")
        if kind == "backend" and jwks is None:
            raise BadRequest("A backend client needs a JWKS (--jwks) for private_key_jwt")
        if kind == "public" and jwks is not None:
            raise BadRequest("A public client cannot authenticate, so it has no JWKS")
        try:
            allowed = tuple(dict.fromkeys(validate_scopes(scopes)))
        except ScopeError as exc:
            raise BadRequest(str(exc), location="scope") from exc
        if not allowed:
            raise BadRequest("The client needs at least one allowed scope (--scope)")
        if kind == "backend":
            wrong = [s for s in allowed if not s.startswith("system/")]
            if wrong:
                raise BadRequest(f"A backend client may only hold system/ scopes, not {wrong}")
        secret = new_opaque() if kind == "confidential" else None
        client = ClientRecord(
            # hex: never starts with "-" (an option on a command line) or needs quoting
            client_id=secrets.token_hex(12),
            name=name.strip(),
            kind=kind,
            redirect_uris=uris,
            scopes=allowed,
            secret_hash=digest(secret) if secret else None,
            jwks=jwks,
            disabled=False,
            created=int(time.time()),
        )
        self.records.add_client(client)
        return client, secret

    def get(self, client_id: str) -> ClientRecord | None:
        """The client with this id (enabled or not), or None."""
        return self.records.client(client_id) if client_id else None

    def all(self) -> list[ClientRecord]:
        """Every registered client."""
        return self.records.clients()

    def disable(self, client_id: str) -> bool:
        """Disable a client: it can no longer authorize, get or refresh tokens. False if
        there is no such client."""
        return self.records.set_client_disabled(client_id, True)
