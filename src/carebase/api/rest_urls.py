"""Read-only interactions addressed by a relative URL (GET/HEAD entries of a Bundle).

Dispatches `Type/id`, `Type/id/_history/n`, `Type/id/_history`, `Type/_history`, `_history`
and `Type?criteria` to the same interaction code the HTTP routes use.
"""

from __future__ import annotations

from carebase.api import interactions, listing
from carebase.api.results import Context, Result, not_modified
from carebase.errors import BadRequest
from carebase.fhir.bundle import BundleEntry


def run_read_url(ctx: Context, entry: BundleEntry) -> Result:
    """Run a GET/HEAD entry; conditional-read headers of the entry may give 304."""
    target = entry.target
    type_, id_ = target.type, target.id
    path = "/".join(p for p in (type_, id_) if p)
    if target.operation and target.operation != "_search":
        raise BadRequest(f"GET {entry.url} is not supported inside a Bundle")
    if target.history:
        url = f"{ctx.base}/{path + '/' if path else ''}_history"
        if target.version is not None:
            assert type_ is not None and id_ is not None
            return interactions.vread(ctx, type_, id_, target.version)
        return listing.history(ctx, type_, id_, target.query, url)
    if id_ is not None:
        assert type_ is not None
        result = interactions.read(ctx, type_, id_)
        assert result.stored is not None
        if not_modified(result.stored, entry.if_none_match, entry.if_modified_since):
            return Result(304, result.stored)
        return result
    url = f"{ctx.base}/{type_}" if type_ else ctx.base
    return listing.search(ctx, type_, target.query, url)
