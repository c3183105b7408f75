"""The audit entry of every FHIR interaction, recorded before its response leaves.

`audited(endpoint, handler, trail)` wraps one route handler: it gives the request a `Guard`
for the authenticated principal, runs the handler (which fills in what it touched), and
records an `AuditEntry` with the interaction, action, outcome, principal, entities,
patients, query, source address, user agent and break-glass reason. Refusals (403, 404) are
recorded like successes. When the trail cannot record (`Unavailable`), the response is
dropped and the client gets 503: no patient data leaves unaudited.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from carebase.api.access import Guard
from carebase.api.authentication import PRINCIPAL_KEY, client_ip, header_value, missing_token
from carebase.api.responses import Endpoint, error_response
from carebase.auth.audit_entry import AuditAction, AuditEntry, AuditOutcome, AuditTrail
from carebase.errors import Unavailable

GUARD_KEY = "carebase.guard"

#: handler name -> (restful-interaction code, AuditEvent action)
HANDLER_AUDIT: dict[str, tuple[str, AuditAction]] = {
    "read": ("read", "R"),
    "vread": ("vread", "R"),
    "search": ("search-type", "R"),
    "search_post": ("search-type", "R"),
    "search_compartment": ("search-type", "R"),
    "search_compartment_post": ("search-type", "R"),
    "search_system": ("search-system", "R"),
    "search_system_post": ("search-system", "R"),
    "create": ("create", "C"),
    "update": ("update", "U"),
    "conditional_update": ("update", "U"),
    "patch": ("patch", "U"),
    "conditional_patch": ("patch", "U"),
    "delete": ("delete", "D"),
    "conditional_delete": ("delete", "D"),
    "bundle": ("transaction", "E"),
    "validate": ("operation", "E"),
    "view_run": ("operation", "E"),
    # Bulk Data (api/bulk_routes.py): recorded with subtype export or import
    "bulk_export_system": ("export", "E"),
    "bulk_export_patient": ("export", "E"),
    "bulk_export_group": ("export", "E"),
    "bulk_import_kickoff": ("import", "C"),
    "bulk_status": ("export", "R"),
    "bulk_cancel": ("export", "D"),
    "bulk_download": ("export", "R"),
    # risk prediction (api/ml_routes.py); a persisted RiskAssessment adds a create entry
    "ml_predict": ("operation", "E"),
    "ml_cds_service": ("operation", "E"),
    "ml_card": ("read", "R"),
    "ml_card_image": ("read", "R"),
    # Patient/$everything (api/everything.py)
    "everything": ("operation", "E"),
}
_HISTORY = {2: "history-system", 3: "history-type", 4: "history-instance"}


def outcome_of(status: int) -> AuditOutcome:
    """AuditEvent.outcome for an HTTP status: success, minor failure (refused, not found,
    bad request) or serious failure (server error)."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def _interaction(handler: str, request: Request) -> tuple[str, AuditAction]:
    if handler == "history":
        return _HISTORY[len(request.path_params) + 2], "R"
    return HANDLER_AUDIT[handler]


def audited(endpoint: Endpoint, handler: str, trail: Callable[[Request], AuditTrail]) -> Endpoint:
    """`endpoint` (already `guarded`: it never raises) with access guard and audit entry.

    `trail` returns the app's audit trail for a request. A handler without an
    authenticated principal (`metadata`, the one public route) is neither guarded nor
    audited; any other request without one is refused (deny by default).
    """
    if handler == "metadata":
        return endpoint

    fixed = HANDLER_AUDIT.get(handler)  # None: history, whose code depends on the path

    async def run(request: Request) -> Response:
        scope = request.scope
        principal = scope.get(PRINCIPAL_KEY)
        if principal is None:
            return error_response(missing_token())
        guard = scope[GUARD_KEY] = Guard(principal)
        response = await endpoint(request)
        # This runs for every request: plain lookups in the scope, and the entry built from
        # positional arguments in `AuditEntry`'s field order, cost less than the Request
        # properties and keyword arguments
        interaction, action = fixed or _interaction(handler, request)
        status = response.status_code
        entities = tuple(guard.entities)
        if not entities:
            params = scope.get("path_params", {})
            if "id" in params and "type" in params:
                entities = (f"{params['type']}/{params['id']}"[:200],)
        glass = principal.break_glass
        entry = AuditEntry(
            guard.interaction or interaction,
            action,
            outcome_of(status),
            principal,
            entities,
            tuple(guard.patients),
            guard.query or (scope["query_string"].decode("latin-1") or None),
            client_ip(scope),
            header_value(scope, b"user-agent"),
            _description(scope, status, guard, glass),
            glass,
            time.time_ns() // 1_000_000,  # the wall clock: the log's seq orders entries
        )
        try:
            trail(request).record(entry)
        except Unavailable as exc:  # no trail, or it cannot store: drop the response
            return error_response(exc)
        return response

    return run


def _description(scope: Scope, status: int, guard: Guard, glass: str | None) -> str:
    text = f"{scope['method']} {scope['path']} -> {status}"
    if guard.more_entities:
        text += f" ({guard.more_entities} more resources not listed)"
    if glass:
        text += " [break-glass: flagged for review]"
    return text
