"""Token introspection (RFC 7662) and revocation (RFC 7009), without the HTTP.

Introspection answers `{"active": false}` for anything that is not a live token of this
server (expired, revoked, unknown, malformed) and never says which. Revocation of a refresh
token ends its whole grant (every token of its rotation family and the access tokens issued
with them); revocation of an access token puts its `jti` on the revoked list. Revoking an
unknown token, or one of another client, succeeds without effect (RFC 7009 section 2.2).
"""

from __future__ import annotations

import time
from typing import Any

from carebase.auth.oauth_server import OAuthServer
from carebase.auth.oauth_tokens import TokenEndpoint
from carebase.auth.opaque_tokens import digest
from carebase.errors import Unauthorized
from carebase.store.oauth_records import RefreshRecord

INACTIVE: dict[str, Any] = {"active": False}
_ACCESS_FIELDS = {
    "scope": "scope",
    "client_id": "client_id",
    "sub": "sub",
    "exp": "exp",
    "iat": "iat",
    "nbf": "nbf",
    "iss": "iss",
    "aud": "aud",
    "jti": "jti",
    "username": "username",
    "patient": "patient",
    "fhirUser": "fhirUser",
}


def _access_claims(server: OAuthServer, token: str) -> dict[str, Any] | None:
    if token.count(".") != 2:
        return None
    try:
        claims = server.tokens.decode_claims(token)
    except Unauthorized:
        return None
    if server.revoked.is_revoked(str(claims.get("jti", ""))):
        return None
    return claims


def _live_refresh(server: OAuthServer, token: str) -> RefreshRecord | None:
    record = server.records.refresh(digest(token))
    if record is None or record.revoked or record.replaced or record.expires < time.time():
        return None
    return record


def introspect(server: OAuthServer, token: str, hint: str | None = None) -> dict[str, Any]:
    """The RFC 7662 answer for `token` (`hint`: access_token or refresh_token, a lookup
    order only)."""
    if not token:
        return dict(INACTIVE)
    order = ("refresh", "access") if hint == "refresh_token" else ("access", "refresh")
    for kind in order:
        if kind == "access":
            claims = _access_claims(server, token)
            if claims is not None:
                out = {"active": True, "token_type": "Bearer"}
                out.update({k: claims[f] for k, f in _ACCESS_FIELDS.items() if f in claims})
                return out
        else:
            record = _live_refresh(server, token)
            if record is not None:
                out = {
                    "active": True,
                    "token_type": "refresh_token",
                    "scope": " ".join(record.scopes),
                    "client_id": record.client_id,
                    "sub": record.user_id,
                    "exp": record.expires,
                    "iat": record.created,
                    "iss": server.config.issuer,
                }
                if record.patient:
                    out["patient"] = record.patient
                return out
    return dict(INACTIVE)


def revoke(server: OAuthServer, client_id: str, token: str) -> bool:
    """Revoke `token` if it is a live token issued to `client_id`; whether anything was
    (both kinds are looked up, so `token_type_hint` is not needed)."""
    if not token:
        return False
    record = server.records.refresh(digest(token))
    if record is not None:
        if record.client_id != client_id:
            return False
        TokenEndpoint(server).revoke_family(record.family)
        return True
    claims = _access_claims(server, token)
    if claims is None or claims.get("client_id") != client_id:
        return False
    server.revoked.revoke([(str(claims["jti"]), int(claims["exp"]))])
    return True
