"""Every FHIR REST interaction, implemented once for the HTTP routes and Bundle entries.

Writes take an open store `Transaction` (the caller decides its scope: one request, or a
whole transaction Bundle); reads take the `Context`. Nothing here knows about HTTP; results
come back as `Result`s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from carebase.api.results import Context, Result, parse_etag
from carebase.errors import (
    BadRequest,
    Gone,
    InvalidResource,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from carebase.fhir import json_io, operation_outcome
from carebase.fhir.bundle import is_valid_id
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import StoredResource, Transaction

#: Query parameters that steer the response, never part of search or conditional criteria.
CONTROL_PARAMS = frozenset({"_format", "_pretty", "_summary", "_elements", "_cursor"})

Resource = dict[str, Any]


def require_type(type_: str) -> str:
    """`type_` if it is a concrete R4 resource type, else 404 naming it."""
    if type_ not in get_definitions().resource_types:
        raise NotFound(
            f"Unknown resource type '{type_}'; see [base]/metadata for the supported types",
            location="type",
        )
    return type_


def require_id(id_: str, where: str = "id") -> str:
    """`id_` if it is a valid FHIR id, else 400."""
    if not is_valid_id(id_):
        raise BadRequest(
            f"Invalid resource id {id_!r}: ids are 1-64 of A-Z a-z 0-9 - .", location=where
        )
    return id_


def check(resource: Resource, type_: str) -> None:
    """Validate a resource about to be written (raises InvalidResource with every issue)."""
    from carebase.fhir.validation import check_resource

    check_resource(resource, expected_type=type_)
    if type_ == "ViewDefinition":  # what the structure cannot say: FHIRPath, column names...
        from carebase.analytics.view_model import parse_view_definition

        parse_view_definition(resource)


def check_body_id(type_: str, id_: str, resource: Resource) -> None:
    """An update's body must carry the URL's id (400 when missing or different)."""
    require_id(id_)
    body_id = resource.get("id")
    if body_id is None:
        raise BadRequest(
            f"The resource has no id; an update must carry id '{id_}' matching the URL",
            location=f"{type_}.id",
        )
    if body_id != id_:
        raise BadRequest(
            f"The id in the body ({body_id!r}) does not match the id in the URL ({id_!r})",
            location=f"{type_}.id",
        )


def criteria(query: str | list[tuple[str, str]], what: str) -> list[tuple[str, str]]:
    """Search criteria of a conditional interaction; 400 when there are none."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query
    pairs = [(k, v) for k, v in pairs if k not in CONTROL_PARAMS]
    if not pairs:
        raise BadRequest(f"{what} needs search criteria (e.g. identifier=system|value)")
    return pairs


def match_one(
    ctx: Context, tx: Transaction, type_: str, params: list[tuple[str, str]], what: str
) -> str | None:
    """The id of the single match of a conditional interaction among the resources the
    caller may search (None for no match; 412 for more than one)."""
    restriction = ctx.guard.conditional(type_)
    ids = tx.search_ids(type_, params, limit=2, restriction=restriction)
    if len(ids) > 1:
        raise PreconditionFailed(
            f"{what}: the criteria match more than one {type_}; make them more selective"
        )
    return ids[0] if ids else None


def _created(ctx: Context, stored: StoredResource, status: int) -> Result:
    msg = f"{'Created' if status == 201 else 'Updated'} {stored.type}/{stored.id}"
    return Result(
        status,
        stored,
        location=ctx.url_of(stored, versioned=True),
        outcome=operation_outcome.information(f"{msg} (version {stored.version})"),
        preferable=True,
    )


# --- writes -----------------------------------------------------------------------------------


def create(
    ctx: Context,
    tx: Transaction,
    type_: str,
    resource: Resource,
    *,
    if_none_exist: str | None = None,
    id_: str | None = None,
    validate: bool = True,
) -> Result:
    """Create (POST); conditional create when `if_none_exist` holds search criteria."""
    require_type(type_)
    ctx.guard.require_write(type_, "c")
    if validate:
        check(resource, type_)
    if if_none_exist is not None:
        params = criteria(if_none_exist, "If-None-Exist")
        tx.lock(f"{type_}?{sorted(params)}")
        found = match_one(ctx, tx, type_, params, "If-None-Exist")
        if found is not None:
            existing = tx.read(type_, found)
            assert existing is not None
            return Result(
                200,
                existing,
                location=ctx.url_of(existing, versioned=True),
                outcome=operation_outcome.information(
                    f"If-None-Exist matched {type_}/{found}; nothing was created"
                ),
                preferable=True,
            )
    resource.pop("id", None)  # the server assigns ids on create (R4 http.html#create)
    stored = tx.create(type_, resource, id_)
    ctx.guard.after_write(tx, stored, "c")
    return _created(ctx, stored, 201)


def update(
    ctx: Context,
    tx: Transaction,
    type_: str,
    id_: str,
    resource: Resource,
    *,
    if_match: str | None = None,
    if_none_match: str | None = None,
    validate: bool = True,
) -> Result:
    """Update (PUT Type/id), creating the resource with the client's id when it is new."""
    require_type(type_)
    check_body_id(type_, id_, resource)
    if validate:
        check(resource, type_)
    ctx.guard.before_change(tx, type_, id_, "u")
    version = parse_etag(if_match) if if_match else None
    if if_none_match:
        current = tx.read(type_, id_)
        if current is not None and not current.deleted:
            value = if_none_match.strip()
            if value == "*" or parse_etag(value, "If-None-Match") == current.version:
                raise PreconditionFailed(
                    f"{type_}/{id_} already exists (If-None-Match: {value})",
                    location="If-None-Match",
                )
    stored, created = tx.update(type_, id_, resource, if_match=version)
    ctx.guard.after_write(tx, stored, "u")
    return _created(ctx, stored, 201 if created else 200)


def conditional_update(
    ctx: Context,
    tx: Transaction,
    type_: str,
    query: str | list[tuple[str, str]],
    resource: Resource,
    *,
    if_match: str | None = None,
    validate: bool = True,
) -> Result:
    """PUT Type?criteria: 0 matches create, 1 updates it, more than one is 412."""
    require_type(type_)
    params = criteria(query, "Conditional update")
    tx.lock(f"{type_}?{sorted(params)}")
    found = match_one(ctx, tx, type_, params, "Conditional update")
    body_id = resource.get("id")
    if found is None:
        if body_id is None:
            return create(ctx, tx, type_, resource, validate=validate)
        if not isinstance(body_id, str):
            raise BadRequest("Resource id must be a string", location=f"{type_}.id")
        return update(ctx, tx, type_, body_id, resource, if_match=if_match, validate=validate)
    if body_id is not None and body_id != found:
        raise BadRequest(
            f"The id in the body ({body_id!r}) differs from the matching resource {type_}/{found}",
            location=f"{type_}.id",
        )
    resource["id"] = found
    return update(ctx, tx, type_, found, resource, if_match=if_match, validate=validate)


def delete(
    ctx: Context, tx: Transaction, type_: str, id_: str, *, if_match: str | None = None
) -> Result:
    """Delete Type/id; deleting something absent or already deleted succeeds too."""
    require_type(type_)
    require_id(id_)
    ctx.guard.before_change(tx, type_, id_, "d")
    version = parse_etag(if_match) if if_match else None
    stored = tx.delete(type_, id_, if_match=version)
    message = f"Deleted {type_}/{id_}" if stored else f"{type_}/{id_} was already absent"
    result = Result(200, outcome=operation_outcome.information(message))
    if stored is not None:
        result.headers["ETag"] = stored.etag
    return result


def conditional_delete(
    ctx: Context, tx: Transaction, type_: str, query: str | list[tuple[str, str]]
) -> Result:
    """DELETE Type?criteria: deletes the single match (none is fine; several is 412)."""
    require_type(type_)
    found = match_one(ctx, tx, type_, criteria(query, "Conditional delete"), "Conditional delete")
    if found is None:
        message = "No resource matched; nothing deleted"
        return Result(200, outcome=operation_outcome.information(message))
    return delete(ctx, tx, type_, found)


def patch(
    ctx: Context,
    tx: Transaction,
    type_: str,
    id_: str,
    body: object,
    kind: str,
    *,
    if_match: str | None = None,
) -> Result:
    """PATCH Type/id with a JSON Patch array (`kind` json-patch) or FHIRPath Patch Parameters."""
    from carebase.fhir.patch import apply_fhirpath_patch, apply_json_patch

    require_type(type_)
    require_id(id_)
    ctx.guard.before_change(tx, type_, id_, "u", missing_is_404=True)
    current = tx.read(type_, id_)
    if current is None:
        raise NotFound(f"{type_}/{id_} does not exist")
    if current.deleted or current.body is None:
        raise Gone(f"{type_}/{id_} was deleted")
    if if_match and parse_etag(if_match) != current.version:
        raise PreconditionFailed(
            f"If-Match asked for version {parse_etag(if_match)} of {type_}/{id_} but the "
            f"server has version {current.version}; read it again and retry",
            location="If-Match",
        )
    resource: Resource = json_io.loads(current.body)
    if kind == "json-patch":
        patched = apply_json_patch(resource, body)
    else:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise BadRequest(
                "A FHIRPath Patch body must be a Parameters resource; send JSON Patch as "
                "application/json-patch+json"
            )
        patched = apply_fhirpath_patch(resource, body)
    try:
        check(patched, type_)
    except InvalidResource as exc:  # the patch document was fine; its result is not (422)
        raise Unprocessable(issues=exc.issues) from exc
    stored, _ = tx.update(type_, id_, patched, if_match=current.version)
    ctx.guard.after_write(tx, stored, "u")
    return _created(ctx, stored, 200)


def conditional_patch(
    ctx: Context,
    tx: Transaction,
    type_: str,
    query: str | list[tuple[str, str]],
    body: object,
    kind: str,
    *,
    if_match: str | None = None,
) -> Result:
    """PATCH Type?criteria: patches the single match (none is 404, several 412)."""
    require_type(type_)
    found = match_one(ctx, tx, type_, criteria(query, "Conditional patch"), "Conditional patch")
    if found is None:
        raise NotFound(f"Conditional patch: no {type_} matches the criteria")
    return patch(ctx, tx, type_, found, body, kind, if_match=if_match)


# --- reads ------------------------------------------------------------------------------------


def read_stored(
    ctx: Context, type_: str, id_: str, reader: Callable[[str, str], StoredResource | None]
) -> StoredResource:
    """The current version of Type/id (404 unknown or not the caller's, 410 deleted)."""
    require_type(type_)
    require_id(id_)
    ctx.guard.read(ctx.store, type_, id_)
    stored = reader(type_, id_)
    if stored is None:
        raise NotFound(f"{type_}/{id_} is not known", location=f"{type_}/{id_}")
    if stored.deleted:
        raise Gone(
            f"{type_}/{id_} was deleted (version {stored.version})",
            headers={"ETag": stored.etag},
        )
    return stored


def read(ctx: Context, type_: str, id_: str) -> Result:
    """Read Type/id."""
    stored = read_stored(ctx, type_, id_, ctx.store.read)
    ctx.guard.saw(stored)
    return Result(200, stored)


def vread(ctx: Context, type_: str, id_: str, vid: str) -> Result:
    """Read one version, Type/id/_history/vid (410 when that version is a deletion)."""
    require_type(type_)
    require_id(id_)
    if not (vid.isascii() and vid.isdigit()):  # str.isdigit() alone accepts '²'
        raise BadRequest(f"Version id {vid!r} must be a positive number", location="vid")
    ctx.guard.read(ctx.store, type_, id_)
    digits = vid.lstrip("0") or "0"
    # no version is beyond the 64-bit range the databases store and bind (and int() refuses
    # over 4,300 digits)
    stored = ctx.store.vread(type_, id_, int(digits)) if len(digits) <= 18 else None
    if stored is None:
        known = ctx.store.read(type_, id_) is not None
        what = f"version {vid} of {type_}/{id_}" if known else f"{type_}/{id_}"
        raise NotFound(f"{what} is not known")
    if stored.deleted:
        raise Gone(f"Version {vid} of {type_}/{id_} is a deletion", headers={"ETag": stored.etag})
    ctx.guard.saw(stored)
    return Result(200, stored)


def validate(
    ctx: Context, type_: str, id_: str | None, body: Resource, params: list[tuple[str, str]]
) -> Result:
    """$validate: 200 with an OperationOutcome listing every issue (or "All OK")."""
    from carebase.fhir.validation import validate_resource

    require_type(type_)
    ctx.guard.validate(type_)
    if id_ is not None:
        require_id(id_)
    mode = dict(params).get("mode")
    resource: object = body
    if body.get("resourceType") == "Parameters" and type_ != "Parameters":
        resource, mode = _validate_parameters(body, mode)
    if mode == "delete":
        if id_ is None:
            raise BadRequest("$validate mode=delete needs a resource id in the URL")
        read_stored(ctx, type_, id_, ctx.store.read)
        return Result(200, body=operation_outcome.outcome([]))
    if not isinstance(resource, dict):
        raise BadRequest("$validate needs a resource to validate", location="Parameters.resource")
    issues = list(validate_resource(resource, expected_type=type_))
    if mode == "update" and id_ is not None and resource.get("id") != id_:
        issues.append(
            InvalidResource(
                f"The id in the resource ({resource.get('id')!r}) does not match {id_!r}",
                location=f"{type_}.id",
            ).issues[0]
        )
    return Result(200, body=operation_outcome.outcome(issues))


def _validate_parameters(body: Resource, mode: str | None) -> tuple[object, str | None]:
    resource: object = None
    params = body.get("parameter") or []
    if not isinstance(params, list):
        raise BadRequest("Parameters.parameter must be an array", location="Parameters.parameter")
    for param in params:
        if not isinstance(param, dict):
            continue
        if param.get("name") == "resource":
            resource = param.get("resource")
        elif param.get("name") == "mode":
            mode = param.get("valueCode") or param.get("valueString") or mode
    return resource, mode
