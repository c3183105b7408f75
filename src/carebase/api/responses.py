"""Turning interaction `Result`s and errors into HTTP responses (FHIR JSON, OperationOutcome).

Every error leaves the server as an OperationOutcome: carebase errors with their own status,
router 404/405 as not-found/not-supported, anything unexpected as a logged generic 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from carebase.api.negotiation import FHIR_JSON_UTF8, reindent, render
from carebase.api.results import Result, http_date
from carebase.errors import CarebaseError, MethodNotAllowed, NotFound
from carebase.fhir import operation_outcome

log = logging.getLogger("carebase.api")

Endpoint = Callable[[Request], Awaitable[Response]]
#: Reshapes a stored body for `_summary`/`_elements` (None: send the stored bytes).
Shaper = Callable[[bytes], object] | None

PREFER_RETURN = ("minimal", "representation", "OperationOutcome")


def fhir_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A FHIR JSON response carrying `body` as is."""
    return Response(body, status, headers, media_type=FHIR_JSON_UTF8)


def error_response(exc: CarebaseError, pretty: bool = False) -> Response:
    """The OperationOutcome response for a carebase error."""
    return fhir_response(render(exc.operation_outcome(), pretty=pretty), exc.status, exc.headers)


#: Another answer than the OperationOutcome to a request a middleware refuses before any
#: route runs (the web app's error page for browsers, `web.pages.browser_refusal`); None
#: keeps the OperationOutcome.
Refusal = Callable[[Scope, CarebaseError], Response | None]


def refusal_response(exc: CarebaseError, scope: Scope, refusal: Refusal | None) -> Response:
    """What a middleware answers when it refuses a request with `exc` (the OperationOutcome
    if `refusal` gives none, or fails: the refusal stands either way)."""
    response = None
    if refusal is not None:
        try:
            response = refusal(scope, exc)
        except Exception:
            log.exception("The page for a refused request failed; answering with JSON")
    return response or error_response(exc)


def internal_error_response() -> Response:
    """A generic 500 that reveals nothing about the failure (the log has the traceback)."""
    body = operation_outcome.error_outcome(
        "Internal server error; the server log has the details", "exception"
    )
    return fhir_response(render(body), 500)


def guarded(endpoint: Endpoint) -> Endpoint:
    """Wrap an endpoint so that every exception ends as an OperationOutcome response."""

    @wraps(endpoint)
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except CarebaseError as exc:
            return error_response(exc, _pretty(request))
        except Exception:
            log.exception("Unhandled error in %s %s", request.method, request.url.path)
            return internal_error_response()

    return run


def _pretty(request: Request) -> bool:
    return b"_pretty=true" in request.scope.get("query_string", b"")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Router errors (unknown URL, wrong method) as OperationOutcomes."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    error: CarebaseError
    if exc.status_code == 404:
        error = NotFound(
            f"No FHIR endpoint at {request.url.path}; see [base]/metadata", headers=headers
        )
    elif exc.status_code == 405:
        allowed = headers.get("Allow", "")
        error = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}"
            + (f"; allowed: {allowed}" if allowed else ""),
            headers=headers,
        )
    else:
        error = CarebaseError(exc.detail, headers=headers)
        error.status = exc.status_code
    return error_response(error)


async def unhandled_exception(request: Request, exc: Exception) -> Response:
    """Last resort for exceptions outside guarded endpoints."""
    log.error("Unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return internal_error_response()


def prefer_return(request: Request) -> str:
    """The `Prefer: return=...` choice (default representation)."""
    prefer = request.headers.get("prefer")
    if prefer:
        for part in prefer.replace(";", ",").split(","):
            name, _, value = part.strip().partition("=")
            if name.strip() == "return" and value.strip().strip('"') in PREFER_RETURN:
                return value.strip().strip('"')
    return "representation"


def result_response(
    result: Result, *, prefer: str = "representation", pretty: bool = False, shaper: Shaper = None
) -> Response:
    """The HTTP response for an interaction result."""
    headers: dict[str, str] = {}
    stored = result.stored
    if stored is not None:
        headers["ETag"] = stored.etag
        headers["Last-Modified"] = http_date(stored.last_updated)
    headers.update(result.headers)
    if result.location:
        headers["Location"] = result.location
    if result.status == 304:
        return Response(status_code=304, headers=headers)
    body: bytes
    if result.preferable and prefer == "minimal":
        return Response(status_code=result.status, headers=headers)
    if result.preferable and prefer == "OperationOutcome" and result.outcome is not None:
        body = render(result.outcome, pretty=pretty)
    elif stored is not None and stored.body is not None:
        if shaper is not None:
            body = render(shaper(stored.body), pretty=pretty)
        else:
            body = reindent(stored.body) if pretty else stored.body
    elif result.body is not None:
        body = render(result.body, pretty=pretty)
    elif result.outcome is not None:
        body = render(result.outcome, pretty=pretty)
    else:
        return Response(status_code=204 if result.status == 200 else result.status, headers=headers)
    return fhir_response(body, result.status, headers)
