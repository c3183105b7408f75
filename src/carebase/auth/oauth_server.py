"""The authorization server's parts in one object: settings, records, client registry, token
service, revocation list and the user directory the flows look users up in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from carebase.auth.clients import ClientRegistry
from carebase.auth.oauth_errors import invalid_client
from carebase.auth.revocation_list import RevokedTokens
from carebase.auth.tokens import TokenService
from carebase.store.oauth_records import ClientRecord, OAuthRecords


class Account(Protocol):
    """What the flows need of a user (`carebase.auth.users.User` has it)."""

    @property
    def id(self) -> Any: ...
    @property
    def username(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def fhir_user(self) -> str | None: ...
    @property
    def patient(self) -> str | None: ...
    @property
    def organization(self) -> str | None: ...
    @property
    def disabled(self) -> bool: ...


class AccountLookup(Protocol):
    """Finds users by id (`carebase.auth.users.UserDirectory` does)."""

    def by_id(self, user_id: Any) -> Account | None: ...


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """URLs and lifetimes of the authorization server."""

    #: the server's origin, `iss` of its tokens (Settings.token_issuer)
    issuer: str
    #: the FHIR base URL, the `aud` every authorization request must name
    fhir_base: str
    #: authorization codes live this long (seconds)
    code_ttl: int = 60
    #: refresh tokens of `offline_access` grants (30 days) and of `online_access` (8 hours)
    offline_ttl: int = 30 * 86_400
    online_ttl: int = 8 * 3_600
    #: EHR launch ids are valid this long
    launch_ttl: int = 300
    #: id tokens live this long
    id_token_ttl: int = 300

    @property
    def token_url(self) -> str:
        """The token endpoint's URL (the `aud` of client assertions)."""
        return f"{self.issuer}/oauth/token"

    @property
    def authorize_url(self) -> str:
        """The authorization endpoint's URL."""
        return f"{self.issuer}/oauth/authorize"


class OAuthServer:
    """Everything the OAuth endpoints share, built once per app."""

    def __init__(
        self,
        records: OAuthRecords,
        tokens: TokenService,
        revoked: RevokedTokens,
        config: OAuthConfig,
        users: AccountLookup | None = None,
    ) -> None:
        self.records = records
        self.registry = ClientRegistry(records)
        self.tokens = tokens
        self.revoked = revoked
        self.config = config
        #: set once the user directory exists (flows with users refuse to run without it)
        self.users = users

    def enabled_client(self, client_id: str) -> ClientRecord:
        """The registered, enabled client with this id; invalid_client otherwise."""
        client = self.registry.get(client_id)
        if client is None:
            raise invalid_client(f"Unknown client_id {client_id!r}")
        if client.disabled:
            raise invalid_client(f"Client {client_id!r} is disabled")
        return client

    def account(self, user_id: str) -> Account | None:
        """The enabled user with this id, or None (unknown, disabled, or no directory)."""
        if self.users is None:
            return None
        user = self.users.by_id(user_id)
        if user is None or user.disabled:
            return None
        return user
