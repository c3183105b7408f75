"""The FHIR route table: paths, methods, handler names and the capabilities each provides.

The routes (`routes.FhirApi`) and the CapabilityStatement (`fhir.capability`) are both built
from this one table, so /metadata says exactly what the server serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.convertors import StringConvertor, register_url_convertor

from carebase import __version__
from carebase.api.negotiation import render
from carebase.fhir.capability import capability_statement
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.search_sql import is_supported


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One FHIR route: path, methods, handler name and the capability tokens it provides."""

    path: str
    methods: tuple[str, ...]
    handler: str
    capabilities: tuple[str, ...] = ()


class _TypeSegment(StringConvertor):
    """A path segment that can be the type of a resource these routes serve: not `metadata`,
    not `_x`/`$x`/`.x` (`.well-known`), not AuditEvent (served from the audit log by
    `audit_routes`). So the app puts these routes first - reads are the hot path - and the
    routes for those after them."""

    regex = r"(?!metadata(?:/|$))(?!AuditEvent(?:/|$))(?![_$.])[^/]+"


class _AnyTypeSegment(StringConvertor):
    """Any resource type, AuditEvent included: where these routes serve it too (compartment
    searches, `$validate`)."""

    regex = r"(?![_$.])[^/]+"


class _IdSegment(StringConvertor):
    """A path segment that can be an id: not `_history`/`_search`/`$op` (ids have no `_`/`$`
    at the start, so read routes can come first without shadowing the others)."""

    regex = r"(?![_$])[^/]+"


register_url_convertor("fhir_type", _TypeSegment())
register_url_convertor("fhir_any_type", _AnyTypeSegment())
register_url_convertor("fhir_id", _IdSegment())

#: The route table. Instance routes come first: read-by-id is the hot path, and Starlette
#: tries routes in order; the segment convertors keep them from shadowing the rest.
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("/{type:fhir_type}/{id:fhir_id}", ("GET",), "read", ("read", "conditional-read")),
    RouteSpec("/{type:fhir_type}/{id:fhir_id}", ("PUT",), "update", ("update",)),
    RouteSpec("/{type:fhir_type}/{id:fhir_id}", ("DELETE",), "delete", ("delete",)),
    RouteSpec("/{type:fhir_type}/{id:fhir_id}", ("PATCH",), "patch", ("patch",)),
    RouteSpec("/{type:fhir_type}", ("GET",), "search", ("search-type",)),
    RouteSpec("/{type:fhir_type}", ("POST",), "create", ("create", "conditional-create")),
    RouteSpec("/{type:fhir_type}", ("PUT",), "conditional_update", ("conditional-update",)),
    RouteSpec("/{type:fhir_type}", ("DELETE",), "conditional_delete", ("conditional-delete",)),
    RouteSpec("/{type:fhir_type}", ("PATCH",), "conditional_patch", ("conditional-patch",)),
    RouteSpec("/metadata", ("GET",), "metadata"),
    RouteSpec("", ("GET",), "search_system", ("search-system",)),
    RouteSpec("", ("POST",), "bundle", ("transaction", "batch")),
    RouteSpec("/_history", ("GET",), "history", ("history-system",)),
    RouteSpec("/{type:fhir_type}/_history", ("GET",), "history", ("history-type",)),
    RouteSpec("/{type:fhir_type}/_search", ("POST",), "search_post", ("search-type",)),
    RouteSpec("/_search", ("POST",), "search_system_post", ("search-system",)),
    RouteSpec(
        "/{compartment:fhir_type}/{cid:fhir_id}/{type:fhir_any_type}",
        ("GET",),
        "search_compartment",
        ("search-compartment",),
    ),
    RouteSpec(
        "/{compartment:fhir_type}/{cid:fhir_id}/{type:fhir_any_type}/_search",
        ("POST",),
        "search_compartment_post",
        ("search-compartment",),
    ),
    RouteSpec("/{type:fhir_any_type}/$validate", ("POST",), "validate", ("op:validate",)),
    RouteSpec("/{type:fhir_type}/{id}/_history/{vid}", ("GET",), "vread", ("vread",)),
    RouteSpec("/{type:fhir_type}/{id}/_history", ("GET",), "history", ("history-instance",)),
    RouteSpec("/{type:fhir_any_type}/{id}/$validate", ("POST",), "validate", ("op:validate",)),
    # SQL on FHIR: system level (the spec's R4 form), type and instance level
    RouteSpec("/$viewdefinition-run", ("GET", "POST"), "view_run", ("op:viewdefinition-run",)),
    RouteSpec(
        "/ViewDefinition/$viewdefinition-run",
        ("GET", "POST"),
        "view_run",
        ("op:viewdefinition-run",),
    ),
    RouteSpec(
        "/ViewDefinition/{id:fhir_id}/$viewdefinition-run",
        ("GET", "POST"),
        "view_run",
        ("op:viewdefinition-run",),
    ),
)


#: What the Bulk Data routes (`api.bulk_routes`, mounted by the app) provide.
BULK_CAPABILITIES = ("op:export", "op:import")


def capability_tokens() -> set[str]:
    """Every capability token the route table and the Bulk Data routes provide."""
    return {token for spec in ROUTES for token in spec.capabilities} | set(BULK_CAPABILITIES)


def capability_bytes(base: str) -> bytes:
    """The CapabilityStatement for this route table, serialised."""
    statement = capability_statement(
        get_definitions(),
        capability_tokens(),
        base_url=base,
        software_version=__version__,
        searchable=is_supported,
    )
    return render(statement)
