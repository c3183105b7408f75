"""Who may read the audit log through the FHIR API, and which part of it.

Administrators and backend services with a `user/` or `system/` AuditEvent scope see every
entry; a patient (a `patient/` AuditEvent scope with a patient context) sees the entries
about their own record - who accessed it, when and how; everyone else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from carebase.auth.principal import Principal
from carebase.auth.scopes import ScopeSet
from carebase.auth.tokens import bearer_challenge
from carebase.errors import Forbidden, Unauthorized

AUDIT_TYPE = "AuditEvent"


@dataclass(frozen=True, slots=True)
class AuditView:
    """The part of the audit log a caller may see: all of it, or one patient's entries."""

    patient: str | None = None

    @property
    def everything(self) -> bool:
        """Whether no patient filter applies."""
        return self.patient is None


def audit_view(principal: Principal | None, permission: str) -> AuditView:
    """What `principal` may see of the log for `permission` ("r" read, "s" search).

    Raises Unauthorized (no caller) or Forbidden (a caller without the right scope or role).
    """
    if principal is None:
        raise Unauthorized(
            "Reading the audit log needs an access token",
            headers={"WWW-Authenticate": bearer_challenge()},
        )
    if principal.is_development:
        return AuditView()
    # Granular scopes (`?criteria`) are not honoured here: they grant nothing on the log
    # rather than more than they say.
    scopes = [s for s in ScopeSet(principal.scopes).resource_scopes if not s.query]
    wide = any(s.context in ("user", "system") and s.covers(AUDIT_TYPE, permission) for s in scopes)
    if wide and (principal.role == "admin" or principal.kind == "service"):
        return AuditView()
    own = any(s.context == "patient" and s.covers(AUDIT_TYPE, permission) for s in scopes)
    if own and principal.patient:
        return AuditView(patient=principal.patient)
    what = "search" if permission == "s" else "read"
    if wide:
        raise Forbidden(
            f"Only administrators and backend services may {what} the whole audit log "
            f"(role {principal.role or 'none'}); a patient sees their own record's entries"
        )
    raise Forbidden(
        f"The token has no scope to {what} AuditEvent (needs user/AuditEvent.{permission} "
        f"or system/AuditEvent.{permission} for administrators and services, or "
        f"patient/AuditEvent.{permission} with a patient context)"
    )
