"""The token endpoint's grants: authorization_code (PKCE S256, single use), refresh_token
(rotation with replay detection) and client_credentials (SMART Backend Services).

Codes and refresh tokens are looked up by hash. A code presented twice revokes the tokens
issued from it; a rotated refresh token presented again revokes its whole family (and the
access tokens issued with it), since one of the two presenters must be a thief.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from carebase.auth.keys import SIGNING_ALGORITHM
from carebase.auth.oauth_client_auth import authenticate_client
from carebase.auth.oauth_errors import OAuthError, invalid_grant, invalid_request, invalid_scope
from carebase.auth.oauth_scopes import narrow_scopes, requested_scopes, within
from carebase.auth.oauth_server import Account, OAuthServer
from carebase.auth.opaque_tokens import digest, new_opaque, verifier_matches
from carebase.auth.roles import permitted_scopes
from carebase.store.oauth_records import ClientRecord, RefreshRecord

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")


def absolute_fhir_user(fhir_base: str, fhir_user: str) -> str:
    """`fhirUser` as the absolute URL SMART asks for ("Practitioner/1" -> base/Practitioner/1)."""
    if "://" in fhir_user:
        return fhir_user
    return f"{fhir_base.rstrip('/')}/{fhir_user}"


@dataclass(frozen=True, slots=True)
class _Grant:
    """What a user authorized a client to do: the grant's scopes and launch context, and the
    refresh family it continues (with the refresh token being rotated)."""

    client: ClientRecord
    user: Account
    scopes: list[str]
    patient: str | None
    encounter: str | None
    ehr_launch: bool
    family: str | None = None
    rotating: str | None = None


class TokenEndpoint:
    """POST /oauth/token, without the HTTP."""

    def __init__(self, server: OAuthServer) -> None:
        self.server = server

    def exchange(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """The token response for a token request (raises OAuthError)."""
        grant_type = form.get("grant_type")
        if grant_type not in GRANT_TYPES:
            raise OAuthError(
                "unsupported_grant_type",
                f"grant_type {grant_type!r} is not supported; use one of {', '.join(GRANT_TYPES)}",
            )
        client = authenticate_client(self.server, form, authorization)
        if grant_type == "authorization_code":
            return self._authorization_code(client, form)
        if grant_type == "refresh_token":
            return self._refresh_token(client, form)
        return self._client_credentials(client, form)

    # --- grants -------------------------------------------------------------------------------
    def _authorization_code(self, client: ClientRecord, form: Mapping[str, str]) -> dict[str, Any]:
        if client.kind == "backend":
            raise OAuthError("unauthorized_client", "A backend client uses client_credentials")
        code, redirect_uri, verifier = (
            form.get(k) for k in ("code", "redirect_uri", "code_verifier")
        )
        if not code:
            raise invalid_request("code is missing")
        if not redirect_uri:
            raise invalid_request("redirect_uri is missing")
        if not verifier:
            raise invalid_request("code_verifier is missing (PKCE is required)")
        record, first_use = self.server.records.use_code(digest(code))
        if record is None or record.client_id != client.client_id:
            raise invalid_grant("The authorization code is unknown or was issued to another client")
        if not first_use:
            self._revoke_code_tokens(
                record.refresh_family, record.access_jti, record.access_expires
            )
            raise invalid_grant(
                "The authorization code was already used; the tokens issued from it are revoked"
            )
        if record.expires < time.time():
            raise invalid_grant("The authorization code has expired; authorize again")
        if redirect_uri != record.redirect_uri:
            raise invalid_grant("redirect_uri differs from the one of the authorization request")
        if not verifier_matches(verifier, record.code_challenge):
            raise invalid_grant("code_verifier does not match the code_challenge (PKCE)")
        user = self._user(record.user_id)
        grant = _Grant(
            client, user, permitted_scopes(user.role, record.scopes), record.patient,
            record.encounter, record.ehr_launch,
        )  # fmt: skip
        response, family, jti, exp = self._user_tokens(grant, grant.scopes, nonce=record.nonce)
        self.server.records.link_code_tokens(record.code_hash, family, jti, exp)
        return response

    def _refresh_token(self, client: ClientRecord, form: Mapping[str, str]) -> dict[str, Any]:
        presented = form.get("refresh_token")
        if not presented:
            raise invalid_request("refresh_token is missing")
        records = self.server.records
        record = records.refresh(digest(presented))
        if record is None or record.client_id != client.client_id:
            raise invalid_grant("The refresh token is unknown or was issued to another client")
        if record.revoked:
            raise invalid_grant("The refresh token has been revoked")
        if record.replaced:
            self.revoke_family(record.family)
            raise invalid_grant(
                "The refresh token was already used (replay); every token of its grant is revoked"
            )
        if record.expires < time.time():
            raise invalid_grant("The refresh token has expired; authorize again")
        access_scopes = list(record.scopes)
        if form.get("scope"):
            wanted = requested_scopes(form["scope"])
            if not within(record.scopes, wanted):
                raise invalid_scope("A refresh may not ask for scopes beyond those granted")
            access_scopes = wanted
        user = self._user(record.user_id)
        # the role is applied again: a user whose role changed gets no more than it allows now
        grant = _Grant(
            client, user, permitted_scopes(user.role, record.scopes), record.patient,
            record.encounter, record.ehr_launch, family=record.family, rotating=record.token_hash,
        )  # fmt: skip
        scopes = permitted_scopes(user.role, access_scopes)
        response, _, _, _ = self._user_tokens(grant, scopes, nonce=None)
        return response

    def _client_credentials(self, client: ClientRecord, form: Mapping[str, str]) -> dict[str, Any]:
        if client.kind != "backend":
            raise OAuthError(
                "unauthorized_client", "client_credentials is for backend clients (private_key_jwt)"
            )
        wanted = requested_scopes(form.get("scope"))
        if not wanted:
            raise invalid_scope("scope is required (system/ scopes such as system/*.rs)")
        scopes = permitted_scopes("service", narrow_scopes(client.scopes, wanted))
        if not scopes:
            raise invalid_scope(f"None of {' '.join(wanted)} is allowed for this client")
        token, claims = self.server.tokens.issue(
            subject=client.client_id, scopes=scopes, kind="service", role="service",
            username=client.name, client_id=client.client_id,
        )  # fmt: skip
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": claims["exp"] - claims["iat"],
            "scope": claims["scope"],
        }

    # --- shared -------------------------------------------------------------------------------
    def _user(self, user_id: str) -> Account:
        user = self.server.account(user_id)
        if user is None:
            raise invalid_grant("The user of this grant no longer exists or is disabled")
        return user

    def _user_tokens(
        self, grant: _Grant, scopes: list[str], *, nonce: str | None
    ) -> tuple[dict[str, Any], str | None, str, int]:
        """The token response of a user grant: an access token with `scopes` (within the
        grant's), a rotated or new refresh token when the grant has offline/online access,
        an id_token for openid. Returns (response, refresh family, access jti, its exp)."""
        client, user = grant.client, grant.user
        scopes = narrow_scopes(client.scopes, scopes)
        if not scopes:
            raise invalid_scope("No requested scope may be granted to this client and user")
        access, claims = self.server.tokens.issue(
            subject=str(user.id), scopes=scopes, kind="user", role=user.role,
            username=user.username, fhir_user=user.fhir_user, patient=grant.patient,
            organization=user.organization, client_id=client.client_id,
        )  # fmt: skip
        response: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": claims["exp"] - claims["iat"],
            "scope": claims["scope"],
        }
        if grant.patient:
            response["patient"] = grant.patient
        if grant.encounter:
            response["encounter"] = grant.encounter
        if grant.patient or grant.encounter:
            # inside an EHR launch the EHR shows its own patient banner; standalone apps must
            response["need_patient_banner"] = not grant.ehr_launch
        family = grant.family
        ttl = self._refresh_ttl(grant.scopes)
        if ttl:
            refresh = new_opaque()
            family = family or uuid.uuid4().hex
            now = int(time.time())
            record = RefreshRecord(
                token_hash=digest(refresh), family=family, client_id=client.client_id,
                user_id=str(user.id), scopes=tuple(grant.scopes), patient=grant.patient,
                encounter=grant.encounter, expires=now + ttl, ehr_launch=grant.ehr_launch,
                access_jti=claims["jti"], access_expires=claims["exp"], created=now,
            )  # fmt: skip
            if grant.rotating is None:
                self.server.records.add_refresh(record)
            elif not self.server.records.rotate_refresh(grant.rotating, record):
                # someone rotated it between our read and now: the same replay as above
                self.server.revoked.revoke([(claims["jti"], claims["exp"])])
                self.revoke_family(family)
                raise invalid_grant("The refresh token was already used (replay); grant revoked")
            response["refresh_token"] = refresh
        if "openid" in scopes:
            response["id_token"] = self._id_token(client, user, scopes, nonce)
        return response, family, claims["jti"], claims["exp"]

    def _refresh_ttl(self, scopes: list[str]) -> int:
        if "offline_access" in scopes:
            return self.server.config.offline_ttl
        if "online_access" in scopes:
            return self.server.config.online_ttl
        return 0

    def _id_token(
        self, client: ClientRecord, user: Account, scopes: list[str], nonce: str | None
    ) -> str:
        """The OpenID Connect id_token: signed by the key ring, audience the client."""
        now = int(time.time())
        config = self.server.config
        claims: dict[str, Any] = {
            "iss": config.issuer,
            "sub": str(user.id),
            "aud": client.client_id,
            "iat": now,
            "exp": now + config.id_token_ttl,
            "preferred_username": user.username,
        }
        if nonce:
            claims["nonce"] = nonce
        if "fhirUser" in scopes and user.fhir_user:
            claims["fhirUser"] = absolute_fhir_user(config.fhir_base, user.fhir_user)
        key = self.server.tokens.ring.active
        return jwt.encode(
            claims, key.private, algorithm=SIGNING_ALGORITHM, headers={"kid": key.kid, "typ": "JWT"}
        )

    def revoke_family(self, family: str) -> None:
        """Revoke every refresh token of a grant and the access tokens issued with them."""
        self.server.revoked.revoke(self.server.records.revoke_family(family))

    def _revoke_code_tokens(
        self, family: str | None, access_jti: str | None, access_expires: int | None
    ) -> None:
        if family:
            self.revoke_family(family)
        if access_jti and access_expires:
            self.server.revoked.revoke([(access_jti, access_expires)])
