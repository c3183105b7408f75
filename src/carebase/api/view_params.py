"""`$viewdefinition-run` parameters from the URL query and a Parameters body, checked.

Parameters (SQL on FHIR v2): `viewResource` (inline ViewDefinition, body only),
`viewReference` (`ViewDefinition/id`, an id, or a canonical URL), `resource` (inline
resources to run over, body only), `patient` and `group` (references or ids, repeatable),
`_since` (instant), `_limit` (positive integer), `_format` (json, ndjson, csv, parquet; else
the Accept header; default ndjson) and `header` (CSV header row, default true). Any other
name is refused with 400 naming it, so a typo never silently widens a result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from carebase.analytics.output import parse_format
from carebase.api.results import parse_instant
from carebase.errors import BadRequest
from carebase.fhir.bundle import ID_RE

#: the format when neither `_format` nor a known Accept media type asks for one
DEFAULT_FORMAT = "ndjson"
_SCALARS = ("viewReference", "_since", "_limit", "_format", "header")
_LISTS = ("patient", "group")
_BODY_ONLY = ("viewResource", "resource")
#: query parameters of every FHIR request that do not change the result
_IGNORED = ("_pretty",)


@dataclass
class RunParameters:
    """One `$viewdefinition-run` request, checked."""

    view: dict[str, Any] | None = None
    reference: str | None = None
    resources: list[dict[str, Any]] | None = None
    patients: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    since: datetime | None = None
    limit: int | None = None
    fmt: str = DEFAULT_FORMAT
    header: bool = True


def run_parameters(
    query: list[tuple[str, str]], body: object | None, accept: str | None
) -> RunParameters:
    """The parameters of the query string and (POST) a Parameters resource."""
    values: dict[str, list[object]] = {}
    for name, value in query:
        if name in _BODY_ONLY:
            raise BadRequest(
                f"{name} takes a resource: POST it in a Parameters body", location=name
            )
        if name not in _IGNORED:
            values.setdefault(_known(name), []).append(value)
    if body is not None:
        for key, item in _body_parameters(body):
            values.setdefault(_known(key), []).append(item)
    out = RunParameters()
    for name in _SCALARS:
        if len(values.get(name, [])) > 1:
            raise BadRequest(f"{name} may be given once", location=name)
    if "viewResource" in values:
        if len(values["viewResource"]) > 1:
            raise BadRequest("viewResource may be given once", location="viewResource")
        out.view = _resource(values["viewResource"][0], "viewResource")
    if "viewReference" in values:
        out.reference = _text(values["viewReference"][0], "viewReference")
    if out.view is not None and out.reference is not None:
        raise BadRequest(
            "Give either viewResource or viewReference, not both", location="viewReference"
        )
    if "resource" in values:
        out.resources = [_resource(v, "resource") for v in values["resource"]]
    out.patients = [_target(v, "patient", "Patient") for v in values.get("patient", [])]
    out.groups = [_target(v, "group", "Group") for v in values.get("group", [])]
    if "_since" in values:
        out.since = parse_instant(_text(values["_since"][0], "_since"), "_since")
    if "_limit" in values:
        out.limit = _limit(values["_limit"][0])
    if "header" in values:
        out.header = _boolean(values["header"][0], "header")
    if "_format" in values:
        out.fmt = parse_format(_text(values["_format"][0], "_format"), "_format")
    else:
        out.fmt = _from_accept(accept)
    return out


def _known(name: str) -> str:
    if name in _SCALARS or name in _LISTS or name in _BODY_ONLY:
        return name
    raise BadRequest(
        f"Unknown $viewdefinition-run parameter {name!r}; known: "
        f"{', '.join((*_BODY_ONLY, *_SCALARS, *_LISTS))}",
        location=name,
    )


def _body_parameters(body: object) -> list[tuple[str, object]]:
    """(name, value) of each `Parameters.parameter`: its `resource`, else its value[x]."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest(
            "POST $viewdefinition-run takes a Parameters resource", location="Parameters"
        )
    entries = body.get("parameter", [])
    if not isinstance(entries, list):
        raise BadRequest("Parameters.parameter must be an array", location="Parameters.parameter")
    out: list[tuple[str, object]] = []
    for i, entry in enumerate(entries):
        where = f"Parameters.parameter[{i}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise BadRequest(f"{where} has no name", location=f"{where}.name")
        assert isinstance(entry, dict)
        value = entry.get("resource")
        if value is None:
            keys = [k for k in entry if k.startswith("value")]
            if len(keys) != 1:
                raise BadRequest(
                    f"{where} ({name}) needs one value[x] or a resource", location=name
                )
            value = entry[keys[0]]
            if isinstance(value, dict) and keys[0] == "valueReference":
                value = value.get("reference")
        out.append((name, value))
    return out


def _resource(value: object, name: str) -> dict[str, Any]:
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return value
    raise BadRequest(
        f"{name} must be a FHIR resource (a JSON object with resourceType)", location=name
    )


def _text(value: object, name: str) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise BadRequest(f"{name} must be a non-empty string, got {value!r}", location=name)


def _target(value: object, name: str, type_: str) -> str:
    """The id of `Type/id`, an absolute URL ending in it, or a bare id."""
    text = _text(value, name)
    kind, _, id_ = text.rpartition("/")
    if kind and not kind.endswith(type_):
        raise BadRequest(f"{name}={text!r} must reference a {type_}", location=name)
    if ID_RE.fullmatch(id_) is None:
        raise BadRequest(f"{name}={text!r} is not a {type_} reference or id", location=name)
    return id_


def _limit(value: object) -> int:
    text = str(value).strip() if isinstance(value, int | str) else ""
    if not (text.isascii() and text.isdigit()) or int(text) < 1 or len(text) > 9:
        raise BadRequest(f"_limit={value!r} must be a positive integer", location="_limit")
    return int(text)


def _boolean(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"{name}={value!r} must be true or false", location=name)


def _from_accept(accept: str | None) -> str:
    """The first media type of Accept that names an output format, else the default."""
    for part in (accept or "").split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in ("", "*/*", "application/fhir+json"):
            continue
        try:
            return parse_format(kind, "Accept")
        except BadRequest:
            continue
    return DEFAULT_FORMAT
