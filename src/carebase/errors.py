"""The one exception hierarchy of carebase; the edges turn each into an OperationOutcome.

Tree (HTTP status, OperationOutcome issue code):

    CarebaseError (500, exception)
    ├── BadRequest (400, invalid)              malformed request: JSON, parameter, header, id
    │   └── InvalidResource (400, invalid)     resource fails validation (one Issue per problem)
    ├── Unauthorized (401, login)
    ├── Forbidden (403, forbidden)
    ├── NotFound (404, not-found)
    ├── MethodNotAllowed (405, not-supported)
    ├── NotAcceptable (406, not-supported)     Accept/_format asks for what we cannot produce
    ├── Conflict (409, conflict)               version conflict, duplicate id
    ├── Gone (410, deleted)                    the resource was deleted
    ├── PreconditionFailed (412, conflict)     If-Match mismatch, several conditional matches
    ├── TooLarge (413, too-costly)             body over the configured limit
    ├── UnsupportedMediaType (415, not-supported)
    ├── Unprocessable (422, processing)        business rule broken (e.g. id in body vs URL)
    │   └── TooCostly (422, too-costly)        the request would exceed the server's limits
    ├── TooManyRequests (429, throttled)       rate limit hit (login, token); Retry-After says when
    ├── Unsupported (501, not-supported)       a feature the server does not implement
    ├── Unavailable (503, transient)           the database is unreachable for now; retry
    └── StorageError (500, exception)          the database failed; message is safe to show

Every error carries one or more `Issue`s naming what was wrong and where (a FHIRPath-like
location such as `Patient.birthDate`) and, where possible, what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Issue:
    """One OperationOutcome.issue: severity, code, human text and FHIRPath location(s)."""

    severity: str  # fatal | error | warning | information
    code: str  # an IssueType code (invalid, structure, required, value, not-found, ...)
    diagnostics: str
    expression: list[str] = field(default_factory=list)

    def to_fhir(self) -> dict[str, object]:
        """This issue as an OperationOutcome.issue JSON object."""
        out: dict[str, object] = {"severity": self.severity, "code": self.code}
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class CarebaseError(Exception):
    """Base of every error carebase raises on purpose."""

    status: int = 500
    code: str = "exception"

    def __init__(
        self,
        message: str = "",
        *,
        location: str | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or (issues[0].diagnostics if issues else self.__class__.__name__))
        self.message = str(self)
        if issues:
            self.issues = list(issues)
        else:
            self.issues = [Issue("error", self.code, self.message, [location] if location else [])]
        self.headers = dict(headers or {})

    def operation_outcome(self) -> dict[str, object]:
        """The OperationOutcome resource describing this error."""
        return {
            "resourceType": "OperationOutcome",
            "issue": [issue.to_fhir() for issue in self.issues],
        }


class BadRequest(CarebaseError):
    """The request itself is malformed (JSON, parameter, header, id)."""

    status = 400
    code = "invalid"


class InvalidResource(BadRequest):
    """A resource failed validation; `issues` lists every problem with its location."""

    code = "invalid"


class Unauthorized(CarebaseError):
    """No or bad credentials."""

    status = 401
    code = "login"


class Forbidden(CarebaseError):
    """Credentials are valid but do not allow this."""

    status = 403
    code = "forbidden"


class NotFound(CarebaseError):
    """The resource, type or endpoint does not exist."""

    status = 404
    code = "not-found"


class MethodNotAllowed(CarebaseError):
    """The HTTP method is not allowed on this URL."""

    status = 405
    code = "not-supported"


class NotAcceptable(CarebaseError):
    """The client asked (Accept/_format) for a representation the server cannot produce."""

    status = 406
    code = "not-supported"


class Conflict(CarebaseError):
    """The request conflicts with the current state (version conflict, duplicate)."""

    status = 409
    code = "conflict"


class Gone(CarebaseError):
    """The resource existed but was deleted."""

    status = 410
    code = "deleted"


class PreconditionFailed(CarebaseError):
    """A precondition (If-Match, conditional criteria) did not hold."""

    status = 412
    code = "conflict"


class TooLarge(CarebaseError):
    """The request body is larger than the configured limit."""

    status = 413
    code = "too-costly"


class UnsupportedMediaType(CarebaseError):
    """The Content-Type of the body is not one the server reads."""

    status = 415
    code = "not-supported"


class Unprocessable(CarebaseError):
    """The request is well-formed but breaks a business rule."""

    status = 422
    code = "processing"


class TooCostly(Unprocessable):
    """The request would exceed the server's resource limits (e.g. a statement timeout)."""

    code = "too-costly"


class TooManyRequests(CarebaseError):
    """Too many attempts in a short time (rate limit, lockout back-off); `Retry-After` says
    when to try again."""

    status = 429
    code = "throttled"


class Unsupported(CarebaseError):
    """A feature the server does not implement."""

    status = 501
    code = "not-supported"


class Unavailable(CarebaseError):
    """A passing failure (lost database connection); the client may retry."""

    status = 503
    code = "transient"


class StorageError(CarebaseError):
    """The database failed; the message is safe to show to a client."""

    status = 500
    code = "exception"
