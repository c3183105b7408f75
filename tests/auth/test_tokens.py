"""Access token attacks: each forged, stale or foreign token is refused with a 401 that
carries `WWW-Authenticate: Bearer error="invalid_token"`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from carebase.auth.keys import KeyRing
from carebase.auth.tokens import LEEWAY_SECONDS, TokenService
from carebase.errors import Unauthorized

ISSUER = "http://testserver"
AUDIENCE = "http://testserver/fhir"


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.open(tmp_path / "keys")


@pytest.fixture
def service(ring: KeyRing) -> TokenService:
    return TokenService(ring, issuer=ISSUER, audience=AUDIENCE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "mallory",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "scope": "system/*.cruds",
        "cb_kind": "service",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(ring: KeyRing, claims: dict[str, Any], **header: Any) -> str:
    headers = {"kid": ring.active.kid, "typ": "at+jwt", **header}
    return jwt.encode(claims, ring.active.private, algorithm="RS256", headers=headers)


def _refused(service: TokenService, token: str, *words: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        service.verify(token)
    challenge = caught.value.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    for word in words:
        assert word in caught.value.message, caught.value.message


def test_a_valid_token_gives_its_principal(service: TokenService) -> None:
    token, claims = service.issue(
        subject="u1",
        scopes=["user/*.rs", "openid"],
        role="clinician",
        username="alice",
        fhir_user="Practitioner/p1",
        organization="org1",
        patient="pat1",
    )
    principal = service.verify(token)
    assert principal.subject == "u1" and principal.role == "clinician"
    assert principal.scopes == frozenset({"user/*.rs", "openid"})
    assert (principal.fhir_user, principal.organization, principal.patient) == (
        "Practitioner/p1",
        "org1",
        "pat1",
    )
    assert principal.token_id == claims["jti"] and principal.expires_at == claims["exp"]


def test_expired(service: TokenService, ring: KeyRing) -> None:
    past = int(time.time()) - LEEWAY_SECONDS - 120
    _refused(service, _signed(ring, _claims(iat=past - 300, nbf=past - 300, exp=past)), "expired")


def test_not_yet_valid(service: TokenService, ring: KeyRing) -> None:
    future = int(time.time()) + LEEWAY_SECONDS + 600
    token = _signed(ring, _claims(nbf=future, iat=future, exp=future + 300))
    _refused(service, token)


def test_wrong_audience(service: TokenService, ring: KeyRing) -> None:
    other = TokenService(ring, issuer=ISSUER, audience="https://other.example/fhir")
    token, _ = other.issue(subject="s", scopes=["system/*.rs"], kind="service")
    _refused(service, token, "audience")


def test_wrong_issuer(service: TokenService, ring: KeyRing) -> None:
    other = TokenService(ring, issuer="https://evil.example", audience=AUDIENCE)
    token, _ = other.issue(subject="s", scopes=["system/*.rs"], kind="service")
    _refused(service, token, "another server")


def test_tampered_payload(service: TokenService) -> None:
    token, _ = service.issue(subject="s", scopes=["patient/*.rs"], kind="service")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "system/*.cruds"
    forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    _refused(service, forged)


def test_tampered_signature(service: TokenService) -> None:
    token, _ = service.issue(subject="s", scopes=["system/*.rs"], kind="service")
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 0x01
    _refused(service, ".".join([header, payload, _b64(bytes(raw))]))


def test_alg_none(service: TokenService, ring: KeyRing) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": ring.active.kid}
    token = ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(_claims()).encode()), ""])
    _refused(service, token, "alg")


def test_hs256_signed_with_the_public_key(service: TokenService, ring: KeyRing) -> None:
    # Key confusion: a verifier that let the token pick HS256 would check the HMAC with the
    # public key (which anyone can fetch from the JWKS) and accept this forgery.
    public_pem = ring.active.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": ring.active.kid}
    signing_input = ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(_claims()).encode())]
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    _refused(service, f"{signing_input}.{_b64(mac)}", "alg")


def test_unknown_kid_and_foreign_key(service: TokenService) -> None:
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        _claims(), foreign, algorithm="RS256", headers={"kid": "nope", "typ": "at+jwt"}
    )
    _refused(service, token, "not signed by a key of this server")


def test_our_key_with_a_foreign_signature_under_our_kid(
    service: TokenService, ring: KeyRing
) -> None:
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    headers = {"kid": ring.active.kid, "typ": "at+jwt"}
    _refused(service, jwt.encode(_claims(), foreign, algorithm="RS256", headers=headers))


def test_an_id_token_is_not_an_access_token(service: TokenService, ring: KeyRing) -> None:
    _refused(service, _signed(ring, _claims(), typ="JWT"), "not an access token")


@pytest.mark.parametrize("missing", ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"])
def test_a_required_claim_missing(service: TokenService, ring: KeyRing, missing: str) -> None:
    _refused(service, _signed(ring, _claims(**{missing: None})))


def test_unknown_caller_kind(service: TokenService, ring: KeyRing) -> None:
    _refused(service, _signed(ring, _claims(cb_kind="development")), "unknown kind")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "e30.e30.", "Bearer x.y.z"])
def test_garbage(service: TokenService, garbage: str) -> None:
    _refused(service, garbage)


def test_revoked_token(ring: KeyRing) -> None:
    revoked: set[str] = set()
    service = TokenService(ring, issuer=ISSUER, audience=AUDIENCE, is_revoked=revoked.__contains__)
    token, claims = service.issue(subject="s", scopes=["system/*.rs"], kind="service")
    assert service.verify(token).subject == "s"
    revoked.add(claims["jti"])
    _refused(service, token, "revoked")  # also when the first check was cached
