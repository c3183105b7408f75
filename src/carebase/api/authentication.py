"""Bearer-token authentication for every `/fhir` request, CDS Hooks service call and model
card (ASGI middleware).

Every request under `/fhir` except `GET /fhir/metadata` and `/fhir/.well-known/*` must carry
`Authorization: Bearer <access token>`. A verified token's `Principal` is put at
`scope["carebase.principal"]`; a missing, malformed, expired or foreign token is answered
with 401, an OperationOutcome and a `WWW-Authenticate: Bearer` challenge (RFC 6750), and the
attempt is audited. `X-Break-Glass: <reason>` lets a clinician or nurse open a record outside
their organisation (the reason goes into the audit entry and is flagged for review).

A principal already in the scope (put there by a trusted ASGI layer in front of the app,
never by a client) is kept. With `Settings.auth_disabled` (development only) every request
runs as the all-powerful `DEVELOPMENT_PRINCIPAL`; `create_app` logs a warning about it on
every start.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from carebase.api.app_state import state_value
from carebase.api.responses import error_response
from carebase.auth.audit_entry import AuditEntry, AuditTrail
from carebase.auth.policy import BREAK_GLASS_ROLES
from carebase.auth.principal import DEVELOPMENT_PRINCIPAL, Principal
from carebase.auth.tokens import TokenService, bearer_challenge, invalid_token
from carebase.errors import BadRequest, CarebaseError, Forbidden, Unauthorized, Unavailable

log = logging.getLogger("carebase.auth")

PRINCIPAL_KEY = "carebase.principal"
#: The longest break-glass reason accepted, characters.
MAX_BREAK_GLASS_REASON = 500
_PUBLIC = ("/fhir/metadata", "/fhir/.well-known/")


def is_public(method: str, path: str) -> bool:
    """Whether a `/fhir` request needs no token (capability and SMART discovery)."""
    if path.startswith("/fhir/.well-known/"):
        return True
    return path in ("/fhir/metadata", "/fhir/metadata/") and method in ("GET", "HEAD")


#: Path prefixes that need a bearer token: FHIR, CDS Hooks services, model cards, the
#: telehealth API (its WebSocket authenticates with a room join token instead).
PROTECTED = ("/fhir", "/cds-services/", "/ml/", "/telehealth/api/")


def is_protected(path: str) -> bool:
    """Whether a request goes through authentication (CDS Hooks discovery, `GET
    /cds-services`, names tasks and no patient: public, like `/fhir/metadata`)."""
    return path.startswith(PROTECTED)


def missing_token() -> Unauthorized:
    """The 401 for a request without credentials (no `error` attribute, RFC 6750 3.1)."""
    return Unauthorized(
        "This endpoint needs an access token: send Authorization: Bearer <token>",
        headers={"WWW-Authenticate": bearer_challenge()},
    )


def bearer_token(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """(the bearer token, the X-Break-Glass value) from raw ASGI headers, in one pass."""
    token = glass = None
    for name, value in headers:
        if name == b"authorization":
            token = value.decode("latin-1")
        elif name == b"x-break-glass":
            glass = value.decode("latin-1")
    return token, glass


def _token_of(header: str | None) -> str:
    if header is not None and header.startswith("Bearer "):
        # what clients send, read without the general path's copies (every request)
        token = header[7:]
        if token and not token[0].isspace() and not token[-1].isspace():
            return token
    if header is None or not header.strip():  # an empty header sends no credentials either
        raise missing_token()
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise invalid_token("the Authorization header must be 'Bearer <access token>'")
    return token.strip()


def break_glass(principal: Principal, reason: str) -> Principal:
    """`principal` breaking the glass for this request; 400 for a bad reason, 403 for a
    role that may not break the glass."""
    reason = reason.strip()
    if not reason or len(reason) > MAX_BREAK_GLASS_REASON:
        raise BadRequest(
            f"X-Break-Glass must state the reason (1-{MAX_BREAK_GLASS_REASON} characters)",
            location="X-Break-Glass",
        )
    if not reason.isprintable():
        raise BadRequest("X-Break-Glass may not hold control characters", location="X-Break-Glass")
    if principal.role not in BREAK_GLASS_ROLES:
        raise Forbidden("Only clinicians and nurses may break the glass", location="X-Break-Glass")
    return principal.with_break_glass(reason)


class Authentication:
    """ASGI middleware establishing the caller of every protected `/fhir` request."""

    def __init__(self, app: ASGIApp, *, state: Any, disabled: bool = False) -> None:
        self.app = app
        #: the app's state: `tokens` (TokenService) and `audit_trail` are read from it per
        #: request, so whoever builds the app may replace them after it is created
        self.state = state
        self.disabled = disabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        if is_public(scope["method"], scope["path"]) or PRINCIPAL_KEY in scope:
            # a trusted ASGI layer in front (an in-process caller such as the web app with a
            # session's user, or a test harness) may have established the caller already;
            # HTTP clients cannot set scope keys, only headers
            await self.app(scope, receive, send)
            return
        header, glass = bearer_token(scope["headers"])
        principal: Principal | None = None
        try:
            if self.disabled:
                principal = DEVELOPMENT_PRINCIPAL
            else:
                tokens: TokenService = state_value(self.state, "tokens")
                principal = tokens.verify(_token_of(header))
            if glass is not None:
                principal = break_glass(principal, glass)
        except CarebaseError as exc:
            await self._refuse(scope, receive, send, exc, principal)
            return
        scope[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exc: CarebaseError,
        principal: Principal | None,
    ) -> None:
        """Answer a refused request, after auditing the attempt."""
        entry = AuditEntry(
            interaction="failed-auth" if isinstance(exc, Unauthorized) else "break-glass",
            action="E",
            outcome="4",
            principal=principal,
            query=scope.get("query_string", b"").decode("latin-1") or None,
            source_ip=client_ip(scope),
            user_agent=header_value(scope, b"user-agent"),
            description=f"{scope['method']} {scope['path']}: {exc.message}"[:1000],
        )
        trail: AuditTrail | None = state_value(self.state, "audit_trail")
        try:
            if trail is None:
                raise Unavailable("The audit trail is not running; try again shortly")
            trail.record(entry)
        except Unavailable as unavailable:
            exc = unavailable
        await error_response(exc)(scope, receive, send)


def client_ip(scope: Scope) -> str | None:
    """The peer address of a request."""
    client: Any = scope.get("client")
    return str(client[0]) if client else None


def header_value(scope: Scope, name: bytes) -> str | None:
    """One request header from the raw ASGI headers (None when absent)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))[:500]
    return None
