"""Helpers of the OAuth tests: PKCE pairs, client keys and signed client assertions, and a
small user table standing in for the user directory in the pure-logic tests."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from carebase.auth.client_assertion import JWT_BEARER_ASSERTION
from carebase.auth.opaque_tokens import new_opaque, s256

FHIR_BASE = "http://testserver/fhir"
ISSUER = "http://testserver"
TOKEN_URL = f"{ISSUER}/oauth/token"
REDIRECT = "https://app.example/cb"


def pkce() -> tuple[str, str]:
    """A fresh (verifier, S256 challenge) pair."""
    verifier = new_opaque(48)
    return verifier, s256(verifier)


@dataclass
class ClientKey:
    """A backend client's key pair: the private key signs, `jwks` is what gets registered."""

    private: Any
    alg: str
    kid: str

    @property
    def jwks(self) -> dict[str, Any]:
        """The public JWKS to register."""
        algo = RSAAlgorithm if self.alg.startswith("RS") else ECAlgorithm
        jwk = algo.to_jwk(self.private.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": self.alg})
        return {"keys": [jwk]}

    def assertion(self, client_id: str, **overrides: Any) -> str:
        """A client assertion for the token endpoint (claims overridable, None drops one)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": client_id,
            "sub": client_id,
            "aud": TOKEN_URL,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


def rsa_key(alg: str = "RS384") -> ClientKey:
    """A new RSA client key."""
    return ClientKey(rsa.generate_private_key(65537, 2048), alg, uuid.uuid4().hex[:8])


def ec_key(alg: str = "ES384") -> ClientKey:
    """A new EC client key on the curve `alg` needs."""
    curve = ec.SECP384R1() if alg == "ES384" else ec.SECP256R1()
    return ClientKey(ec.generate_private_key(curve), alg, uuid.uuid4().hex[:8])


def assertion_form(assertion: str, **extra: str) -> dict[str, str]:
    """A client_credentials token request form authenticated by `assertion`."""
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER_ASSERTION,
        "client_assertion": assertion,
        **extra,
    }


@dataclass
class Account:
    """A user as the OAuth flows see one."""

    id: str
    username: str
    role: str
    fhir_user: str | None = None
    patient: str | None = None
    organization: str | None = None
    disabled: bool = False


class Accounts:
    """An in-memory user table with the directory's `by_id` (pure-logic tests only; the HTTP
    tests use the real user directory)."""

    def __init__(self, *users: Account) -> None:
        self.users = {u.id: u for u in users}

    def by_id(self, user_id: Any) -> Account | None:
        return self.users.get(user_id)


CLINICIAN = Account("1", "dr.who", "clinician", fhir_user="Practitioner/p1", organization="o1")
PATIENT = Account("2", "amy", "patient", fhir_user="Patient/pat1", patient="pat1")
RESEARCHER = Account("3", "rita", "researcher")
