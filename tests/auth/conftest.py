"""Fixtures of the auth tests: a settable clock, a UserDirectory and an authorization server
over the test store (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from auth_helpers import FAST, Clock

from carebase.auth.keys import KeyRing
from carebase.auth.oauth_server import OAuthConfig, OAuthServer
from carebase.auth.revocation_list import RevokedTokens
from carebase.auth.tokens import TokenService
from carebase.auth.users import UserDirectory
from carebase.store.base import Store
from carebase.store.oauth_records import OAuthRecords
from oauth_helpers import CLINICIAN, FHIR_BASE, ISSUER, PATIENT, RESEARCHER, Accounts


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory(store: Store, clock: Clock) -> UserDirectory:
    """Users in the test store (SQLite and PostgreSQL), with the hand-moved clock."""
    return UserDirectory(store, passwords=FAST, clock=clock)


@pytest.fixture(scope="session")
def key_ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    """One signing key ring for the session (RSA key generation is slow)."""
    return KeyRing.open(Path(tmp_path_factory.mktemp("keys")))


@pytest.fixture
def server(store: Store, key_ring: KeyRing) -> OAuthServer:
    """The authorization server on the test store, with three users."""
    records = OAuthRecords(store)
    revoked = RevokedTokens(records)
    tokens = TokenService(
        key_ring, issuer=ISSUER, audience=FHIR_BASE, ttl=300, is_revoked=revoked.is_revoked
    )
    config = OAuthConfig(issuer=ISSUER, fhir_base=FHIR_BASE)
    return OAuthServer(records, tokens, revoked, config, Accounts(CLINICIAN, PATIENT, RESEARCHER))
