"""What each role may ever be granted: the scope ceiling applied when tokens are issued and
again when they are used (a token never grants more than its user's role allows)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

from carebase.auth.scopes import (
    CONTEXT_BREADTH,
    ResourceScope,
    ScopeError,
    canonical_permissions,
    parse_scope,
)

#: The broadest scopes each role may hold. Patients read their own record and may write
#: messages; front-desk staff handle registration and scheduling; researchers get nothing
#: from the clinical API (de-identified data only, served elsewhere).
ROLE_SCOPE_CEILING: dict[str, tuple[str, ...]] = {
    "admin": ("user/*.cruds",),
    "clinician": ("user/*.cruds",),
    "nurse": ("user/*.crus",),
    "front-desk": (
        "user/Patient.crus",
        "user/RelatedPerson.crus",
        "user/Coverage.crus",
        "user/Appointment.cruds",
        "user/Schedule.rs",
        "user/Slot.rs",
        "user/Practitioner.rs",
        "user/PractitionerRole.rs",
        "user/Organization.rs",
        "user/Location.rs",
        "user/HealthcareService.rs",
        "user/Communication.crs",
    ),
    "patient": ("patient/*.rs", "patient/Communication.c"),
    "researcher": (),
    "service": ("system/*.cruds",),
}


def _ceiling(role: str) -> list[ResourceScope]:
    scopes = [parse_scope(s) for s in ROLE_SCOPE_CEILING.get(role, ())]
    return [s for s in scopes if s is not None]


def _spell(scope: ResourceScope, letters: str) -> str:
    text = f"{scope.context}/{scope.type}.{letters}"
    return f"{text}?{urlencode(scope.query)}" if scope.query else text


def permitted_scopes(role: str | None, requested: Iterable[str]) -> list[str]:
    """The requested scopes narrowed to what `role` may hold.

    Non-resource scopes (openid, launch/patient, offline_access...) pass through. A resource
    scope keeps the permissions that some ceiling scope of the role grants on its type in the
    same or a broader context (patient < user < system); a scope left with no permission is
    dropped. Malformed scopes raise ScopeError. An unknown role (or None) keeps no resource
    scope.
    """
    ceiling = _ceiling(role) if role else []
    kept: list[str] = []
    for text in requested:
        scope = parse_scope(text)
        if scope is None:
            if "/" not in text or text.split("/", 1)[0] not in ("patient", "user", "system"):
                kept.append(text)
            continue
        allowed: set[str] = set()
        breadth = CONTEXT_BREADTH[scope.context]
        for c in ceiling:
            if c.type in ("*", scope.type) and CONTEXT_BREADTH[c.context] >= breadth:
                allowed |= c.permissions
        letters = canonical_permissions(scope.permissions & allowed)
        if letters:
            kept.append(text if set(letters) == scope.permissions else _spell(scope, letters))
    return list(dict.fromkeys(kept))


__all__ = ["ROLE_SCOPE_CEILING", "ScopeError", "permitted_scopes"]
