"""What an OAuth request may be granted: the requested scopes narrowed by the client's
registered scopes (and, for users, by their role: `auth.roles.permitted_scopes`).

A requested resource scope is intersected with each allowed scope of the same context: the
narrower resource type, the common permissions, and the granular criteria (`?category=...`)
of both (`system/*.cruds` against `system/Observation.rs` gives `system/Observation.rs`).
Other scopes (openid, launch/patient, offline_access...) pass only when the client may ask
for them.
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


def _intersect(allowed: ResourceScope, wanted: ResourceScope) -> ResourceScope | None:
    """What both scopes grant, or None: same context, overlapping types (the narrower
    wins), the common permissions, and the criteria of both (each narrows)."""
    if allowed.context != wanted.context:
        return None
    if "*" not in (allowed.type, wanted.type) and allowed.type != wanted.type:
        return None
    letters = allowed.permissions & wanted.permissions
    if not letters:
        return None
    type_ = wanted.type if wanted.type != "*" else allowed.type
    query = wanted.query + tuple(p for p in allowed.query if p not in wanted.query)
    return ResourceScope(wanted.context, type_, frozenset(letters), query)


def _spell(scope: ResourceScope) -> str:
    text = f"{scope.context}/{scope.type}.{canonical_permissions(scope.permissions)}"
    return f"{text}?{urlencode(scope.query, safe=':/|,')}" if scope.query else text


def _covered(narrow: ResourceScope, broad: ResourceScope) -> bool:
    """Whether `broad` grants everything `narrow` does."""
    return (
        narrow.context == broad.context
        and broad.type in ("*", narrow.type)
        and narrow.permissions <= broad.permissions
        and set(broad.query) <= set(narrow.query)
    )


def _drop_covered(scopes: list[str]) -> list[str]:
    """The scopes without those another of them already grants (first of equals kept)."""
    parsed = [parse_scope(s) for s in scopes]
    kept = []
    for i, (text, scope) in enumerate(zip(scopes, parsed, strict=True)):
        if scope is not None and any(
            other is not None
            and j != i
            and _covered(scope, other)
            and (not _covered(other, scope) or j < i)
            for j, other in enumerate(parsed)
        ):
            continue
        kept.append(text)
    return kept


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
        for scope in ceiling:
            common = _intersect(scope, wanted)
            if common == wanted:
                kept.append(text)  # granted as asked, in the client's own spelling
            elif common is not None:
                kept.append(_spell(common))
    return _drop_covered(list(dict.fromkeys(kept)))


def within(granted: Iterable[str], requested: Iterable[str]) -> bool:
    """Whether every requested scope is covered by the granted ones (a refresh may narrow
    the scope, never widen it)."""
    granted = list(granted)
    return all(narrow_scopes(granted, [scope]) == [scope] for scope in requested)
