"""Access tokens: short-lived JWTs (RFC 9068 `at+jwt`) signed by the key ring, and their check.

Verification pins the algorithm (RS256, so `alg: none` and HMAC key confusion fail), the
issuer, the audience (the FHIR base URL), `exp`/`nbf`/`iat` and the token type. A verified
token's Principal is cached until the token expires, so a busy client pays for one RSA check.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from carebase.auth import signed_jwt
from carebase.auth.keys import KeyRing
from carebase.auth.principal import Principal
from carebase.config import Settings
from carebase.errors import Unauthorized

ACCESS_TOKEN_TYPE = "at+jwt"
#: Clock skew tolerated on exp/nbf/iat, seconds.
LEEWAY_SECONDS = signed_jwt.LEEWAY_SECONDS
#: What a 401 says for each way an access token fails (`signed_jwt.Rejected.reason`).
_REFUSALS: dict[signed_jwt.Reason, str] = {
    "not-jwt": "it is not a JWT",
    "algorithm": "its algorithm is not accepted",
    "type": "it is not an access token",
    "key": "it was not signed by a key of this server",
    "expired": "it has expired",
    "not-yet-valid": "it is not valid yet",
    "audience": "it was issued for another audience",
    "issuer": "it was issued by another server",
    "invalid": "its signature or claims are not valid",
}
_CACHE_SIZE = 10_000


def bearer_challenge(error: str | None = None, description: str | None = None) -> str:
    """The `WWW-Authenticate` value of a 401 (RFC 6750 section 3)."""
    parts = ['Bearer realm="carebase"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'")))
    return ", ".join(parts)


def invalid_token(description: str) -> Unauthorized:
    """The 401 for a token that is missing, malformed, expired or not ours."""
    return Unauthorized(
        f"The access token is not valid: {description}",
        headers={"WWW-Authenticate": bearer_challenge("invalid_token", description)},
    )


class TokenService:
    """Issues and verifies carebase access tokens."""

    def __init__(
        self,
        ring: KeyRing,
        *,
        issuer: str,
        audience: str,
        ttl: int = 300,
        is_revoked: Callable[[str], bool] | None = None,
    ) -> None:
        self.ring = ring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        #: asked with a token's `jti` on every check (revocation before expiry)
        self.is_revoked = is_revoked
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        ttl: int | None = None,
        is_revoked: Callable[[str], bool] | None = None,
    ) -> TokenService:
        """The token service of the server `settings` describe: its key ring, its issuer, its
        FHIR base as audience, and its token lifetime (unless `ttl` is given)."""
        return cls(
            KeyRing.open(settings.keys_dir),
            issuer=settings.token_issuer,
            audience=settings.fhir_base,
            ttl=settings.access_token_ttl if ttl is None else ttl,
            is_revoked=is_revoked,
        )

    def issue(
        self,
        *,
        subject: str,
        scopes: Iterable[str],
        kind: str = "user",
        role: str | None = None,
        username: str | None = None,
        fhir_user: str | None = None,
        patient: str | None = None,
        organization: str | None = None,
        client_id: str | None = None,
        ttl: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A signed access token and its claims."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + (ttl if ttl is not None else self.ttl),
            "jti": uuid.uuid4().hex,
            "scope": " ".join(dict.fromkeys(scopes)),
            "cb_kind": kind,
        }
        optional = {
            "role": role,
            "username": username,
            "fhirUser": fhir_user,
            "patient": patient,
            "org": organization,
            "client_id": client_id,
        }
        claims.update({k: v for k, v in optional.items() if v is not None})
        return signed_jwt.sign(self.ring, claims, ACCESS_TOKEN_TYPE), claims

    def verify(self, token: str) -> Principal:
        """The Principal of a valid access token; `invalid_token` 401 otherwise."""
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at is not None and cached.expires_at + LEEWAY_SECONDS > time.time():
                if self.is_revoked is None or not self.is_revoked(cached.token_id or ""):
                    return cached
                raise invalid_token("it has been revoked")
            with self._cache_lock:
                self._cache.pop(token, None)
        principal = self._decode(token)
        if self.is_revoked is not None and self.is_revoked(principal.token_id or ""):
            raise invalid_token("it has been revoked")
        with self._cache_lock:
            self._cache[token] = principal
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return principal

    def decode_claims(self, token: str) -> dict[str, Any]:
        """The verified claims of one of our access tokens (for introspection)."""
        try:
            return signed_jwt.verify(
                self.ring, token, token_type=ACCESS_TOKEN_TYPE, audience=self.audience,
                issuer=self.issuer,
            )  # fmt: skip
        except signed_jwt.Rejected as exc:
            raise invalid_token(exc.detail or _REFUSALS[exc.reason]) from exc

    def _decode(self, token: str) -> Principal:
        claims = self.decode_claims(token)
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise invalid_token("its scope claim is not a string")
        kind = claims.get("cb_kind", "user")
        if kind not in ("user", "service"):
            raise invalid_token("it names an unknown kind of caller")
        return Principal(
            subject=str(claims["sub"]),
            kind=kind,
            role=claims.get("role"),
            username=claims.get("username"),
            fhir_user=claims.get("fhirUser"),
            patient=claims.get("patient"),
            organization=claims.get("org"),
            scopes=frozenset(scope.split()),
            client_id=claims.get("client_id"),
            token_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
        )
