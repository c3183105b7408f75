"""`private_key_jwt` client authentication (RFC 7523, SMART Backend Services).

A client proves who it is with a short-lived JWT signed by a key from its registered JWKS:
`iss` = `sub` = its client_id, `aud` = our token endpoint URL, `exp` at most five minutes
ahead, and a `jti` it never used before. Only asymmetric algorithms are accepted (RS384 and
ES384 as SMART requires, RS256 and ES256 too), and the key type must fit the algorithm, so
`alg: none` and HS256 "signed" with a public key fail before any signature check.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

from carebase.auth.oauth_errors import invalid_client
from carebase.store.oauth_records import ClientRecord, OAuthRecords

#: client_assertion_type of a JWT client assertion (RFC 7523 section 2.2)
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: accepted signature algorithms, each with the key type it needs
ASSERTION_ALGORITHMS = {"RS384": "RSA", "ES384": "EC", "RS256": "RSA", "ES256": "EC"}
#: the furthest ahead an assertion may expire (SMART Backend Services: five minutes)
MAX_LIFETIME_SECONDS = 300
_LEEWAY = 30


def _candidate_keys(client: ClientRecord, header: dict[str, Any], alg: str) -> list[Any]:
    keys = (client.jwks or {}).get("keys", [])
    kid = header.get("kid")
    wanted_kty = ASSERTION_ALGORITHMS[alg]
    found = []
    for jwk in keys:
        if jwk.get("kty") != wanted_kty:
            continue
        if kid is not None and jwk.get("kid") != kid:
            continue
        if jwk.get("alg") not in (None, alg):
            continue
        try:
            found.append(jwt.PyJWK(jwk, algorithm=alg).key)
        except (jwt.PyJWTError, ValueError, KeyError):
            continue  # a key of another curve or size than the algorithm needs
    return found


def _problem(exc: jwt.PyJWTError, token_url: str) -> str:
    """What is wrong with an assertion PyJWT refused, in words for the client developer."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"client_assertion lacks the {exc.claim} claim"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"client_assertion aud must be the token endpoint URL {token_url}"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "client_assertion iss must equal the client_id"
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "client_assertion has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "client_assertion is not valid yet (nbf/iat in the future)"
    return f"client_assertion rejected: {exc}"


def verify_client_assertion(
    assertion: str,
    client: ClientRecord,
    *,
    token_url: str,
    records: OAuthRecords,
    now: float | None = None,
) -> dict[str, Any]:
    """The verified claims of `client`'s assertion, remembering its jti; invalid_client
    (401) for anything wrong, with a description saying what."""
    if not client.jwks:
        raise invalid_client("This client has no registered JWKS for private_key_jwt")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise invalid_client("client_assertion is not a JWT") from exc
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise invalid_client(
            f"client_assertion alg {alg!r} is not accepted; use one of "
            + ", ".join(ASSERTION_ALGORITHMS)
        )
    keys = _candidate_keys(client, header, alg)
    if not keys:
        raise invalid_client("No key of the client's JWKS matches the assertion's kid and alg")
    claims: dict[str, Any] | None = None
    for key in keys:
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=[alg],
                audience=token_url,
                issuer=client.client_id,
                leeway=_LEEWAY,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise invalid_client(_problem(exc, token_url)) from exc
    if claims is None:
        raise invalid_client("client_assertion signature does not verify with the client's keys")
    if claims.get("sub") != client.client_id:
        raise invalid_client("client_assertion sub must equal the client_id")
    current = time.time() if now is None else now
    exp = int(claims["exp"])
    if exp > current + MAX_LIFETIME_SECONDS + _LEEWAY:
        raise invalid_client("client_assertion exp is more than five minutes ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise invalid_client("client_assertion needs a jti string")
    if not records.remember_assertion(client.client_id, jti, exp + _LEEWAY):
        raise invalid_client("client_assertion jti was used before (replay)")
    return claims
