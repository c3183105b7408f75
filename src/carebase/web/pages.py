"""The frame of every signed-in page: who may open it, the user's access, its audit entry.

`page(area)` wraps a page handler. It finds the signed-in user (no session, or an expired
one, sends the browser to the login page and back), checks the user's role may use the
area (the clinician app, the patient portal, administration), gives the handler a
`WebPage` whose `records` read and write under the same access policy as the API (the
user's role's scopes: a patient sees only their own compartment), and records one audit
entry per request on the same trail as the API, naming every resource and patient the
page touched. When the trail cannot record, the page is not shown (503): no patient data
leaves unaudited. Errors become an HTML error page (with their audit entry).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope

from carebase.api.access import Guard
from carebase.api.audited import outcome_of
from carebase.api.authentication import is_protected
from carebase.api.results import Context
from carebase.auth.audit_entry import AuditAction, AuditEntry, AuditTrail
from carebase.auth.principal import Principal
from carebase.auth.roles import ROLE_SCOPE_CEILING
from carebase.auth.users import User
from carebase.errors import CarebaseError, Forbidden, Unavailable
from carebase.web import sessions_http as http
from carebase.web.error_text import PageError, shown_error
from carebase.web.i18n import language_of, translate
from carebase.web.records import Records
from carebase.web.templates import render

log = logging.getLogger("carebase.web")

CLINICIAN_PREFIX = "/app"
PORTAL_PREFIX = "/portal"
#: The roles that may use each area.
AREA_ROLES: dict[str, frozenset[str]] = {
    "clinician": frozenset({"admin", "clinician", "nurse", "front-desk"}),
    "portal": frozenset({"patient"}),
    "admin": frozenset({"admin"}),
}


def principal_of(user: User) -> Principal:
    """The user as the caller of page requests: the broadest scopes their role may hold (a
    browser session is the user themselves, not an application acting for them)."""
    return user.principal(frozenset(ROLE_SCOPE_CEILING.get(user.role, ())))


def home_of(user: User) -> str:
    """Where a user starts: the portal for patients, else the clinician app."""
    return PORTAL_PREFIX if user.role == "patient" else CLINICIAN_PREFIX


@dataclass(slots=True)
class WebPage:
    """One signed-in page request: the user, their access to the record, and what to audit."""

    request: Request
    user: User
    records: Records
    language: str
    #: the audit entry's interaction and action (a read unless the handler says otherwise)
    interaction: str = "read"
    action: AuditAction = "R"

    @property
    def guard(self) -> Guard:
        return self.records.ctx.guard

    def _(self, text: str, **values: Any) -> str:
        """`text` translated into the page's language."""
        return translate(self.language, text, **values)

    def writes(self, interaction: str, action: AuditAction) -> None:
        """Say what the request does, for its audit entry."""
        self.interaction, self.action = interaction, action

    def render(
        self, template: str, context: Mapping[str, Any] | None = None, status: int = 200
    ) -> Response:
        values = {"user": self.user, "nav": navigation(self), **(context or {})}
        return render(self.request, template, values, status)


Handler = Callable[[WebPage], Awaitable[Response]]


def navigation(page: WebPage) -> list[tuple[str, str]]:
    """(path, label) of the menu the user's role may use."""
    _ = page._
    role = page.user.role
    if role == "patient":
        return [
            (PORTAL_PREFIX, _("My record")),
            (f"{PORTAL_PREFIX}/labs", _("Lab results")),
            (f"{PORTAL_PREFIX}/medications", _("Medications")),
            (f"{PORTAL_PREFIX}/appointments", _("Appointments")),
            (f"{PORTAL_PREFIX}/messages", _("Messages")),
            (f"{PORTAL_PREFIX}/access", _("Who viewed my record")),
        ]
    items = [(CLINICIAN_PREFIX, _("Patients"))]
    if page.records.may("Patient", "c"):
        items.append((f"{CLINICIAN_PREFIX}/patients/new", _("Register a patient")))
    if role == "admin":
        items += [
            (f"{CLINICIAN_PREFIX}/admin/users", _("Users")),
            (f"{CLINICIAN_PREFIX}/admin/audit", _("Audit log")),
            (f"{CLINICIAN_PREFIX}/admin/models", _("Models")),
        ]
    return items


def _trail(request: Request) -> AuditTrail:
    trail: AuditTrail | None = getattr(request.app.state, "audit_trail", None)
    if trail is None:
        raise Unavailable("The audit trail is not running; try again shortly")
    return trail


def error_page(
    request: Request, user: User | None, status: int, message: str, detail: str | None = None
) -> Response:
    """The HTML error page: `message` in the page's language, `detail` the technical text."""
    values: dict[str, Any] = {"status": status, "message": message, "detail": detail, "user": user}
    return render(request, "error.html", values, status)


def carebase_error_page(request: Request, user: User | None, exc: CarebaseError) -> Response:
    """The error page of an error from the layers below, translated (`error_text`)."""
    shown = shown_error(language_of(request), exc)
    return error_page(request, user, exc.status, shown.message, shown.detail)


def browser_refusal(scope: Scope, exc: CarebaseError) -> Response | None:
    """The error page for a request the server refuses before any page runs (a body over
    its limit: `api.body_limit`; too many sign-ins: `api.rate_limit`) when a browser asked
    for a page, not the API (`/fhir`, CDS Hooks, ...: `api.authentication.is_protected`);
    None for API clients, which get the OperationOutcome. The error's headers
    (`Retry-After`) go with the page."""
    accept = Headers(scope=scope).get("accept", "")
    if is_protected(scope["path"]) or "text/html" not in accept:  # the API answers in JSON
        return None
    response = carebase_error_page(Request(scope), None, exc)
    response.headers.update(exc.headers)
    return response


def page(area: str) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler of a signed-in page of `area` (see the module docstring)."""
    roles = AREA_ROLES[area]

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            user = await http.current_user(request)
            if user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
            language = language_of(request)
            if user.role not in roles:
                message = translate(
                    language, "This page is not for your role ({role}).", role=user.role
                )
                response = error_page(request, user, 403, message)
                try:
                    _audit(request, user, principal_of(user), None, response.status_code)
                except Unavailable as exc:
                    return carebase_error_page(request, user, exc)
                return response
            principal = principal_of(user)
            guard = Guard(principal)
            fhir = request.app.state.fhir
            ctx = Context(fhir.store, fhir.settings, fhir.base_url(request), guard)
            web = WebPage(request, user, Records(ctx), language)
            try:
                response = await handler(web)
            except CarebaseError as exc:
                response = carebase_error_page(request, user, exc)
            except Exception:
                log.exception("Unhandled error in %s %s", request.method, request.url.path)
                message = translate(language, "Something went wrong; the server log has details")
                response = error_page(request, user, 500, message)
            try:
                _audit(request, user, principal, web, response.status_code)
            except Unavailable as exc:
                return carebase_error_page(request, user, exc)
            return response

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


def _audit(
    request: Request, user: User, principal: Principal, web: WebPage | None, status: int
) -> None:
    guard = web.guard if web is not None else None
    entry = AuditEntry(
        interaction=web.interaction if web is not None else "read",
        action=web.action if web is not None else "R",
        outcome=outcome_of(status),
        principal=principal,
        entities=tuple(guard.entities) if guard else (),
        patients=tuple(guard.patients) if guard else (),
        query=request.url.query or None,
        source_ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        description=f"web page {request.method} {request.url.path} -> {status}",
    )
    _trail(request).record(entry)


def require(condition: bool, message: str) -> None:
    """403 with `message` (already in the page's language) unless `condition`."""
    if not condition:
        raise PageError(message)


__all__ = ["Forbidden", "WebPage", "error_page", "home_of", "page", "principal_of", "require"]
