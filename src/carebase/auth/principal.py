"""The authenticated caller of one request: who, in what role, with which scopes and context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

T = TypeVar("T")

#: The roles a user can have (DESIGN.md contracts); `service` is a backend application.
ROLES: tuple[str, ...] = (
    "admin",
    "clinician",
    "nurse",
    "front-desk",
    "patient",
    "researcher",
    "service",
)

PrincipalKind = Literal["user", "service", "development"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, established from a verified access token (or a browser session).

    `scopes` are the granted SMART scope strings; `patient` is the launch context (the id of
    the one Patient that `patient/` scopes apply to); `fhir_user` is the caller's FHIR
    identity ("Practitioner/123", "Patient/456"); `organization` is the Organization id whose
    patients a clinician may see. `break_glass` is the stated reason when a clinician opens a
    record outside their organisation (set per request, never carried in a token).
    `on_behalf_of` is whom a delegate acts for (a visit's guest or interpreter: the inviting
    clinician's FHIR identity, or subject); audit events name it beside the caller.
    """

    subject: str
    kind: PrincipalKind = "user"
    role: str | None = None
    username: str | None = None
    fhir_user: str | None = None
    patient: str | None = None
    organization: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    client_id: str | None = None
    token_id: str | None = None
    expires_at: int | None = None
    break_glass: str | None = None
    on_behalf_of: str | None = None

    @property
    def is_development(self) -> bool:
        """The all-powerful caller used when auth is turned off for local development."""
        return self.kind == "development"

    def with_break_glass(self, reason: str) -> Principal:
        """This principal for one request that breaks the glass with `reason`."""
        from dataclasses import replace

        return replace(self, break_glass=reason)


#: The caller when the server runs with `CAREBASE_DEV_NO_AUTH` (development only).
DEVELOPMENT_PRINCIPAL = Principal(
    subject="development",
    kind="development",
    role="admin",
    username="development",
    scopes=frozenset({"system/*.cruds"}),
)


def per_principal(build: Callable[[Principal], T], size: int = 4096) -> Callable[[Principal], T]:
    """`build` cached per Principal object (by identity): a token's principal is one object
    for as long as the token cache holds it, and hashing a principal's twelve fields, which
    an equality cache (`functools.lru_cache`) does on every call, cost more per request than
    the lookup saves. Equal principals that are distinct objects are built separately."""
    cache: dict[int, tuple[Principal, T]] = {}

    def cached(principal: Principal) -> T:
        hit = cache.get(id(principal))
        if hit is not None and hit[0] is principal:  # the entry holds it: its id is its own
            return hit[1]
        value = build(principal)
        if len(cache) >= size:
            cache.clear()
        cache[id(principal)] = (principal, value)
        return value

    cached.__doc__ = build.__doc__
    return cached
