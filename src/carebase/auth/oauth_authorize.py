"""The authorization endpoint's logic (SMART App Launch 2.x), without the HTTP.

`parse_authorization` checks a request in an order that keeps redirects safe: first the
client and its exactly-registered redirect URI (failures there are shown to the user, never
redirected: no open redirect), then everything else (failures are sent back to the client's
redirect URI with `state`). PKCE with S256 is required of every client; `plain` or a missing
challenge is refused (no downgrade). `aud` must be this server's FHIR base URL.

`grant_for` narrows the scopes by the user's role and settles the patient context: from the
EHR launch, the patient user's own record, or a patient the user picks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from carebase.auth.oauth_errors import OAuthError, invalid_request, invalid_scope
from carebase.auth.oauth_scopes import narrow_scopes, requested_scopes
from carebase.auth.oauth_server import Account, OAuthServer
from carebase.auth.opaque_tokens import digest, new_opaque, valid_challenge
from carebase.auth.roles import permitted_scopes
from carebase.auth.scopes import parse_scope
from carebase.store.oauth_records import ClientRecord, CodeRecord, LaunchRecord

#: The parameters an authorization request may carry (a consent form posts them back).
AUTHORIZE_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
    "launch",
    "nonce",
)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request."""

    client: ClientRecord
    redirect_uri: str
    #: the requested scopes narrowed to what the client may ask for
    scopes: tuple[str, ...]
    state: str
    code_challenge: str
    nonce: str | None
    launch: LaunchRecord | None
    #: the raw parameters, for the consent form to post back
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Grant:
    """What the user is asked to approve: the scopes after their role, and the patient."""

    scopes: tuple[str, ...]
    patient: str | None
    encounter: str | None
    #: a patient must still be chosen (standalone launch by a non-patient user)
    needs_patient: bool


def error_redirect(redirect_uri: str, error: OAuthError, state: str | None, issuer: str) -> str:
    """The client's redirect URI carrying an OAuth error (RFC 6749 4.1.2.1)."""
    params = {"error": error.error, "error_description": error.description}
    if state:
        params["state"] = state
    params["iss"] = issuer
    return _with_query(redirect_uri, params)


def code_redirect(redirect_uri: str, code: str, state: str, issuer: str) -> str:
    """The client's redirect URI carrying the code, `state` and (RFC 9207) `iss`."""
    return _with_query(redirect_uri, {"code": code, "state": state, "iss": issuer})


def _with_query(uri: str, params: Mapping[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


def trusted_client(server: OAuthServer, params: Mapping[str, str]) -> tuple[ClientRecord, str]:
    """The client and its exactly-registered redirect URI; a non-redirectable OAuthError
    (shown as a page) when either cannot be trusted."""
    client_id = params.get("client_id", "")
    if not client_id:
        raise invalid_request("client_id is missing", redirectable=False)
    client = server.registry.get(client_id)
    if client is None or client.disabled:
        raise OAuthError(
            "unauthorized_client",
            f"The application {client_id!r} is not registered here or has been disabled",
            redirectable=False,
        )
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri:
        raise invalid_request("redirect_uri is missing", redirectable=False)
    if redirect_uri not in client.redirect_uris:  # exact string comparison, nothing looser
        raise invalid_request(
            f"redirect_uri {redirect_uri!r} is not registered for this application",
            redirectable=False,
        )
    return client, redirect_uri


def parse_authorization(
    server: OAuthServer, params: Mapping[str, str], *, now: float | None = None
) -> AuthorizationRequest:
    """The checked request; OAuthError (redirectable or not, see the module docstring)."""
    client, redirect_uri = trusted_client(server, params)
    if params.get("response_type") != "code":
        raise OAuthError("unsupported_response_type", "response_type must be code")
    state = params.get("state", "")
    if not state:
        raise invalid_request("state is required")
    method = params.get("code_challenge_method")
    if method != "S256":
        raise invalid_request(
            f"PKCE is required with code_challenge_method=S256 (got {method or 'none'})"
        )
    challenge = params.get("code_challenge", "")
    if not valid_challenge(challenge):
        raise invalid_request("code_challenge must be a base64url SHA-256 digest (43 chars)")
    aud = params.get("aud", "")
    if aud.rstrip("/") != server.config.fhir_base.rstrip("/"):
        raise invalid_request(f"aud must be this server's FHIR base URL {server.config.fhir_base}")
    wanted = requested_scopes(params.get("scope"))
    scopes = narrow_scopes(client.scopes, wanted)
    if not scopes:
        raise invalid_scope("None of the requested scopes is allowed for this application")
    launch = None
    if params.get("launch"):
        launch = server.records.launch(params["launch"])
        current = time.time() if now is None else now
        if launch is None or launch.expires < current:
            raise invalid_request("The launch id is unknown or has expired; launch again")
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        scopes=tuple(scopes),
        state=state,
        code_challenge=challenge,
        nonce=params.get("nonce") or None,
        launch=launch,
        params=tuple((k, params[k]) for k in AUTHORIZE_PARAMETERS if params.get(k)),
    )


def _wants_patient(scopes: tuple[str, ...]) -> bool:
    if "launch/patient" in scopes:
        return True
    return any((p := parse_scope(s)) is not None and p.context == "patient" for s in scopes)


def grant_for(request: AuthorizationRequest, user: Account) -> Grant:
    """The scopes `user` may grant (their role's ceiling) and the patient context."""
    scopes = tuple(permitted_scopes(user.role, request.scopes))
    if not any(parse_scope(s) is not None for s in scopes) and not {"openid"} & set(scopes):
        raise OAuthError("access_denied", f"A {user.role} user may grant none of these scopes")
    launch = request.launch
    if launch is not None:
        if launch.user_id != str(user.id):
            raise OAuthError("access_denied", "This launch was started by another user")
        return Grant(scopes, launch.patient, launch.encounter, needs_patient=False)
    if not _wants_patient(scopes):
        return Grant(scopes, None, None, needs_patient=False)
    if user.role == "patient":
        if not user.patient:
            raise OAuthError("access_denied", "This patient login is not linked to a record")
        return Grant(scopes, user.patient, None, needs_patient=False)
    return Grant(scopes, None, None, needs_patient=True)


def issue_code(
    server: OAuthServer, request: AuthorizationRequest, user: Account, grant: Grant
) -> str:
    """Store a new authorization code for an approved grant; the code (shown once)."""
    if grant.needs_patient:
        raise invalid_request("A patient must be chosen before the code is issued")
    code = new_opaque()
    server.records.add_code(
        CodeRecord(
            code_hash=digest(code),
            client_id=request.client.client_id,
            user_id=str(user.id),
            redirect_uri=request.redirect_uri,
            scopes=grant.scopes,
            code_challenge=request.code_challenge,
            patient=grant.patient,
            encounter=grant.encounter,
            nonce=request.nonce,
            expires=int(time.time()) + server.config.code_ttl,
            used=False,
            ehr_launch=request.launch is not None,
        )
    )
    return code


def create_launch(
    server: OAuthServer, user_id: str, patient: str | None, encounter: str | None = None
) -> str:
    """A new EHR launch id for `patient` (and encounter), valid for `launch_ttl` seconds."""
    launch_id = new_opaque(16)
    server.records.add_launch(
        LaunchRecord(
            launch_id, patient, encounter, user_id, int(time.time()) + server.config.launch_ttl
        )
    )
    return launch_id


def with_patient(grant: Grant, patient_id: str) -> Grant:
    """The grant with the patient the user picked."""
    return Grant(grant.scopes, patient_id, grant.encounter, needs_patient=False)
