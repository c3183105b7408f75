"""JWTs signed with the server's key ring: the steps every kind of carebase token shares.

Access tokens (`auth.tokens`) and room join tokens (`telehealth.join_tokens`) are signed by
the active key of the ring and verified the same way: the algorithm pinned (RS256, so
`alg: none` and HMAC key confusion fail), the type header checked (so one kind of token is
never taken for another), the key found by its `kid`, the issuer, the audience and
`exp`/`nbf`/`iat` checked with a little clock skew, and the registered claims required.
Each caller words the refusal for its own audience from `Rejected.reason`.
"""

from __future__ import annotations

from typing import Any, Literal

import jwt

from carebase.auth.keys import SIGNING_ALGORITHM, KeyRing

#: Clock skew tolerated on exp/nbf/iat, seconds.
LEEWAY_SECONDS = 30
#: Claims every carebase token carries.
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]

Reason = Literal[
    "not-jwt", "algorithm", "type", "key", "expired", "not-yet-valid", "audience", "issuer",
    "invalid",
]  # fmt: skip


class Rejected(Exception):
    """A token that failed verification: `reason` says which step refused it, `detail`
    PyJWT's own words (for `invalid`)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason: Reason = reason
        self.detail = detail


def sign(ring: KeyRing, claims: dict[str, Any], token_type: str) -> str:
    """`claims` signed with the ring's active key, with its `kid` and type `token_type` in
    the header."""
    key = ring.active
    return jwt.encode(
        claims, key.private, algorithm=SIGNING_ALGORITHM,
        headers={"kid": key.kid, "typ": token_type},
    )  # fmt: skip


def verify(
    ring: KeyRing, token: str, *, token_type: str, audience: str, issuer: str
) -> dict[str, Any]:
    """The claims of `token` if it is a valid token of `token_type` for `audience` from
    `issuer`, signed by a key of `ring`; `Rejected` otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Rejected("not-jwt") from exc
    if header.get("alg") != SIGNING_ALGORITHM:
        raise Rejected("algorithm", f"alg {header.get('alg')!r} is not accepted")
    if header.get("typ") != token_type:
        raise Rejected("type")
    key = ring.key(str(header.get("kid") or ""))
    if key is None:
        raise Rejected("key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.public,
            algorithms=[SIGNING_ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Rejected("expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise Rejected("not-yet-valid") from exc
    except jwt.InvalidAudienceError as exc:
        raise Rejected("audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise Rejected("issuer") from exc
    except jwt.PyJWTError as exc:
        raise Rejected("invalid", str(exc)) from exc
    return claims
