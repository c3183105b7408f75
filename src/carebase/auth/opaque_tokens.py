"""Opaque credentials (client secrets, authorization codes, refresh tokens, launch ids) and
the PKCE S256 check: random values from `secrets`, stored only as SHA-256 hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

#: RFC 7636 section 4.1: 43 to 128 characters of [A-Z a-z 0-9 - . _ ~]
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
#: a base64url SHA-256 digest without padding
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def new_opaque(nbytes: int = 32) -> str:
    """A fresh unguessable value (256 bits by default), URL-safe."""
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> str:
    """The SHA-256 hex digest under which an opaque credential is stored. Our credentials
    carry 256 random bits, so a fast hash is enough (no password stretching needed)."""
    return hashlib.sha256(value.encode()).hexdigest()


def digest_matches(value: str, stored: str) -> bool:
    """Whether `value` hashes to `stored`, compared in constant time."""
    return hmac.compare_digest(digest(value), stored)


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a code verifier: BASE64URL(SHA256(verifier)), unpadded."""
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def valid_challenge(challenge: str) -> bool:
    """Whether `challenge` has the shape of an S256 code challenge."""
    return _CHALLENGE.fullmatch(challenge) is not None


def verifier_matches(verifier: str, challenge: str) -> bool:
    """Whether a well-formed `verifier` hashes to the stored S256 `challenge`."""
    if _VERIFIER.fullmatch(verifier) is None:
        return False
    return hmac.compare_digest(s256(verifier), challenge)
