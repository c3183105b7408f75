"""HTTP endpoints of the authorization server: SMART discovery, JWKS, token, introspection,
revocation and EHR launch creation. Every answer is JSON with `Cache-Control: no-store`;
errors are RFC 6749 `{"error", "error_description"}` objects with their status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from carebase.auth.client_assertion import ASSERTION_ALGORITHMS
from carebase.auth.oauth_authorize import create_launch
from carebase.auth.oauth_client_auth import AUTH_METHODS, authenticate_client
from carebase.auth.oauth_errors import OAuthError, invalid_client, invalid_request
from carebase.auth.oauth_introspect import introspect, revoke
from carebase.auth.oauth_server import OAuthServer
from carebase.auth.oauth_tokens import GRANT_TYPES, TokenEndpoint
from carebase.auth.principal import Principal
from carebase.auth.scopes import NON_RESOURCE_SCOPES
from carebase.errors import CarebaseError
from carebase.store.base import Store
from carebase.web import sessions_http
from carebase.web.login_routes import audit

log = logging.getLogger("carebase.oauth")

#: The largest form body an OAuth endpoint reads.
MAX_FORM_BYTES = 64 * 1024
#: Users who may start an EHR launch.
LAUNCHING_ROLES = frozenset({"admin", "clinician", "nurse"})
CAPABILITIES = (
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
    "authorize-post",
)
_ERROR_BY_STATUS = {401: "invalid_token", 403: "access_denied", 503: "temporarily_unavailable"}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

Endpoint = Callable[[Request], Awaitable[Response]]


def oauth_json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON answer that no cache keeps."""
    return JSONResponse(body, status, {**_NO_STORE, **(headers or {})})


def oauth_error(exc: OAuthError) -> Response:
    """An RFC 6749 error response."""
    return oauth_json(exc.body(), exc.status, exc.headers)


def _json_errors(endpoint: Endpoint) -> Endpoint:
    """Turn every failure of an OAuth endpoint into an RFC 6749 JSON error."""

    @wraps(endpoint)
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except OAuthError as exc:
            return oauth_error(exc)
        except CarebaseError as exc:
            error = _ERROR_BY_STATUS.get(exc.status, "invalid_request")
            if exc.status >= 500 and exc.status != 503:
                error = "server_error"
            body = {"error": error, "error_description": exc.message}
            return oauth_json(body, exc.status, exc.headers)
        except Exception:
            log.exception("Unhandled error in %s %s", request.method, request.url.path)
            return oauth_json({"error": "server_error", "error_description": "see server log"}, 500)

    return run


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST; invalid_request for another type, an oversized body
    or a repeated parameter (RFC 6749 section 3.1)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise invalid_request("Send the parameters as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise invalid_request(f"The form is larger than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid_request("The form is not valid UTF-8 urlencoded data") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise invalid_request(f"Parameter {name!r} appears more than once")
        form[name] = value
    return form


def smart_configuration(server: OAuthServer) -> dict[str, Any]:
    """The SMART App Launch discovery document."""
    issuer = server.config.issuer
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/oauth/jwks",
        "authorization_endpoint": server.config.authorize_url,
        "token_endpoint": server.config.token_url,
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": [
            *sorted(NON_RESOURCE_SCOPES),
            "patient/*.rs",
            "patient/*.read",
            "user/*.cruds",
            "user/*.read",
            "system/*.rs",
            "system/*.read",
        ],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "capabilities": list(CAPABILITIES),
    }


class OAuthApi:
    """The OAuth/SMART JSON endpoints of one app."""

    def __init__(self, server: OAuthServer, store: Callable[[], Store]) -> None:
        self.server = server
        self.store = store
        self.endpoint = TokenEndpoint(server)

    def routes(self) -> list[Route]:
        """Starlette routes (discovery under /fhir, the rest under /oauth)."""
        return [
            Route("/fhir/.well-known/smart-configuration", self.discovery, methods=["GET"]),
            Route("/oauth/jwks", self.jwks, methods=["GET"]),
            Route("/oauth/token", _json_errors(self.token), methods=["POST"]),
            Route("/oauth/introspect", _json_errors(self.introspect), methods=["POST"]),
            Route("/oauth/revoke", _json_errors(self.revoke), methods=["POST"]),
            Route("/oauth/launch", _json_errors(self.launch), methods=["POST"]),
        ]

    async def discovery(self, request: Request) -> Response:
        """GET /fhir/.well-known/smart-configuration."""
        return JSONResponse(smart_configuration(self.server))

    async def jwks(self, request: Request) -> Response:
        """GET /oauth/jwks: the public keys that verify our tokens."""
        return JSONResponse(
            self.server.tokens.ring.jwks(), headers={"Cache-Control": "max-age=300"}
        )

    async def token(self, request: Request) -> Response:
        """POST /oauth/token; every issue and every refusal is audited."""
        form = await read_form(request)
        auth = request.headers.get("authorization")
        grant = form.get("grant_type", "?")
        try:
            answer = await run_in_threadpool(self.endpoint.exchange, form, auth)
        except OAuthError as exc:
            audit(request, "failed-auth", "4", None, f"token ({grant}) refused: {exc.error}: "
                  f"{exc.description}")  # fmt: skip
            raise
        issued = await run_in_threadpool(self.server.tokens.verify, answer["access_token"])
        audit(request, "token", "0", issued, f"{grant} token for client {issued.client_id}")
        return oauth_json(answer)

    async def introspect(self, request: Request) -> Response:
        """POST /oauth/introspect (RFC 7662): for our confidential and backend clients, and
        for bearers of a system-level or admin token."""
        form = await read_form(request)
        auth = request.headers.get("authorization") or ""
        if auth[:7].lower() == "bearer ":
            caller = await run_in_threadpool(self.server.tokens.verify, auth[7:].strip())
            if not _may_introspect(caller):
                return oauth_json(
                    {"error": "insufficient_scope", "error_description": "introspection needs "
                     "a system/ scope or the admin role"}, 403,
                )  # fmt: skip
        else:
            client = await run_in_threadpool(authenticate_client, self.server, form, auth or None)
            if client.kind == "public":
                raise invalid_client("Public clients may not introspect tokens")
        answer = await run_in_threadpool(
            introspect, self.server, form.get("token", ""), form.get("token_type_hint")
        )
        return oauth_json(answer)

    async def revoke(self, request: Request) -> Response:
        """POST /oauth/revoke (RFC 7009): always 200 once the client is authenticated."""
        form = await read_form(request)
        auth = request.headers.get("authorization")
        client = await run_in_threadpool(authenticate_client, self.server, form, auth)
        if "token" not in form:
            raise invalid_request("token is missing")
        if await run_in_threadpool(revoke, self.server, client.client_id, form["token"]):
            audit(request, "token", "0", None, f"client {client.client_id} revoked a token")
        return Response(b"", 200, _NO_STORE)

    async def launch(self, request: Request) -> Response:
        """POST /oauth/launch: a launch id for an EHR launch of a patient (and encounter),
        for a clinician's bearer token or signed-in browser session (with its CSRF token)."""
        form = await read_form(request)
        user_id = await self._launching_user(request, form)
        patient, encounter = form.get("patient", ""), form.get("encounter") or None
        if not patient:
            raise invalid_request("patient (a Patient id) is required")
        store = self.store()
        for type_, id_ in (("Patient", patient), ("Encounter", encounter)):
            if id_ is not None:
                found = await store.read_async(type_, id_)
                if found is None or found.deleted:
                    raise invalid_request(f"{type_}/{id_} does not exist")
        launch_id = await run_in_threadpool(create_launch, self.server, user_id, patient, encounter)
        return oauth_json({"launch": launch_id, "expires_in": self.server.config.launch_ttl})

    async def _launching_user(self, request: Request, form: dict[str, str]) -> str:
        auth = request.headers.get("authorization") or ""
        if auth[:7].lower() == "bearer ":
            caller = await run_in_threadpool(self.server.tokens.verify, auth[7:].strip())
            kind, role, subject = caller.kind, caller.role, caller.subject
        else:
            user = await sessions_http.current_user(request)
            if user is None:
                raise OAuthError(
                    "invalid_token",
                    "Sign in or send a clinician's bearer token to start a launch",
                    status=401,
                )
            # a cookie-authenticated POST must prove it comes from our own page
            sessions_http.check_csrf(request, form)
            kind, role, subject = "user", user.role, user.id
        if kind != "user" or role not in LAUNCHING_ROLES:
            raise OAuthError(
                "access_denied", "Only clinicians, nurses and admins start EHR launches", status=403
            )
        return subject


def _may_introspect(caller: Principal) -> bool:
    if caller.kind == "service" or caller.role == "admin":
        return True
    return any(s.startswith("system/") for s in caller.scopes)
