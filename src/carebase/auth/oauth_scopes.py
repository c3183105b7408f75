"""What an OAuth request may be granted: the requested scopes narrowed by the client's
registered scopes (and, for users, by their role: `auth.roles.permitted_scopes`).

A requested resource scope keeps the permissions that some allowed scope of the same context
grants on its type; granular criteria (`?category=...`) of the allowed scope must be present
unchanged in the request (the request may add criteria, which only narrows it). Other scopes
(openid, launch/patient, offline_access...) pass only when the client may ask for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

from carebase.auth.oauth_errors import invalid_scope
from carebase.auth.scopes import (
    ResourceScope,
    ScopeError,
    canonical_permissions,
    parse_scope,
    validate_scopes,
)


def requested_scopes(raw: str | None) -> list[str]:
    """The scopes of a `scope` parameter, de-duplicated; invalid_scope if malformed."""
    try:
        return list(dict.fromkeys(validate_scopes(raw or "")))
    except ScopeError as exc:
        raise invalid_scope(str(exc)) from exc


def _covers(allowed: ResourceScope, wanted: ResourceScope) -> bool:
    if allowed.context != wanted.context or allowed.type not in ("*", wanted.type):
        return False
    return set(allowed.query) <= set(wanted.query)


def _spell(scope: ResourceScope, letters: str) -> str:
    text = f"{scope.context}/{scope.type}.{letters}"
    return f"{text}?{urlencode(scope.query)}" if scope.query else text


def narrow_scopes(allowed: Iterable[str], requested: Iterable[str]) -> list[str]:
    """`requested` narrowed to what `allowed` grants (see the module docstring)."""
    allowed_set = set(allowed)
    ceiling = [p for p in (parse_scope(s) for s in allowed_set) if p is not None]
    kept: list[str] = []
    for text in requested:
        wanted = parse_scope(text)
        if wanted is None:
            if text in allowed_set:
                kept.append(text)
            continue
        letters: set[str] = set()
        for scope in ceiling:
            if _covers(scope, wanted):
                letters |= scope.permissions
        granted = canonical_permissions(wanted.permissions & letters)
        if granted:
            kept.append(text if set(granted) == wanted.permissions else _spell(wanted, granted))
    return list(dict.fromkeys(kept))


def within(granted: Iterable[str], requested: Iterable[str]) -> bool:
    """Whether every requested scope is covered by the granted ones (a refresh may narrow
    the scope, never widen it)."""
    requested = list(requested)
    return narrow_scopes(granted, requested) == list(dict.fromkeys(requested))
