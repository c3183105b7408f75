"""SMART on FHIR scopes, v1 and v2, parsed into what they permit.

v1: `patient/Observation.read`, `user/*.write`, `system/*.*`.
v2: `patient/Observation.rs`, `user/*.cruds`, `system/*.rs`, and granular scopes such as
`patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory`.
Permissions are the v2 letters: c(reate) r(ead) u(pdate) d(elete) s(earch); v1 `read` is "rs",
`write` is "cud", `*` is "cruds".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

ScopeContext = Literal["patient", "user", "system"]
Permission = Literal["c", "r", "u", "d", "s"]

#: Scopes that grant no resource access but are understood (OpenID Connect, launch, refresh).
NON_RESOURCE_SCOPES = frozenset(
    {
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
    }
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_ORDER = "cruds"
_RESOURCE_SCOPE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)"
    r"\.(?P<perm>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>.+))?"
)
#: The broader context wins when scopes of several contexts grant the same thing.
CONTEXT_BREADTH = {"system": 3, "user": 2, "patient": 1}


class ScopeError(ValueError):
    """A scope string that looks like a resource scope but is malformed."""


@dataclass(frozen=True, slots=True)
class ResourceScope:
    """One resource scope: context, resource type (`*` for all), permissions and the
    granular search criteria that narrow it (empty: the whole type)."""

    context: ScopeContext
    type: str
    permissions: frozenset[str]
    query: tuple[tuple[str, str], ...] = ()

    def covers(self, type_: str, permission: str) -> bool:
        """Whether this scope grants `permission` on resources of `type_`."""
        return permission in self.permissions and self.type in ("*", type_)


def parse_scope(scope: str) -> ResourceScope | None:
    """The resource scope `scope` denotes; None for a known non-resource scope (or an
    unknown one, which grants nothing); ScopeError for a malformed resource scope."""
    if scope in NON_RESOURCE_SCOPES or "/" not in scope:
        return None
    match = _RESOURCE_SCOPE.fullmatch(scope)
    if match is None:
        if scope.split("/", 1)[0] in ("patient", "user", "system"):
            raise ScopeError(
                f"{scope!r} is not a SMART scope: use context/Type.permissions such as "
                "patient/Observation.rs or user/*.read"
            )
        return None
    perm = match["perm"]
    letters = _V1.get(perm, perm)
    if not letters:
        raise ScopeError(f"{scope!r} grants no permission (use letters from 'cruds')")
    if match["query"] and perm in _V1:
        raise ScopeError(f"{scope!r}: granular ?criteria need v2 permissions such as .rs")
    query: tuple[tuple[str, str], ...] = ()
    if match["query"]:
        query = tuple(parse_qsl(match["query"], keep_blank_values=True, strict_parsing=True))
    context: ScopeContext = match["context"]  # type: ignore[assignment]
    return ResourceScope(context, match["type"], frozenset(letters), query)


def canonical_permissions(letters: Iterable[str]) -> str:
    """Permission letters in SMART v2 order (`sr` -> `rs`)."""
    chosen = set(letters)
    return "".join(c for c in _ORDER if c in chosen)


@dataclass(frozen=True, slots=True)
class ScopeGrant:
    """What a set of scopes grants for one (type, permission): the broadest context, and
    the granular criteria that narrow it (empty tuple: no narrowing; else any of them)."""

    context: ScopeContext
    filters: tuple[tuple[tuple[str, str], ...], ...] = ()


class ScopeSet:
    """The resource scopes of one token, answering "may it do X on type T, in what context"."""

    def __init__(self, scopes: Iterable[str]) -> None:
        self.raw = frozenset(scopes)
        parsed = (parse_scope(s) for s in self.raw)
        self.resource_scopes: tuple[ResourceScope, ...] = tuple(p for p in parsed if p)

    def grant(self, type_: str, permission: str) -> ScopeGrant | None:
        """The grant for `permission` on `type_`, or None when no scope gives it."""
        matching = [s for s in self.resource_scopes if s.covers(type_, permission)]
        if not matching:
            return None
        broadest = max(CONTEXT_BREADTH[s.context] for s in matching)
        in_context = [s for s in matching if CONTEXT_BREADTH[s.context] == broadest]
        context = in_context[0].context
        if any(not s.query for s in in_context):
            return ScopeGrant(context)
        return ScopeGrant(context, tuple(s.query for s in in_context))

    def allows(self, type_: str, permission: str) -> bool:
        """Whether some scope grants `permission` on `type_` (in any context)."""
        return any(s.covers(type_, permission) for s in self.resource_scopes)

    def contexts(self) -> set[ScopeContext]:
        """The contexts the resource scopes are in."""
        return {s.context for s in self.resource_scopes}


def validate_scopes(requested: str) -> list[str]:
    """The scopes of a space-separated request, raising ScopeError for malformed ones."""
    scopes = requested.split()
    for scope in scopes:
        parse_scope(scope)
    return scopes
