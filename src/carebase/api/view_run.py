"""`$viewdefinition-run`: a ViewDefinition run over inline resources or the server's data.

Access is a search's: without inline resources the rows come from the store's search of the
view's resource type under the caller's search restriction (a patient token sees its own
compartment; no scope for the type is 403), page by page, so the data is streamed and never
loaded whole. `patient`, `group` and `_since` become search criteria (the same ones Bulk
Data export uses). Each page's resources are noted on the request's guard for the audit
entry. Inline resources read nothing stored, so, like `$validate`, any scope for the view's
type allows them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from carebase.analytics.output import MEDIA_TYPES, RowEncoder
from carebase.analytics.runner import get_runner
from carebase.analytics.view_model import ViewDefinition, parse_view_definition
from carebase.api.bulk_export import compartment_criteria, group_members, searched_bodies
from carebase.api.results import Context, parse_instant
from carebase.api.view_params import RunParameters
from carebase.auth.compartment import patients_of
from carebase.errors import BadRequest, NotFound
from carebase.fhir import json_io
from carebase.fhir.bundle import ID_RE
from carebase.fhir.definitions.loader import get_definitions

VIEW_TYPE = "ViewDefinition"


@dataclass
class ViewRun:
    """A started run: the media type and the encoded output, first chunk already made (so
    errors in the view, the parameters or access surface before the response starts)."""

    media_type: str
    chunks: Iterator[bytes]


def start_run(ctx: Context, params: RunParameters, instance_id: str | None) -> ViewRun:
    """Resolve the view, check access, and produce the first chunk of output."""
    view = parse_view_definition(_view_json(ctx, params, instance_id))
    ctx.guard.query = _audit_query(view, params)
    if params.resources is not None:
        ctx.guard.validate(view.resource)
        resources: Iterable[dict[str, Any]] = _inline(view, params)
    else:
        resources = _stored(ctx, view, params)
    rows = get_runner("python").run(view, resources)
    if params.limit is not None:
        rows = itertools.islice(rows, params.limit)
    chunks = RowEncoder(view, params.fmt, header=params.header).chunks(rows)
    first = next(chunks, b"")
    return ViewRun(MEDIA_TYPES[params.fmt], itertools.chain([first], chunks))


def _view_json(ctx: Context, params: RunParameters, instance_id: str | None) -> dict[str, Any]:
    """The ViewDefinition JSON: the instance, `viewResource`, or `viewReference`."""
    if instance_id is not None:
        if params.view is not None or params.reference is not None:
            raise BadRequest(
                f"ViewDefinition/{instance_id}/$viewdefinition-run runs that view; "
                "viewResource and viewReference belong to ViewDefinition/$viewdefinition-run",
                location="viewReference" if params.reference else "viewResource",
            )
        return _read_view(ctx, instance_id, "id")
    if params.view is not None:
        if params.view.get("resourceType") != VIEW_TYPE:
            raise BadRequest(
                f"viewResource must be a ViewDefinition, not {params.view.get('resourceType')}",
                location="viewResource",
            )
        return params.view
    if params.reference is None:
        raise BadRequest(
            "Say which view to run: viewResource (inline) or viewReference", location="viewResource"
        )
    kind, _, id_ = params.reference.rpartition("/")
    if kind.endswith(VIEW_TYPE) and ID_RE.fullmatch(id_) and "://" not in kind[: -len(VIEW_TYPE)]:
        return _read_view(ctx, id_, "viewReference")
    if not kind and ID_RE.fullmatch(id_):
        return _read_view(ctx, id_, "viewReference")
    return _view_by_url(ctx, params.reference)


def _read_view(ctx: Context, id_: str, location: str) -> dict[str, Any]:
    ctx.guard.read(ctx.store, VIEW_TYPE, id_)
    stored = ctx.store.read(VIEW_TYPE, id_)
    if stored is None or stored.body is None or stored.deleted:
        raise NotFound(f"ViewDefinition/{id_} is not known", location=location)
    ctx.guard.saw(stored)
    view: dict[str, Any] = orjson.loads(stored.body)
    return view


def _view_by_url(ctx: Context, url: str) -> dict[str, Any]:
    """The stored ViewDefinition whose canonical `url` is `url` (a search: needs scope)."""
    restriction, _ = ctx.guard.search(VIEW_TYPE, [])
    page = ctx.store.search(
        VIEW_TYPE, [("url", url)], count=2, total="none", restriction=restriction
    )
    if not page.entries or page.entries[0].body is None:
        raise NotFound(f"No ViewDefinition has url {url!r}", location="viewReference")
    if len(page.entries) > 1:
        raise BadRequest(
            f"Several ViewDefinitions have url {url!r}; reference one as ViewDefinition/id",
            location="viewReference",
        )
    ctx.guard.saw(page.entries[0])
    view: dict[str, Any] = orjson.loads(page.entries[0].body)
    return view


def _inline(view: ViewDefinition, params: RunParameters) -> Iterator[dict[str, Any]]:
    """The inline resources `patient`/`group`... filters allow (groups name no one inline)."""
    if params.groups:
        raise BadRequest(
            "group filters the server's data; it cannot be used with inline resources",
            location="group",
        )
    wanted = set(params.patients)
    for i, resource in enumerate(params.resources or ()):
        if resource.get("resourceType") != view.resource:
            continue
        if wanted and not wanted & set(
            patients_of(view.resource, str(resource.get("id", "")), orjson.dumps(resource))
        ):
            continue
        if params.since is not None:
            meta = resource.get("meta")
            updated = meta.get("lastUpdated") if isinstance(meta, dict) else None
            if not isinstance(updated, str):
                continue  # no lastUpdated: not known to have changed since
            if parse_instant(updated, f"resource[{i}].meta.lastUpdated") < params.since:
                continue
        yield resource


def _stored(ctx: Context, view: ViewDefinition, params: RunParameters) -> Iterator[dict[str, Any]]:
    """The stored resources of the view's type the caller may search, filtered, streamed."""
    type_ = view.resource
    restriction, _ = ctx.guard.search(type_, [])
    patients = list(params.patients)
    for group in params.groups:
        ctx.guard.read(ctx.store, "Group", group)
        stored = ctx.store.read("Group", group)
        if stored is None or stored.body is None or stored.deleted:
            raise NotFound(f"Group/{group} is not known", location="group")
        ctx.guard.saw(stored)
        patients.extend(group_members(orjson.loads(stored.body)))
    since = []
    if params.since is not None:
        since = [("_lastUpdated", "ge" + params.since.isoformat().replace("+00:00", "Z"))]
    if params.patients or params.groups:
        if type_ != "Patient" and type_ not in get_definitions().patient_compartment:
            raise BadRequest(
                f"{type_} resources are not in the Patient compartment; patient and group "
                "cannot filter them",
                location="patient" if params.patients else "group",
            )
        if not patients:
            return  # the groups have no patient members: nothing matches
        criteria = [[*since, c] for c in compartment_criteria(type_, list(dict.fromkeys(patients)))]
    else:
        criteria = [since]
    pages = searched_bodies(ctx.store, type_, criteria, restriction, ctx.guard.saw_all)
    for bodies in pages:
        for body in bodies:
            yield json_io.loads(body)  # decimals keep their written digits (lowBoundary)


def _audit_query(view: ViewDefinition, params: RunParameters) -> str:
    """What the audit entry records as the query: the view and the filters."""
    parts = [f"view={view.name or '(unnamed)'}", f"resource={view.resource}"]
    parts += [f"patient={p}" for p in params.patients]
    parts += [f"group={g}" for g in params.groups]
    if params.since is not None:
        parts.append(f"_since={params.since.isoformat()}")
    if params.limit is not None:
        parts.append(f"_limit={params.limit}")
    if params.resources is not None:
        parts.append(f"inline-resources={len(params.resources)}")
    parts.append(f"_format={params.fmt}")
    return "&".join(parts)
