"""The parameters of a Bulk Data `$export` kick-off, checked and normalised (pure).

Parameters come from the query string (GET) or a `Parameters` resource (POST); both are
turned into (name, value) pairs first, then checked here, so each mistake gets a 400
OperationOutcome naming the parameter. What is accepted: `_outputFormat` (the NDJSON
spellings), `_since` (an instant with a time zone), `_type`, `_typeFilter` (FHIR search
queries this server can run) and, on POST at Patient and Group level, `patient`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from carebase.auth.compartment import compartment_types
from carebase.auth.principal import Principal
from carebase.errors import BadRequest
from carebase.fhir.bundle import ID_RE
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.search_sql import build_search

Level = Literal["system", "patient", "group"]
OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
#: Parameters of the Bulk Data specification this server does not implement, and why.
UNSUPPORTED = {
    "_elements": "it exports whole resources only",
    "includeAssociatedData": "it exports no associated provenance data",
    "_until": "it exports resources up to the kick-off time only",
    "organizeOutputBy": "it writes one file per resource type",
    "allowPartialManifests": "it answers with one complete manifest",
}
#: Search parameters that shape a result page, meaningless inside `_typeFilter`.
_NOT_FILTERS = frozenset(
    {"_include", "_revinclude", "_sort", "_count", "_elements", "_summary", "_total", "_contained"}
)
_PARAMETER_VALUES = ("valueString", "valueInstant", "valueCode", "valueUri", "valueDateTime")


@dataclass(slots=True)
class ExportParameters:
    """A checked `$export` request: types (None: every permitted one), `_since`, the search
    filters per type (any of them matches), and the patients asked for (None: all)."""

    level: Level
    output_format: str = OUTPUT_FORMATS[0]
    types: list[str] | None = None
    since: datetime | None = None
    type_filters: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    patients: list[str] | None = None


def parameters_body(body: object) -> list[tuple[str, str]]:
    """The (name, value) pairs of a POSTed `Parameters` resource (400 for anything else)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("POST $export takes a Parameters resource", location="Parameters")
    pairs: list[tuple[str, str]] = []
    for i, part in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise BadRequest(f"{where} needs a name", location=where)
        name = part["name"]
        reference = part.get("valueReference")
        if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
            pairs.append((name, reference["reference"]))
            continue
        values = [part[key] for key in _PARAMETER_VALUES if isinstance(part.get(key), str)]
        if len(values) != 1:
            raise BadRequest(
                f"{where} ({name}) needs one value (valueString, valueInstant, valueCode or"
                " valueReference)",
                location=f"{where}.value[x]",
            )
        pairs.append((name, values[0]))
    return pairs


def parse_export(level: Level, pairs: list[tuple[str, str]], *, posted: bool) -> ExportParameters:
    """Check the kick-off parameters; 400 naming the first one that is wrong."""
    out = ExportParameters(level)
    filters: list[str] = []
    for name, value in pairs:
        if name in UNSUPPORTED:
            raise BadRequest(
                f"The {name} parameter is not supported: {UNSUPPORTED[name]}", location=name
            )
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise BadRequest(
                    f"_outputFormat {value!r} is not supported; use one of "
                    f"{', '.join(OUTPUT_FORMATS)}",
                    location="_outputFormat",
                )
            out.output_format = value
        elif name == "_since":
            out.since = parse_since(value)
        elif name == "_type":
            out.types = (out.types or []) + [
                _known_type(level, t.strip()) for t in value.split(",")
            ]
        elif name == "_typeFilter":
            filters.append(value)  # one query each: a query's own values hold commas
        elif name == "patient":
            _patient_reference(level, value, posted, out)
        elif name in ("_format", "_pretty"):
            continue  # about the OperationOutcome of the kick-off only
        else:
            raise BadRequest(f"Unknown $export parameter {name!r}", location=name)
    if out.types is not None:
        out.types = list(dict.fromkeys(out.types))
    for text in filters:
        type_, params = parse_type_filter(text, level)
        if out.types is not None and type_ not in out.types:
            raise BadRequest(
                f"_typeFilter {text!r} is about {type_}, which _type does not list",
                location="_typeFilter",
            )
        out.type_filters.setdefault(type_, []).append(params)
    return out


def parse_since(value: str) -> datetime:
    """`_since` as an aware datetime; 400 unless it is an instant with a time zone."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or "T" not in value:
        raise BadRequest(
            f"_since {value!r} is not a FHIR instant; use e.g. 2024-01-01T00:00:00Z",
            location="_since",
        )
    return when


def parse_type_filter(text: str, level: Level) -> tuple[str, list[tuple[str, str]]]:
    """(type, search parameters) of one `_typeFilter` value such as
    `Observation?code=http://loinc.org|8867-4`; 400 when this server cannot run it."""
    type_, sep, query = text.partition("?")
    if not sep or not query:
        raise BadRequest(
            f"_typeFilter {text!r} is not a search query; use Type?param=value",
            location="_typeFilter",
        )
    _known_type(level, type_, "_typeFilter")
    try:
        params = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise BadRequest(
            f"_typeFilter {text!r} is not a valid query string", location="_typeFilter"
        ) from exc
    for name, _ in params:
        if name.split(":")[0] in _NOT_FILTERS:
            raise BadRequest(
                f"_typeFilter {text!r}: {name} shapes a result page and cannot filter an export",
                location="_typeFilter",
            )
    try:
        build_search(type_, params)  # the store's own check of every parameter and value
    except BadRequest as exc:
        raise BadRequest(f"_typeFilter {text!r}: {exc.message}", location="_typeFilter") from exc
    return type_, params


def _known_type(level: Level, type_: str, where: str = "_type") -> str:
    if type_ not in get_definitions().resource_types:
        raise BadRequest(f"{where} names {type_!r}, which is not a resource type", location=where)
    if level != "system" and type_ not in compartment_types():
        raise BadRequest(
            f"{where} names {type_}, which is not in the Patient compartment; a {level}-level"
            " export holds only patient compartment resources",
            location=where,
        )
    return type_


def _patient_reference(level: Level, value: str, posted: bool, out: ExportParameters) -> None:
    if level == "system":
        raise BadRequest(
            "The patient parameter belongs to Patient/$export and Group/[id]/$export",
            location="patient",
        )
    if not posted:
        raise BadRequest(
            "The patient parameter is accepted in a POSTed Parameters body only",
            location="patient",
        )
    kind, _, id_ = value.partition("/")
    if kind != "Patient" or ID_RE.fullmatch(id_) is None:
        raise BadRequest(
            f"patient {value!r} is not a Patient reference (Patient/[id])", location="patient"
        )
    out.patients = (out.patients or []) + [id_]


def principal_record(principal: Principal) -> dict[str, Any]:
    """What a job keeps of its requester to act with the same rights later (no token)."""
    return {
        "subject": principal.subject,
        "kind": principal.kind,
        "role": principal.role,
        "username": principal.username,
        "fhir_user": principal.fhir_user,
        "patient": principal.patient,
        "organization": principal.organization,
        "scopes": sorted(principal.scopes),
        "client_id": principal.client_id,
        "break_glass": principal.break_glass,
    }


def principal_from(record: dict[str, Any]) -> Principal:
    """The Principal `principal_record` kept."""
    return Principal(**{**record, "scopes": frozenset(record["scopes"])})


def parameters_record(params: ExportParameters) -> dict[str, Any]:
    """The checked parameters as JSON for the job row."""
    return {
        "level": params.level,
        "output_format": params.output_format,
        "types": params.types,
        "since": None if params.since is None else params.since.isoformat(),
        "type_filters": params.type_filters,
        "patients": params.patients,
    }


def parameters_from(record: dict[str, Any]) -> ExportParameters:
    """The ExportParameters `parameters_record` kept."""
    since = record.get("since")
    return ExportParameters(
        level=record["level"],
        output_format=record["output_format"],
        types=record.get("types"),
        since=None if since is None else datetime.fromisoformat(since),
        type_filters={
            t: [[(n, v) for n, v in params] for params in sets]
            for t, sets in (record.get("type_filters") or {}).items()
        },
        patients=record.get("patients"),
    )
